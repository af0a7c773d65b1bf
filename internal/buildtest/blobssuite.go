package buildtest

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"io"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"

	"github.com/decap-ci/decap/internal/build"
)

// TestBlobs runs the Blobs contract. newBlobs must return a new, empty
// store. Subtests run in parallel.
func TestBlobs(t *testing.T, newBlobs func(t *testing.T) Blobs) {
	id := build.ID("01890a5d-ac96-774b-bcce-b302099a8057")
	logKey, artifactsKey := build.LogKey(id), build.ArtifactsKey(id)

	t.Run("put and open", func(t *testing.T) {
		t.Parallel()
		s := newBlobs(t)
		put(t, s, logKey, strings.NewReader("hello\n"))
		put(t, s, artifactsKey, strings.NewReader("tarball"))
		put(t, s, "logs/empty/console.log.gz", strings.NewReader(""))
		for key, want := range map[string]string{
			logKey:                      "hello\n",
			artifactsKey:                "tarball",
			"logs/empty/console.log.gz": "",
		} {
			if got := readBlob(t, s, key); string(got) != want {
				t.Errorf("Open(%s) read %q, want %q", key, got, want)
			}
		}
	})

	t.Run("put replaces", func(t *testing.T) {
		t.Parallel()
		s := newBlobs(t)
		put(t, s, logKey, strings.NewReader("first, and longer"))
		put(t, s, logKey, strings.NewReader("second"))
		if got := readBlob(t, s, logKey); string(got) != "second" {
			t.Errorf("Open() read %q, want %q", got, "second")
		}
	})

	t.Run("open of a missing object", func(t *testing.T) {
		t.Parallel()
		s := newBlobs(t)
		rc, err := s.Open(t.Context(), logKey)
		if !errors.Is(err, build.ErrNotFound) {
			if rc != nil {
				rc.Close()
			}
			t.Errorf("Open() error = %v, want ErrNotFound", err)
		}
	})

	t.Run("large object streams", func(t *testing.T) {
		t.Parallel()
		s := newBlobs(t)
		const size = 5<<20 + 123
		want := sha256.New()
		src := io.TeeReader(io.LimitReader(newNoise(1), size), want)
		put(t, s, artifactsKey, src)
		rc, err := s.Open(t.Context(), artifactsKey)
		if err != nil {
			t.Fatalf("Open() error = %v", err)
		}
		defer rc.Close()
		got := sha256.New()
		n, err := io.Copy(got, rc)
		if err != nil {
			t.Fatalf("reading the object: %v", err)
		}
		if n != size || !bytes.Equal(got.Sum(nil), want.Sum(nil)) {
			t.Errorf("read %d bytes with sha256 %x, want %d bytes with sha256 %x", n, got.Sum(nil), size, want.Sum(nil))
		}
	})

	t.Run("failed put keeps the earlier object", func(t *testing.T) {
		t.Parallel()
		s := newBlobs(t)
		put(t, s, logKey, strings.NewReader("complete"))
		broken := io.MultiReader(strings.NewReader("partial"), errReader{})
		if err := s.Put(t.Context(), logKey, broken); err == nil {
			t.Fatalf("Put() from a failing reader error = nil, want an error")
		}
		if got := readBlob(t, s, logKey); string(got) != "complete" {
			t.Errorf("Open() after a failed Put read %q, want %q", got, "complete")
		}
		if err := s.Put(t.Context(), artifactsKey, io.MultiReader(strings.NewReader("partial"), errReader{})); err == nil {
			t.Fatalf("Put() from a failing reader error = nil, want an error")
		}
		if rc, err := s.Open(t.Context(), artifactsKey); !errors.Is(err, build.ErrNotFound) {
			if rc != nil {
				rc.Close()
			}
			t.Errorf("Open() of a failed first Put error = %v, want ErrNotFound", err)
		}
	})

	t.Run("readers never see a partly written object", func(t *testing.T) {
		t.Parallel()
		s := newBlobs(t)
		const size = 256 << 10
		contents := [][]byte{bytes.Repeat([]byte{'a'}, size), bytes.Repeat([]byte{'b'}, size)}
		put(t, s, logKey, bytes.NewReader(contents[0]))
		var wg sync.WaitGroup
		done := make(chan struct{})
		wg.Go(func() {
			defer close(done)
			for i := range 20 {
				if err := s.Put(t.Context(), logKey, bytes.NewReader(contents[i%2])); err != nil {
					t.Errorf("Put() error = %v", err)
					return
				}
			}
		})
		wg.Go(func() {
			for {
				select {
				case <-done:
					return
				default:
				}
				rc, err := s.Open(t.Context(), logKey)
				if err != nil {
					t.Errorf("Open() during Puts error = %v", err)
					return
				}
				got, err := io.ReadAll(rc)
				rc.Close()
				if err != nil {
					t.Errorf("reading during Puts: %v", err)
					return
				}
				if !bytes.Equal(got, contents[0]) && !bytes.Equal(got, contents[1]) {
					t.Errorf("Open() read %d bytes that are neither object", len(got))
					return
				}
			}
		})
		wg.Wait()
	})
}

func put(t *testing.T, s Blobs, key string, r io.Reader) {
	t.Helper()
	if err := s.Put(t.Context(), key, r); err != nil {
		t.Fatalf("Put(%s) error = %v", key, err)
	}
}

func readBlob(t *testing.T, s Blobs, key string) []byte {
	t.Helper()
	rc, err := s.Open(t.Context(), key)
	if err != nil {
		t.Fatalf("Open(%s) error = %v", key, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("reading %s: %v", key, err)
	}
	return b
}

// noise is an endless deterministic stream of pseudo-random bytes.
type noise struct{ r *rand.ChaCha8 }

func newNoise(seed byte) noise {
	var s [32]byte
	s[0] = seed
	return noise{rand.NewChaCha8(s)}
}

func (n noise) Read(p []byte) (int, error) { return n.r.Read(p) }

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errors.New("connection reset") }
