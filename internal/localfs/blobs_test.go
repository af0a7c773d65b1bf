package localfs_test

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/decap-ci/decap/internal/build"
	"github.com/decap-ci/decap/internal/buildtest"
	"github.com/decap-ci/decap/internal/localfs"
)

func newBlobs(t *testing.T) (*localfs.Blobs, string) {
	t.Helper()
	dir := t.TempDir()
	b, err := localfs.NewBlobs(dir)
	if err != nil {
		t.Fatalf("NewBlobs: %v", err)
	}
	return b, dir
}

func read(t *testing.T, b *localfs.Blobs, key string) string {
	t.Helper()
	rc, err := b.Open(t.Context(), key)
	if err != nil {
		t.Fatalf("Open(%q): %v", key, err)
	}
	defer rc.Close()
	data, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("read %q: %v", key, err)
	}
	return string(data)
}

// TestContract runs the Blobs contract shared with the fake and the S3
// adapter.
func TestContract(t *testing.T) {
	buildtest.TestBlobs(t, func(t *testing.T) buildtest.Blobs {
		b, _ := newBlobs(t)
		return b
	})
}

func TestOpenMissing(t *testing.T) {
	t.Parallel()
	b, _ := newBlobs(t)
	ctx := t.Context()
	if err := b.Put(ctx, "logs/a/console.log.gz", strings.NewReader("x")); err != nil {
		t.Fatalf("Put: %v", err)
	}
	for _, key := range []string{
		"logs/b/console.log.gz",    // missing
		"logs/a",                   // a directory, not an object
		"logs/a/console.log.gz/x",  // below an object
		"artifacts/a/artifacts.gz", // missing directory
	} {
		_, err := b.Open(ctx, key)
		if !errors.Is(err, build.ErrNotFound) {
			t.Errorf("Open(%q) error = %v, want ErrNotFound", key, err)
		}
	}
}

func TestInvalidKeys(t *testing.T) {
	t.Parallel()
	b, dir := newBlobs(t)
	ctx := t.Context()
	for _, key := range []string{
		"",
		"/etc/passwd",
		"../escape",
		"logs/../../escape",
		"logs/./x",
		"logs//x",
		"logs/x/",
		`logs\x`,
		"logs/\x00x",
		strings.Repeat("a", localfs.MaxKeyLen+1),
	} {
		if err := b.Put(ctx, key, strings.NewReader("x")); !errors.Is(err, build.ErrInvalid) {
			t.Errorf("Put(%q) error = %v, want ErrInvalid", key, err)
		}
		if _, err := b.Open(ctx, key); !errors.Is(err, build.ErrInvalid) {
			t.Errorf("Open(%q) error = %v, want ErrInvalid", key, err)
		}
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(dir), "escape")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a file escaped the blobs directory: stat error %v", err)
	}
}

// failingReader returns data and then an error, like a broken upload.
type failingReader struct{ data io.Reader }

func (f failingReader) Read(p []byte) (int, error) {
	n, err := f.data.Read(p)
	if err == io.EOF {
		return n, errors.New("connection reset")
	}
	return n, err
}

func TestFailedPutKeepsOldObject(t *testing.T) {
	t.Parallel()
	b, dir := newBlobs(t)
	ctx := t.Context()
	key := "artifacts/a/artifacts.tar.gz"
	if err := b.Put(ctx, key, strings.NewReader("old")); err != nil {
		t.Fatalf("Put: %v", err)
	}
	if err := b.Put(ctx, key, failingReader{strings.NewReader("partial new")}); err == nil {
		t.Fatal("Put from a failing reader succeeded, want error")
	}
	if got, want := read(t, b, key), "old"; got != want {
		t.Errorf("after failed Put, Open = %q, want %q", got, want)
	}
	entries, err := os.ReadDir(filepath.Join(dir, "artifacts", "a"))
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 {
		t.Errorf("failed Put left %d files, want only the object: %v", len(entries), entries)
	}

	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if err := b.Put(cancelled, key, strings.NewReader("new")); !errors.Is(err, context.Canceled) {
		t.Errorf("Put with cancelled context error = %v, want context.Canceled", err)
	}
	if got, want := read(t, b, key), "old"; got != want {
		t.Errorf("after cancelled Put, Open = %q, want %q", got, want)
	}
}

// TestStoreIsThisUsersOnly: the store's directory, its subdirectories and
// its objects grant group and others nothing, also when an older version
// left the directory open (issue 12: a build wrote into blobs/).
func TestStoreIsThisUsersOnly(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "blobs")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o755) // whatever the umask
	b, err := localfs.NewBlobs(dir)
	if err != nil {
		t.Fatal(err)
	}
	key := "logs/01936f4e-7a3b-7c1d-9e2f-0a1b2c3d4e5f/console.log.gz"
	if err := b.Put(t.Context(), key, strings.NewReader("log")); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		path string
		want os.FileMode
	}{
		{dir, 0o700},
		{filepath.Join(dir, "logs"), 0o700},
		{filepath.Join(dir, "logs", "01936f4e-7a3b-7c1d-9e2f-0a1b2c3d4e5f"), 0o700},
		{filepath.Join(dir, filepath.FromSlash(key)), 0o600},
	} {
		info, err := os.Stat(tc.path)
		if err != nil {
			t.Errorf("%v", err)
			continue
		}
		if got := info.Mode().Perm(); got != tc.want {
			t.Errorf("%s: mode %#o, want %#o", tc.path, got, tc.want)
		}
	}
}
