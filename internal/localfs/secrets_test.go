package localfs_test

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/decap-ci/decap/internal/build"
	"github.com/decap-ci/decap/internal/buildtest"
	"github.com/decap-ci/decap/internal/localfs"
)

func newSecrets(t *testing.T, dir string, now func() time.Time) *localfs.Secrets {
	t.Helper()
	s, err := localfs.NewSecrets(filepath.Join(dir, "secrets"), filepath.Join(dir, "secrets.key"), now)
	if err != nil {
		t.Fatalf("NewSecrets() error = %v", err)
	}
	return s
}

func TestSecretsContract(t *testing.T) {
	t.Parallel()
	buildtest.TestSecrets(t, func(t *testing.T, clock *buildtest.Clock) buildtest.Secrets {
		return newSecrets(t, t.TempDir(), clock.Now)
	}, buildtest.SecretsFeatures{})
}

// TestSecretsEncryptedAtRest: no file of the store holds a value, its
// base64 or a part of it; the directory and files are the user's alone,
// and so is the key file.
func TestSecretsEncryptedAtRest(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := newSecrets(t, dir, nil)
	value := []byte("plain-secret-value-0123456789")
	if err := s.Put(t.Context(), "ae6rt", "lab", "TOKEN", value); err != nil {
		t.Fatal(err)
	}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, _ := d.Info()
		if d.IsDir() && info.Mode().Perm() != 0o700 && p != dir {
			t.Errorf("%s has mode %v, want 0700", p, info.Mode().Perm())
		}
		if d.IsDir() {
			return nil
		}
		if info.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %v, want 0600", p, info.Mode().Perm())
		}
		data, _ := os.ReadFile(p)
		if bytes.Contains(data, value) || bytes.Contains(data, value[6:18]) {
			t.Errorf("%s holds the value in plain text", p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "secrets", "ae6rt", "lab", "TOKEN")); err != nil {
		t.Errorf("the secret's file: %v", err)
	}
}

// TestSecretsBoundToTheirPlace: a secret's file copied into another
// project's directory, or under another name, does not decrypt there.
func TestSecretsBoundToTheirPlace(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := newSecrets(t, dir, nil)
	ctx := t.Context()
	if err := s.Put(ctx, "ae6rt", "lab", "TOKEN", []byte("lab's token")); err != nil {
		t.Fatal(err)
	}
	if err := s.Put(ctx, "other", "app", "KEEP", []byte("keep")); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(dir, "secrets", "ae6rt", "lab", "TOKEN"))
	if err != nil {
		t.Fatal(err)
	}
	for _, to := range []struct{ team, project, name string }{{"other", "app", "TOKEN"}, {"ae6rt", "lab", "OTHER"}} {
		if err := os.WriteFile(filepath.Join(dir, "secrets", to.team, to.project, to.name), data, 0o600); err != nil {
			t.Fatal(err)
		}
		got, err := s.Reveal(ctx, to.team, to.project, []string{to.name})
		if err == nil || bytes.Contains([]byte(err.Error()), []byte("lab's token")) {
			t.Errorf("Reveal() of a file copied to %s/%s/%s = %q, %v; want an error without the value", to.team, to.project, to.name, got, err)
		}
	}
}

