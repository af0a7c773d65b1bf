package backend

import (
	"os"
	"path/filepath"
	"testing"
)

// TestRestrictDataDir: what an older version (or an operator) left open in
// the data directory is closed at start — the directory, its known
// subdirectories and every file directly in it — and nothing else is
// touched; the directory is searchable only when builds run under users
// of their own.
func TestRestrictDataDir(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name       string
		searchable bool
		want       os.FileMode
	}{
		{"builds as this user", false, 0o700},
		{"builds under users of their own", true, 0o711},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := filepath.Join(t.TempDir(), "data")
			for _, d := range []string{"", "blobs", "wake", "catalog", "run", "other"} {
				if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
					t.Fatal(err)
				}
				os.Chmod(filepath.Join(dir, d), 0o755)
			}
			for _, f := range []string{"api-token", "github-webhook-secret", "decap.db", "decap.db-wal"} {
				if err := os.WriteFile(filepath.Join(dir, f), []byte("x"), 0o644); err != nil {
					t.Fatal(err)
				}
				os.Chmod(filepath.Join(dir, f), 0o644)
			}
			outside := filepath.Join(t.TempDir(), "outside")
			if err := os.WriteFile(outside, nil, 0o644); err != nil {
				t.Fatal(err)
			}
			os.Chmod(outside, 0o644)
			if err := os.Symlink(outside, filepath.Join(dir, "link")); err != nil {
				t.Fatal(err)
			}
			if err := restrictDataDir(dir, tc.searchable); err != nil {
				t.Fatal(err)
			}
			for _, c := range []struct {
				name string
				want os.FileMode
			}{
				{"", tc.want},
				{"blobs", 0o700}, {"wake", 0o700}, {"catalog", 0o700},
				{"api-token", 0o600}, {"github-webhook-secret", 0o600}, {"decap.db", 0o600}, {"decap.db-wal", 0o600},
				{"run", 0o755},   // the executor's
				{"other", 0o755}, // not Decap's
			} {
				info, err := os.Stat(filepath.Join(dir, c.name))
				if err != nil {
					t.Fatal(err)
				}
				if got := info.Mode().Perm(); got != c.want {
					t.Errorf("%q: mode %#o, want %#o", c.name, got, c.want)
				}
			}
			if info, _ := os.Stat(outside); info.Mode().Perm() != 0o644 {
				t.Errorf("a symbolic link's target was changed: %#o", info.Mode().Perm())
			}
		})
	}
	t.Run("created", func(t *testing.T) {
		t.Parallel()
		dir := filepath.Join(t.TempDir(), "new")
		if err := restrictDataDir(dir, false); err != nil {
			t.Fatal(err)
		}
		for _, p := range []string{dir, filepath.Join(dir, "catalog")} {
			if info, err := os.Stat(p); err != nil || info.Mode().Perm() != 0o700 {
				t.Errorf("%s: %v, mode %v; want a 0700 directory", p, err, info.Mode().Perm())
			}
		}
	})
}
