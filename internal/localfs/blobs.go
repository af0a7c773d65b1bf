// Package localfs is the embedded default's object store: logs and artifacts
// kept as files in one directory, behind the same Blobs port that S3 serves
// in the cloud.
package localfs

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strings"
	"syscall"

	"github.com/decap-ci/decap/internal/build"
)

// MaxKeyLen bounds an object key, like S3's 1024-byte limit.
const MaxKeyLen = build.MaxObjectKeyLen

// Blobs stores objects as files under a directory: key "logs/<id>/console.log.gz"
// is the file <dir>/logs/<id>/console.log.gz. It is safe for concurrent use,
// also by several processes sharing the directory.
type Blobs struct {
	dir string
}

// NewBlobs returns a store in dir, creating the directory if needed.
//
// The store is this user's only: dir is made 0700 (also when an older
// version left it open), objects are 0600 in 0700 directories. Builds run
// on the same machine must neither read other builds' logs and artifacts
// nor write objects (issue 12); ingest, which serves them, runs as this
// user.
func NewBlobs(dir string) (*Blobs, error) {
	if dir == "" {
		return nil, fmt.Errorf("%w: blobs directory is empty", build.ErrInvalid)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create blobs directory: %w", err)
	}
	info, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("blobs directory: %w", err)
	}
	if info.Mode().Perm()&0o077 != 0 {
		if err := os.Chmod(dir, 0o700); err != nil {
			return nil, fmt.Errorf("blobs directory: %w", err)
		}
	}
	return &Blobs{dir: dir}, nil
}

// Put stores the content of r under key, replacing any earlier object. The
// content is streamed to a temporary file next to the object, synced, and
// renamed into place, so readers see the old object or the whole new one,
// never a part. An invalid key gives build.ErrInvalid; a cancelled ctx stops
// the copy and stores nothing.
func (b *Blobs) Put(ctx context.Context, key string, r io.Reader) error {
	if err := build.ValidateObjectKey(key); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("put %s: %w", key, err)
	}
	root, err := os.OpenRoot(b.dir)
	if err != nil {
		return fmt.Errorf("put %s: %w", key, err)
	}
	defer root.Close()
	if err := put(ctx, root, key, r); err != nil {
		return fmt.Errorf("put %s: %w", key, err)
	}
	return nil
}

func put(ctx context.Context, root *os.Root, key string, r io.Reader) error {
	dir, base := path.Split(key)
	dir = strings.TrimSuffix(dir, "/")
	if dir == "" {
		dir = "."
	}
	if err := root.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	tmp := path.Join(dir, "."+base+".tmp-"+randomSuffix())
	f, err := root.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	committed := false
	defer func() {
		if !committed {
			f.Close()
			root.Remove(tmp)
		}
	}()
	if _, err := io.Copy(f, ctxReader{ctx, r}); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := root.Rename(tmp, key); err != nil {
		return err
	}
	committed = true
	// Make the rename itself durable. A failure here leaves a complete
	// object that may not survive a crash; report it all the same.
	d, err := root.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// Open returns the object stored under key. It gives build.ErrNotFound when
// there is none and build.ErrInvalid for an invalid key.
func (b *Blobs) Open(ctx context.Context, key string) (io.ReadCloser, error) {
	if err := build.ValidateObjectKey(key); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("open %s: %w", key, err)
	}
	root, err := os.OpenRoot(b.dir)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", key, err)
	}
	defer root.Close()
	f, err := root.Open(key)
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
		return nil, fmt.Errorf("open %s: %w", key, build.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", key, err)
	}
	info, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("open %s: %w", key, err)
	}
	if !info.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("open %s: %w", key, build.ErrNotFound)
	}
	return f, nil
}

func randomSuffix() string {
	var b [8]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on Linux
	return hex.EncodeToString(b[:])
}

// ctxReader stops a copy when its context is done.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