// TestSecretsKeyFile: the key is made once, whoever opens the store first
// (also at the same moment), and kept; another key cannot read the
// values; a key file others may read, or one that holds no key, is
// refused.
func TestSecretsKeyFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "secrets.key")
	var wg sync.WaitGroup
	stores := make([]*localfs.Secrets, 8)
	errs := make([]error, len(stores))
	for i := range stores {
		wg.Add(1)
		go func() {
			defer wg.Done()
			stores[i], errs[i] = localfs.NewSecrets(filepath.Join(dir, "secrets"), keyFile, nil)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("NewSecrets() %d error = %v", i, err)
		}
	}
	if err := stores[0].Put(t.Context(), "ae6rt", "lab", "TOKEN", []byte("v")); err != nil {
		t.Fatal(err)
	}
	for i, s := range stores {
		if got, err := s.Reveal(t.Context(), "ae6rt", "lab", []string{"TOKEN"}); err != nil || string(got["TOKEN"]) != "v" {
			t.Errorf("Reveal() through store %d, opened at the same time = %q, %v; want the value (one key)", i, got, err)
		}
	}
	info, err := os.Stat(keyFile)
	if err != nil || info.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v, mode %v; want 0600", err, info.Mode().Perm())
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".secrets-key") {
			t.Errorf("a temporary key file is left: %s", e.Name())
		}
	}

	// Another key: the values do not decrypt, and the error says why
	// without a value.
	other := t.TempDir()
	otherKey := filepath.Join(other, "k")
	if _, err := localfs.NewSecrets(filepath.Join(other, "s"), otherKey, nil); err != nil {
		t.Fatal(err)
	}
	s2, err := localfs.NewSecrets(filepath.Join(dir, "secrets"), otherKey, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s2.Reveal(t.Context(), "ae6rt", "lab", []string{"TOKEN"}); err == nil || !strings.Contains(err.Error(), "does not decrypt") {
		t.Errorf("Reveal() with another key error = %v, want 'does not decrypt'", err)
	}

	for _, tc := range []struct {
		name    string
		mode    os.FileMode
		content string
		want    string
	}{
		{"readable by the group", 0o640, "", "may be read or written by others"},
		{"readable by all", 0o644, "", "may be read or written by others"},
		{"not base64", 0o600, "not a key at all\n", "does not hold a key"},
		{"a short key", 0o600, "c2hvcnQ=\n", "does not hold a key"},
		{"empty", 0o600, "\n", "does not hold a key"},
	} {
		p := filepath.Join(t.TempDir(), "key")
		content := tc.content
		if content == "" {
			data, _ := os.ReadFile(keyFile)
			content = string(data)
		}
		if err := os.WriteFile(p, []byte(content), tc.mode); err != nil {
			t.Fatal(err)
		}
		os.Chmod(p, tc.mode)
		_, err := localfs.NewSecrets(filepath.Join(dir, "secrets"), p, nil)
		if !errors.Is(err, build.ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("NewSecrets() with a key file %s error = %v, want ErrInvalid %q", tc.name, err, tc.want)
		}
		if err != nil && tc.content == "" && strings.Contains(err.Error(), strings.TrimSpace(content)) {
			t.Errorf("the error shows the key: %v", err)
		}
	}
}

// TestSecretsIgnoresStrayFiles: a temporary file a crashed Put left, a
// symbolic link or a directory are not secrets.
func TestSecretsIgnoresStrayFiles(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := newSecrets(t, dir, nil)
	if err := s.Put(t.Context(), "ae6rt", "lab", "TOKEN", []byte("v")); err != nil {
		t.Fatal(err)
	}
	pdir := filepath.Join(dir, "secrets", "ae6rt", "lab")
	os.WriteFile(filepath.Join(pdir, ".TOKEN.tmp-123"), []byte("junk"), 0o600)
	os.Mkdir(filepath.Join(pdir, "ADIR"), 0o700)
	outside := filepath.Join(dir, "outside")
	os.WriteFile(outside, []byte("not a secret"), 0o600)
	os.Symlink(outside, filepath.Join(pdir, "LINK"))
	got, err := s.List(t.Context(), "ae6rt", "lab")
	if err != nil || len(got) != 1 || got[0].Name != "TOKEN" || got[0].Size != 1 {
		t.Errorf("List() = %v, %v; want TOKEN of 1 byte alone", got, err)
	}
	if v, err := s.Reveal(t.Context(), "ae6rt", "lab", []string{"LINK"}); err == nil {
		t.Errorf("Reveal() through a symbolic link = %q, want an error", v)
	}
}
