package awss3_test

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"errors"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"

	"github.com/decap-ci/decap/internal/awss3"
	"github.com/decap-ci/decap/internal/build"
	"github.com/decap-ci/decap/internal/buildtest"
	"github.com/decap-ci/decap/internal/entrypoint"
)

// These tests run against gofakes3, in process.

const bucket = "decap-test"

// fakeS3 is an S3 emulator for one test, counting the part uploads it
// serves.
type fakeS3 struct {
	srv   *httptest.Server
	parts atomic.Int64
}

func newFakeS3(t *testing.T) *fakeS3 {
	t.Helper()
	f := &fakeS3{}
	handler := gofakes3.New(s3mem.New()).Server()
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPut && r.URL.Query().Has("partNumber") {
			f.parts.Add(1)
		}
		handler.ServeHTTP(w, r)
	}))
	t.Cleanup(f.srv.Close)
	return f
}

// client returns an S3 client for the emulator. checksums says when the
// client computes request checksums; emulators want WhenRequired.
func (f *fakeS3) client(checksums aws.RequestChecksumCalculation) *s3.Client {
	return s3.New(s3.Options{
		Region:                     "us-east-1",
		BaseEndpoint:               aws.String(f.srv.URL),
		UsePathStyle:               true,
		Credentials:                credentials.NewStaticCredentialsProvider("test", "test", ""),
		RequestChecksumCalculation: checksums,
		ResponseChecksumValidation: aws.ResponseChecksumValidationWhenRequired,
	})
}

func newBlobs(t *testing.T) (*awss3.Blobs, *fakeS3) {
	t.Helper()
	return newBlobsWith(t, aws.RequestChecksumCalculationWhenRequired)
}

func newBlobsWith(t *testing.T, checksums aws.RequestChecksumCalculation) (*awss3.Blobs, *fakeS3) {
	t.Helper()
	f := newFakeS3(t)
	client := f.client(checksums)
	if _, err := client.CreateBucket(t.Context(), &s3.CreateBucketInput{Bucket: aws.String(bucket)}); err != nil {
		t.Fatalf("CreateBucket() error = %v", err)
	}
	b, err := awss3.New(client, awss3.Config{Bucket: bucket})
	if err != nil {
		t.Fatalf("New() error = %v", err)
	}
	return b, f
}

func TestBlobs(t *testing.T) {
	t.Parallel()
	buildtest.TestBlobs(t, func(t *testing.T) buildtest.Blobs {
		b, _ := newBlobs(t)
		return b
	})
}

// A build uploads its log through a presigned URL with the entrypoint's
// uploader; the object is then readable.
func TestPresignedPutRoundTrip(t *testing.T) {
	t.Parallel()
	b, f := newBlobs(t)
	ctx := t.Context()
	key := build.LogKey(build.NewID(time.Now()))
	target, err := b.PresignPut(ctx, key, 15*time.Minute)
	if err != nil {
		t.Fatalf("PresignPut() error = %v", err)
	}
	u, err := url.Parse(target)
	if err != nil {
		t.Fatalf("presigned URL does not parse: %v", err)
	}
	q := u.Query()
	if !strings.HasSuffix(u.Path, "/"+bucket+"/"+key) || q.Get("X-Amz-Expires") != "900" || q.Get("X-Amz-Signature") == "" ||
		!strings.Contains(q.Get("X-Amz-SignedHeaders"), "content-type") {
		t.Errorf("presigned URL path %s, query %v; want the key, a 900s signature covering content-type", u.Path, q)
	}

	var log bytes.Buffer
	zw := gzip.NewWriter(&log)
	io.WriteString(zw, "+ make test\nok\n")
	zw.Close()
	uploader := entrypoint.NewHTTPUploader(f.srv.Client(), map[string]string{key: target}, t.TempDir())
	if err := uploader.Put(ctx, key, bytes.NewReader(log.Bytes())); err != nil {
		t.Fatalf("HTTPUploader.Put() error = %v", err)
	}
	rc, err := b.Open(ctx, key)
	if err != nil {
		t.Fatalf("Open() error = %v", err)
	}
	defer rc.Close()
	got, err := io.ReadAll(rc)
	if err != nil || !bytes.Equal(got, log.Bytes()) {
		t.Errorf("Open() read %d bytes (error %v), want the %d uploaded", len(got), err, log.Len())
	}
}

