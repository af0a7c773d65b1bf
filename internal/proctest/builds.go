package proctest

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// When the services run as root (CI does), the local executor runs every
// build under a user of its own, which must reach the data directory's
// run/ and, for the tests' traces, files outside its build; Go creates a
// test's temporary directory 0700.

// reachableByBuilds makes dir and the directories above it, up to the
// system's temporary directory, searchable by other users (o+x): not
// listable, not writable.
func reachableByBuilds(tb testing.TB, dir string) {
	tb.Helper()
	top := filepath.Clean(os.TempDir())
	for p := filepath.Clean(dir); p != top && strings.HasPrefix(p, top+string(filepath.Separator)); p = filepath.Dir(p) {
		info, err := os.Stat(p)
		if err != nil {
			tb.Fatalf("make %s reachable by builds: %v", p, err)
		}
		if info.Mode().Perm()&0o001 == 0 {
			if err := os.Chmod(p, info.Mode().Perm()|0o001); err != nil {
				tb.Fatalf("make %s reachable by builds: %v", p, err)
			}
		}
	}
}

// BuildWritable creates the file path, in one of tb's temporary
// directories, for build scripts of any user to append to (a trace, a
// probe's output), and makes the way to it searchable.
func BuildWritable(tb testing.TB, path string) {
	tb.Helper()
	reachableByBuilds(tb, filepath.Dir(path))
	if err := os.WriteFile(path, nil, 0o666); err != nil {
		tb.Fatal(err)
	}
	if err := os.Chmod(path, 0o666); err != nil { // whatever the umask
		tb.Fatal(err)
	}
}
