package entrypoint_test

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/decap-ci/decap/internal/build"
	"github.com/decap-ci/decap/internal/entrypoint"
)

const secret = "X-Amz-Signature=deadbeefsecret"

func TestHTTPUploaderPut(t *testing.T) {
	t.Parallel()
	type put struct {
		method, path, contentType, body string
		contentLength                   int64
		chunked                         bool
	}
	var mu sync.Mutex
	var got []put
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		got = append(got, put{r.Method, r.URL.Path, r.Header.Get("Content-Type"), string(body), r.ContentLength, len(r.TransferEncoding) > 0})
		mu.Unlock()
	}))
	defer srv.Close()

	up := entrypoint.NewHTTPUploader(srv.Client(), map[string]string{
		"logs/x/console.log.gz": srv.URL + "/bucket/logs/x/console.log.gz?" + secret,
		"empty":                 srv.URL + "/bucket/empty?" + secret,
	}, t.TempDir())
	// A reader of unknown length, like the pipe Run uses.
	if err := up.Put(t.Context(), "logs/x/console.log.gz", io.MultiReader(strings.NewReader("gzip "), strings.NewReader("bytes"))); err != nil {
		t.Fatalf("Put: %v", err)
	}
	if err := up.Put(t.Context(), "empty", strings.NewReader("")); err != nil {
		t.Fatalf("Put empty: %v", err)
	}
	want := []put{
		{http.MethodPut, "/bucket/logs/x/console.log.gz", "application/gzip", "gzip bytes", 10, false},
		{http.MethodPut, "/bucket/empty", "application/gzip", "", 0, false},
	}
	if len(got) != len(want) {
		t.Fatalf("server got %d requests, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("request %d = %+v, want %+v", i, got[i], want[i])
		}
	}

	if err := up.Put(t.Context(), "other", strings.NewReader("x")); !errors.Is(err, build.ErrInvalid) {
		t.Errorf("Put of a key without URL: error %v, want ErrInvalid", err)
	}
}

// Errors name the key and the status, never the URL and its signature.
func TestHTTPUploaderErrorsHideURL(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusForbidden)
		io.WriteString(w, `<?xml version="1.0"?><Error><Code>SignatureDoesNotMatch</Code><SignatureProvided>deadbeefsecret</SignatureProvided></Error>`)
	}))
	t.Cleanup(srv.Close)
	closed := httptest.NewServer(http.NotFoundHandler())
	closed.Close()

	tests := []struct {
		name, url, want string
	}{
		{"denied", srv.URL + "/b/k?" + secret, "put k: 403 Forbidden (SignatureDoesNotMatch)"},
		{"unreachable", closed.URL + "/b/k?" + secret, "put k: "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			up := entrypoint.NewHTTPUploader(http.DefaultClient, map[string]string{"k": tt.url}, t.TempDir())
			err := up.Put(t.Context(), "k", strings.NewReader("data"))
			if err == nil || !strings.HasPrefix(err.Error(), tt.want) {
				t.Fatalf("Put error = %v, want prefix %q", err, tt.want)
			}
			if strings.Contains(err.Error(), "deadbeef") || strings.Contains(err.Error(), "127.0.0.1:") && strings.Contains(err.Error(), "/b/k") {
				t.Errorf("error leaks the URL or signature: %v", err)
			}
		})
	}
}
