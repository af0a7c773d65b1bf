package sqlite_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/decap-ci/decap/internal/build"
	"github.com/decap-ci/decap/internal/sqlite"
)

// TestFilesForThisUserOnly: the database, its -wal and -shm and the wake
// directory are this user's only (issue 12: builds read decap.db, which was
// 0644), also when an older version left them readable.
func TestFilesForThisUserOnly(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		older bool // files of an older version exist, readable by all
	}{
		{"new", false},
		{"older install", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			path := filepath.Join(dir, "decap.db")
			if tc.older {
				for _, p := range []string{path, path + "-wal", path + "-shm"} {
					if err := os.WriteFile(p, nil, 0o644); err != nil {
						t.Fatal(err)
					}
					os.Chmod(p, 0o644) // whatever the umask
				}
				if err := os.Mkdir(filepath.Join(dir, "wake"), 0o755); err != nil {
					t.Fatal(err)
				}
				os.Chmod(filepath.Join(dir, "wake"), 0o755)
			}
			db, err := sqlite.Open(path, sqlite.Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			// A write, so that the -wal and -shm files exist.
			if err := sqlite.NewGate(db).Set(context.Background(), build.GateState{Paused: true, Reason: "test"}); err != nil {
				t.Fatal(err)
			}
			for _, tc := range []struct {
				name string
				want os.FileMode
			}{
				{"decap.db", 0o600},
				{"decap.db-wal", 0o600},
				{"decap.db-shm", 0o600},
				{"wake", 0o700},
			} {
				info, err := os.Stat(filepath.Join(dir, tc.name))
				if err != nil {
					t.Errorf("%s: %v", tc.name, err)
					continue
				}
				if got := info.Mode().Perm(); got != tc.want {
					t.Errorf("%s: mode %#o, want %#o", tc.name, got, tc.want)
				}
			}
		})
	}
}