// The presigned URL carries no checksum of an empty payload, which would
// make every real upload fail, even when the client computes checksums by
// default.
func TestPresignPutWithoutChecksum(t *testing.T) {
	t.Parallel()
	f := newFakeS3(t)
	b, err := awss3.New(f.client(aws.RequestChecksumCalculationWhenSupported), awss3.Config{Bucket: bucket})
	if err != nil {
		t.Fatal(err)
	}
	target, err := b.PresignPut(t.Context(), build.ArtifactsKey(build.NewID(time.Now())), time.Hour)
	if err != nil {
		t.Fatalf("PresignPut() error = %v", err)
	}
	if lower := strings.ToLower(target); strings.Contains(lower, "x-amz-checksum") || strings.Contains(lower, "x-amz-sdk-checksum") {
		t.Errorf("presigned URL has a checksum parameter: %s", target)
	}
}

// An object larger than a part goes up in parts, streamed from a reader of
// unknown length, and reads back whole and from an offset: with the
// emulator's checksum setting, and with the SDK's default, which real S3
// gets (parts then carry CRC32 checksums).
func TestMultipartObject(t *testing.T) {
	t.Parallel()
	for _, checksums := range []aws.RequestChecksumCalculation{aws.RequestChecksumCalculationWhenRequired, aws.RequestChecksumCalculationWhenSupported} {
		t.Run(map[aws.RequestChecksumCalculation]string{
			aws.RequestChecksumCalculationWhenRequired:  "checksums when required",
			aws.RequestChecksumCalculationWhenSupported: "checksums when supported",
		}[checksums], func(t *testing.T) {
			t.Parallel()
			testMultipartObject(t, checksums)
		})
	}
}

func testMultipartObject(t *testing.T, checksums aws.RequestChecksumCalculation) {
	b, f := newBlobsWith(t, checksums)
	ctx := t.Context()
	const size = 20<<20 + 5
	key := build.ArtifactsKey(build.NewID(time.Now()))
	want := sha256.New()
	var tail bytes.Buffer
	src := io.TeeReader(io.LimitReader(newNoise(7), size), io.MultiWriter(want, tailWriter{&tail, 100}))
	if err := b.Put(ctx, key, struct{ io.Reader }{src}); err != nil {
		t.Fatalf("Put() error = %v", err)
	}
	if got := f.parts.Load(); got != 3 {
		t.Errorf("Put() of %d bytes uploaded %d parts, want 3", size, got)
	}
	rc, err := b.Open(ctx, key)
	if err != nil {
		t.Fatalf("Open() error = %v", err)
	}
	got := sha256.New()
	n, err := io.Copy(got, rc)
	rc.Close()
	if err != nil || n != size || !bytes.Equal(got.Sum(nil), want.Sum(nil)) {
		t.Errorf("Open() read %d bytes (error %v), sha256 match %v; want %d bytes, same sha256", n, err, bytes.Equal(got.Sum(nil), want.Sum(nil)), size)
	}

	for _, tc := range []struct {
		name   string
		offset int64
		want   []byte
	}{
		{"last 100 bytes", size - 100, tail.Bytes()},
		{"at the end", size, nil},
		{"past the end", size + 10, nil},
	} {
		rc, err := b.OpenRange(ctx, key, tc.offset)
		if err != nil {
			t.Errorf("OpenRange(%s) error = %v", tc.name, err)
			continue
		}
		got, err := io.ReadAll(rc)
		rc.Close()
		if err != nil || !bytes.Equal(got, tc.want) {
			t.Errorf("OpenRange(%s) read %d bytes (error %v), want %d", tc.name, len(got), err, len(tc.want))
		}
	}
	if _, err := b.OpenRange(ctx, build.LogKey("missing"), 10); !errors.Is(err, build.ErrNotFound) {
		t.Errorf("OpenRange(missing) error = %v, want ErrNotFound", err)
	}
}

