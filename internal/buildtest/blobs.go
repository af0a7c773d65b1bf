package buildtest

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"sync"

	"github.com/decap-ci/decap/internal/build"
)

// FakeBlobs is an in-memory Blobs. It is safe for concurrent use.
type FakeBlobs struct {
	mu      sync.Mutex
	objects map[string][]byte
}

// NewBlobs returns an empty FakeBlobs.
func NewBlobs() *FakeBlobs {
	return &FakeBlobs{objects: map[string][]byte{}}
}

// Put reads r to its end and then stores its content under key; when reading
// fails, the earlier object stays. See Blobs.
func (s *FakeBlobs) Put(ctx context.Context, key string, r io.Reader) error {
	if key == "" {
		return fmt.Errorf("put object: %w: empty key", build.ErrInvalid)
	}
	b, err := io.ReadAll(r)
	if err != nil {
		return fmt.Errorf("put object %s: %w", key, err)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("put object %s: %w", key, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.objects[key] = b
	return nil
}

// Open returns the object; ErrNotFound if there is none.
func (s *FakeBlobs) Open(ctx context.Context, key string) (io.ReadCloser, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, ok := s.objects[key]
	if !ok {
		return nil, fmt.Errorf("open object %s: %w", key, build.ErrNotFound)
	}
	// Stored slices are never modified, so readers may share them.
	return io.NopCloser(bytes.NewReader(b)), nil
}
