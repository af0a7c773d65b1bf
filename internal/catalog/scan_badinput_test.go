//go:build unix

package catalog_test

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/decap-ci/decap/internal/build"
	"github.com/decap-ci/decap/internal/catalog"
)

// mkfifo creates a named pipe: opening it for reading blocks until a
// writer comes, so a scan that opened one would hang.
func mkfifo(t *testing.T, name string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(name), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(name, 0o644); err != nil {
		t.Skipf("cannot create a FIFO here: %v", err)
	}
}

// refreshWithin refreshes c, failing the test instead of hanging when the
// refresh does not return in time (a scan that opened a FIFO).
func refreshWithin(t *testing.T, c *catalog.Catalog, d time.Duration) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- c.Refresh(t.Context()) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Refresh: %v", err)
		}
	case <-time.After(d):
		t.Fatalf("Refresh did not return within %s: the scan is stuck on hostile content", d)
	}
}

// TestHostileDirectoryContent scans a build-scripts directory full of
// hostile content (invariant 5): project directories with hostile names,
// a project.json that is a directory, a FIFO, 10 MiB or binary garbage,
// symbolic link loops. The scan returns, each bad project is listed with
// its error or skipped with a reason, and the good projects load, look up
// and export as if nothing else were there.
func TestHostileDirectoryContent(t *testing.T) {
	t.Parallel()
	root := filepath.Join(t.TempDir(), "repo")
	// Binary garbage, the same on every run, that starts like no JSON value.
	garbage := make([]byte, 4096)
	rand.NewChaCha8([32]byte{'d', 'e', 'c', 'a', 'p'}).Read(garbage)
	garbage[0] = 0xfe
	big := bytes.Repeat([]byte("x"), 10<<20)
	bigJSON := append(append([]byte(`{"buildImage": "x", "repoDescription": "`), big...), `"}`...)

	writeFiles(t, root, map[string]string{
		"good/ok/project.json":                          validJSON,
		"good/ok/build.sh":                              script,
		"good/also/project.json":                        `{"buildImage": "golang:1.26", "managedRefRegex": "main|release/.+"}`,
		"good/also/build.sh":                            script,
		"good/also/big-asset.bin":                       string(big), // large files elsewhere are fine
		"good/also/garbage.bin":                         string(garbage),
		"other/fine/project.json":                       validJSON,
		"other/fine/build.sh":                           script,
		"bad/json-dir/build.sh":                         script,
		"bad/json-dir/project.json/nested/project.json": validJSON,
		"bad/json-huge/project.json":                    string(bigJSON),
		"bad/json-huge/build.sh":                        script,
		"bad/json-garbage/project.json":                 string(garbage),
		"bad/json-garbage/build.sh":                     script,
		"bad/json-elf/project.json":                     "\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00",
		"bad/json-elf/build.sh":                         script,
		"bad/json-utf16/project.json":                   "\xff\xfe{\x00\"\x00b\x00\"\x00}\x00",
		"bad/json-utf16/build.sh":                       script,
		"bad/json-empty/project.json":                   "",
		"bad/json-empty/build.sh":                       script,
		"bad/json-nul/project.json":                     strings.Repeat("\x00", 1024),
		"bad/json-nul/build.sh":                         script,
		"bad/json-nested/project.json":                  `{"buildImage": "x", "repoDescription": ` + strings.Repeat("[", 30_000) + strings.Repeat("]", 30_000) + `}`,
		"bad/json-nested/build.sh":                      script,
		"bad/json-fifo/build.sh":                        script,
		"bad/script-fifo/project.json":                  validJSON,
		"bad/json-loop/build.sh":                        script,
		"bad/json-chain-loop/build.sh":                  script,
		"bad/json-dev-zero/build.sh":                    script,
		"bad/json-proc/build.sh":                        script,
		"good/with-fifo/project.json":                   validJSON,
		"good/with-fifo/build.sh":                       script,
		"good/with-loops/project.json":                  validJSON,
		"good/with-loops/build.sh":                      script,

		// Hostile project and team directory names: skipped and reported.
		"good/a\nb/project.json":                  validJSON,
		"good/a\x1b[2Jb/project.json":             validJSON,
		"good/$(touch pwned)/project.json":        validJSON,
		"good/`id`/project.json":                  validJSON,
		"good/a;rm -rf ~/project.json":            validJSON,
		"good/%2e%2e/project.json":                validJSON,
		"good/-rf/project.json":                   validJSON,
		"good/\xc0\xae\xc0\xae/project.json":      validJSON,
		"good/\u202eexe.txt/project.json":         validJSON,
		"good/he\u0301llo/project.json":           validJSON,
		"good/" + strings.Repeat("p", 255) + "/x": "",
		"$(reboot)/proj/project.json":             validJSON,
		"team\nwith newline/proj/project.json":    validJSON,
		"...hidden-dots/proj/project.json":        validJSON,
		"good/...hidden-dots/project.json":        validJSON,
	})
	mkfifo(t, filepath.Join(root, "bad/json-fifo/project.json"))
	mkfifo(t, filepath.Join(root, "bad/script-fifo/build.sh"))
	mkfifo(t, filepath.Join(root, "good/with-fifo/pipe"))
	mkfifo(t, filepath.Join(root, "good/fifo-project"))
	mkfifo(t, filepath.Join(root, "fifo-team"))
	symlink(t, "project.json", filepath.Join(root, "bad/json-loop/project.json"))
	symlink(t, "b.json", filepath.Join(root, "bad/json-chain-loop/project.json"))
	symlink(t, "c.json", filepath.Join(root, "bad/json-chain-loop/b.json"))
	symlink(t, "project.json", filepath.Join(root, "bad/json-chain-loop/c.json"))
	symlink(t, "/dev/zero", filepath.Join(root, "bad/json-dev-zero/project.json"))
	symlink(t, "/proc/self/environ", filepath.Join(root, "bad/json-proc/project.json"))
	symlink(t, "loop-b", filepath.Join(root, "bad/dir-loop-a"))
	symlink(t, "loop-a", filepath.Join(root, "bad/dir-loop-b"))
	symlink(t, "self-loop", filepath.Join(root, "bad/self-loop"))
	symlink(t, "team-loop", filepath.Join(root, "team-loop"))
	symlink(t, ".", filepath.Join(root, "good/with-loops/dot"))
	symlink(t, "..", filepath.Join(root, "good/with-loops/up"))
	symlink(t, "../../..", filepath.Join(root, "good/with-loops/root"))
	symlink(t, "x1", filepath.Join(root, "good/with-loops/x2"))
	symlink(t, "x2", filepath.Join(root, "good/with-loops/x1"))
	symlink(t, "lib", filepath.Join(root, "good/with-loops/lib/lib"))

	c := newCatalog(t, catalog.Config{Source: root})
	refreshWithin(t, c, 30*time.Second)
	first := c.Commit()

	wantErr := map[string]string{
		"bad/json-dir":        "project.json is not a regular file",
		"bad/json-huge":       fmt.Sprintf("is %d bytes, more than %d", len(bigJSON), build.MaxDescriptorSize),
		"bad/json-garbage":    "project.json: line 1, column 1: invalid character",
		"bad/json-elf":        "project.json: line 1, column 1: invalid character",
		"bad/json-utf16":      "project.json: line 1, column 1: invalid character",
		"bad/json-empty":      "project.json: line 1, column 1: unexpected end of JSON input",
		"bad/json-nul":        "project.json: line 1, column 1: invalid character",
		"bad/json-nested":     "exceeded max depth",
		"bad/json-fifo":       "project.json is not a regular file",
		"bad/script-fifo":     "build.sh is not a regular file",
		"bad/json-loop":       "project.json is a symbolic link that leaves the repository or leads nowhere",
		"bad/json-chain-loop": "project.json is a symbolic link that leaves the repository or leads nowhere",
		"bad/json-dev-zero":   "project.json is a symbolic link that leaves the repository or leads nowhere",
		"bad/json-proc":       "project.json is a symbolic link that leaves the repository or leads nowhere",
		"bad/dir-loop-a":      "project directory is a symbolic link that leaves the repository or leads nowhere",
		"bad/dir-loop-b":      "project directory is a symbolic link that leaves the repository or leads nowhere",
		"bad/self-loop":       "project directory is a symbolic link that leaves the repository or leads nowhere",
		"good/ok":             "",
		"good/also":           "",
		"good/with-fifo":      "",
		"good/with-loops":     "",
		"other/fine":          "",
	}
	var keys, wantKeys []string
	for _, p := range c.Projects() {
		keys = append(keys, p.Key())
		want, listed := wantErr[p.Key()]
		switch {
		case !listed:
		case want == "" && (p.Error != "" || p.Descriptor == nil):
			t.Errorf("%s: error %q, want buildable", p.Key(), p.Error)
		case want != "" && (!strings.Contains(p.Error, want) || p.Descriptor != nil):
			t.Errorf("%s: error %q, want it to contain %q and no descriptor", p.Key(), p.Error, want)
		}
		if len(p.Error) > 1000 {
			t.Errorf("%s: error is %d bytes long, want it short: %.200q…", p.Key(), len(p.Error), p.Error)
		}
	}
	for k := range wantErr {
		wantKeys = append(wantKeys, k)
	}
	slices.Sort(wantKeys)
	if !reflect.DeepEqual(keys, wantKeys) {
		t.Errorf("project keys:\n got %q\nwant %q", keys, wantKeys)
	}
	if got, want := c.Teams(), []string{"bad", "good", "other"}; !reflect.DeepEqual(got, want) {
		t.Errorf("Teams() = %q, want %q", got, want)
	}

	// Hostile names are skipped with a reason, quoted: one line each, no
	// raw control characters, short.
	skipped := c.Snapshot().Skipped()
	for _, want := range []string{`"good/a\nb"`, `"good/a\x1b[2Jb"`, `"good/$(touch pwned)"`, "\"good/`id`\"",
		`"good/a;rm -rf ~"`, `"good/%2e%2e"`, `"good/-rf"`, `"good/\xc0\xae\xc0\xae"`, `"good/\u202eexe.txt"`,
		"\"good/he\u0301llo\"", `"good/ppppp`, `"$(reboot)"`, `"team\nwith newline"`, `"team-loop"`} {
		found := false
		for _, s := range skipped {
			found = found || strings.HasPrefix(s, want)
		}
		if !found {
			t.Errorf("Skipped() = %q, want an entry starting with %s", skipped, want)
		}
	}
	for _, s := range skipped {
		if strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f }) || len(s) > 200 {
			t.Errorf("skipped entry %q has control characters or is too long", s)
		}
	}

	// The good projects work as if nothing else were there.
	d, commit, err := c.Lookup("good", "also")
	if err != nil || commit != first || !d.Manages("release/1") || d.Manages("feature") {
		t.Errorf("Lookup(good, also) = %+v, %q, %v; want the descriptor at commit %s", d, commit, err, first)
	}
	for _, p := range [][2]string{{"good", "with-fifo"}, {"good", "with-loops"}} {
		dest := t.TempDir()
		done := make(chan error, 1)
		go func() { done <- c.Export(t.Context(), first, p[0], p[1], dest) }()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Export(%s/%s): %v", p[0], p[1], err)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("Export(%s/%s) did not return: stuck on a FIFO or a link loop", p[0], p[1])
		}
		if _, err := os.Stat(filepath.Join(dest, p[0], p[1], "build.sh")); err != nil {
			t.Errorf("Export(%s/%s): build.sh not exported: %v", p[0], p[1], err)
		}
		if _, err := os.Lstat(filepath.Join(dest, p[0], p[1], "pipe")); err == nil {
			t.Errorf("Export(%s/%s) exported the FIFO", p[0], p[1])
		}
	}

	// The hostile content is read the same way every time.
	refreshWithin(t, c, 30*time.Second)
	if again := c.Commit(); again != first {
		t.Errorf("commit changed from %s to %s without a change in the directory", first, again)
	}
	for _, hostile := range [][2]string{{"good", "a\nb"}, {"good", ".."}, {"..", "good"}, {"bad", "json-fifo"}, {"good", "fifo-project"}} {
		if _, _, err := c.Lookup(hostile[0], hostile[1]); err == nil {
			t.Errorf("Lookup(%q, %q) succeeded, want an error", hostile[0], hostile[1])
		}
	}
	if _, _, err := c.Lookup("bad", "json-fifo"); err == nil || !strings.Contains(err.Error(), "not buildable") {
		t.Errorf("Lookup(bad, json-fifo) = %v, want not buildable", err)
	}
	if err := c.Export(t.Context(), first, "good", "..", t.TempDir()); err == nil {
		t.Errorf("Export(good, ..) succeeded, want an error")
	}
}
