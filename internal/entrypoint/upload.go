package entrypoint

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/decap-ci/decap/internal/build"
)

// errUploadDone ends a producer whose consumer stopped reading.
var errUploadDone = errors.New("uploader stopped reading")

// upload streams what write produces to the Uploader under key, through a
// pipe, so nothing is held in memory. It tries uploadAttempts times, waiting
// UploadBackoff, then twice that, and returns the last error. An error
// wrapping build.ErrInvalid (no URL for the key, an object too large) is
// not tried again: another attempt cannot help.
func (r *runner) upload(ctx context.Context, key string, write func(io.Writer) error) error {
	var err error
	backoff := r.cfg.UploadBackoff
	for attempt := 1; attempt <= uploadAttempts; attempt++ {
		if attempt > 1 {
			r.log.Warn("upload failed, retrying", "key", key, "attempt", attempt-1, "err", err)
			select {
			case <-time.After(backoff):
			case <-ctx.Done():
				return fmt.Errorf("%w (after %d attempts)", err, attempt-1)
			}
			backoff *= 2
		}
		actx, cancel := context.WithTimeout(ctx, r.cfg.UploadTimeout)
		err = uploadOnce(actx, r.cfg.Uploader, key, write)
		cancel()
		if err == nil {
			return nil
		}
		if errors.Is(err, build.ErrInvalid) {
			return err
		}
	}
	return fmt.Errorf("%w (after %d attempts)", err, uploadAttempts)
}

func uploadOnce(ctx context.Context, u Uploader, key string, write func(io.Writer) error) error {
	pr, pw := io.Pipe()
	produced := make(chan error, 1)
	go func() {
		err := write(pw)
		pw.CloseWithError(err) // nil: the reader sees EOF
		produced <- err
	}()
	err := u.Put(ctx, key, pr)
	pr.CloseWithError(errUploadDone) // unblock the producer if Put stopped early
	werr := <-produced
	if err != nil {
		return err
	}
	if werr != nil {
		// Put returned success without reading everything: the stored
		// object is incomplete.
		return werr
	}
	return nil
}

// HTTPUploader uploads objects with HTTP PUT to fixed URLs, one per key, such
// as S3 presigned URLs. It spools each object to a temporary file first so
// the request carries a Content-Length, which presigned PUTs require.
//
// Presigned URLs are credentials: HTTPUploader never puts a URL into an
// error.
type HTTPUploader struct {
	client  *http.Client
	urls    map[string]string
	tempDir string
}

// NewHTTPUploader returns an uploader that PUTs key's content to urls[key]
// with client. Spool files go to tempDir ("" = the system's).
func NewHTTPUploader(client *http.Client, urls map[string]string, tempDir string) *HTTPUploader {
	return &HTTPUploader{client: client, urls: urls, tempDir: tempDir}
}

// Put uploads r's content to the URL for key with Content-Type
// application/gzip. A key without a URL gives build.ErrInvalid; a response
// other than 2xx is an error naming the status and, for S3, the error code.
func (u *HTTPUploader) Put(ctx context.Context, key string, r io.Reader) error {
	target, ok := u.urls[key]
	if !ok || target == "" {
		return fmt.Errorf("%w: no upload URL for %s", build.ErrInvalid, key)
	}
	f, err := os.CreateTemp(u.tempDir, "decap-upload-*")
	if err != nil {
		return fmt.Errorf("spool %s: %w", key, err)
	}
	defer os.Remove(f.Name())
	defer f.Close()
	size, err := io.Copy(f, r)
	if err != nil {
		return fmt.Errorf("spool %s: %w", key, err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, target, nil)
	if err != nil {
		return fmt.Errorf("put %s: invalid upload URL", key)
	}
	req.ContentLength = size
	req.Header.Set("Content-Type", "application/gzip")
	req.GetBody = func() (io.ReadCloser, error) {
		return io.NopCloser(io.NewSectionReader(f, 0, size)), nil
	}
	req.Body, _ = req.GetBody()
	if size == 0 {
		req.Body, req.GetBody = http.NoBody, nil
	}
	resp, err := u.client.Do(req)
	if err != nil {
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err // url.Error carries the URL, with its signature
		}
		return fmt.Errorf("put %s: %w", key, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	if resp.StatusCode/100 != 2 {
		if code := xmlElement(string(body), "Code"); code != "" {
			return fmt.Errorf("put %s: %s (%s)", key, resp.Status, code)
		}
		return fmt.Errorf("put %s: %s", key, resp.Status)
	}
	return nil
}

// xmlElement returns the text of the first <name> element in s, if short
// and plain: S3 reports errors as <Error><Code>AccessDenied</Code>...
// The rest of such a body may echo the request's signature, so only the code
// is kept.
func xmlElement(s, name string) string {
	_, rest, ok := strings.Cut(s, "<"+name+">")
	if !ok {
		return ""
	}
	text, _, ok := strings.Cut(rest, "</"+name+">")
	if !ok || len(text) > 64 || strings.ContainsAny(text, "<>\n") {
		return ""
	}
	return text
}