// A multipart Put whose reader fails after the first part leaves the
// earlier object in place.
func TestFailedMultipartKeepsEarlierObject(t *testing.T) {
	t.Parallel()
	b, f := newBlobs(t)
	ctx := t.Context()
	key := build.ArtifactsKey(build.NewID(time.Now()))
	if err := b.Put(ctx, key, strings.NewReader("earlier")); err != nil {
		t.Fatalf("Put() error = %v", err)
	}
	broken := io.MultiReader(io.LimitReader(newNoise(3), awss3.PartSize+1000), failingReader{})
	if err := b.Put(ctx, key, broken); err == nil {
		t.Fatal("Put() from a failing reader error = nil, want an error")
	}
	if f.parts.Load() == 0 {
		t.Errorf("no part was uploaded: the failure did not happen mid-upload")
	}
	rc, err := b.Open(ctx, key)
	if err != nil {
		t.Fatalf("Open() error = %v", err)
	}
	defer rc.Close()
	if got, _ := io.ReadAll(rc); string(got) != "earlier" {
		t.Errorf("Open() after a failed Put read %d bytes, want %q", len(got), "earlier")
	}
}

func TestInvalidInput(t *testing.T) {
	t.Parallel()
	b, _ := newBlobs(t)
	ctx := t.Context()
	for _, key := range []string{"", "/logs/x", "logs/../etc/passwd", "logs//x", "logs/./x", "a\\b", "a\nb", strings.Repeat("k", 1025)} {
		if err := b.Put(ctx, key, strings.NewReader("x")); !errors.Is(err, build.ErrInvalid) {
			t.Errorf("Put(%q) error = %v, want ErrInvalid", key, err)
		}
		if _, err := b.Open(ctx, key); !errors.Is(err, build.ErrInvalid) {
			t.Errorf("Open(%q) error = %v, want ErrInvalid", key, err)
		}
		if _, err := b.PresignPut(ctx, key, time.Minute); !errors.Is(err, build.ErrInvalid) {
			t.Errorf("PresignPut(%q) error = %v, want ErrInvalid", key, err)
		}
	}
	key := build.LogKey(build.NewID(time.Now()))
	for _, ttl := range []time.Duration{0, -time.Second, 8 * 24 * time.Hour} {
		if _, err := b.PresignPut(ctx, key, ttl); !errors.Is(err, build.ErrInvalid) {
			t.Errorf("PresignPut(ttl %v) error = %v, want ErrInvalid", ttl, err)
		}
	}
	if _, err := b.OpenRange(ctx, key, -1); !errors.Is(err, build.ErrInvalid) {
		t.Errorf("OpenRange(-1) error = %v, want ErrInvalid", err)
	}
	if _, err := awss3.New(s3.New(s3.Options{Region: "us-east-1"}), awss3.Config{}); !errors.Is(err, build.ErrInvalid) {
		t.Errorf("New() without a bucket error = %v, want ErrInvalid", err)
	}
}

// noise is an endless deterministic stream of pseudo-random bytes.
type noise struct{ r *rand.ChaCha8 }

func newNoise(seed byte) noise {
	var s [32]byte
	s[0] = seed
	return noise{rand.NewChaCha8(s)}
}

func (n noise) Read(p []byte) (int, error) { return n.r.Read(p) }

type failingReader struct{}

func (failingReader) Read([]byte) (int, error) { return 0, errors.New("connection reset") }

// tailWriter keeps the last n bytes written to it.
type tailWriter struct {
	buf *bytes.Buffer
	n   int
}

func (w tailWriter) Write(p []byte) (int, error) {
	w.buf.Write(p)
	if extra := w.buf.Len() - w.n; extra > 0 {
		w.buf.Next(extra)
	}
	return len(p), nil
}
