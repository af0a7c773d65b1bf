package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"syscall"
	"time"

	"github.com/decap-ci/decap/internal/api"
)

// maxAnswer bounds a JSON answer decapctl reads.
const maxAnswer = 32 << 20

// client calls Decap's HTTP API and turns every failure into an *Error.
type client struct {
	base  *url.URL
	token string
	// tokenFrom says where the token came from, or where decapctl looked
	// for one, for the hint of a 401.
	tokenFrom string
	timeout   time.Duration
	hc        *http.Client
}

func newClient(base *url.URL, token string, timeout time.Duration) *client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	// Streams may run for hours, but their headers come at once.
	tr.ResponseHeaderTimeout = timeout
	return &client{base: base, token: token, timeout: timeout, hc: &http.Client{Transport: tr}}
}

// call is one request.
type call struct {
	method, path string // path below the base URL, escaped
	query        url.Values
	body         any         // sent as JSON when not nil
	raw          []byte      // sent as is when not nil (with header)
	header       http.Header // extra headers
	// stream leaves the answer's body to the caller, with no deadline.
	stream bool
	// noToken sends no API token (webhooks).
	noToken bool
	// notFound is the message for a 404 (the server's own when empty).
	notFound string
	// authHint follows the server's message on a 401 or 403.
	authHint string
}

// where names the server in messages, without credentials.
func (c *client) where() string { return c.base.Redacted() }

// do sends the request. For a 2xx answer it returns the response, whose
// body the caller closes; any other outcome is an *Error.
func (c *client) do(ctx context.Context, k call) (*http.Response, error) {
	u := *c.base
	u.Path = c.base.Path + k.path
	if unescaped, err := url.PathUnescape(u.Path); err == nil && unescaped != u.Path {
		u.RawPath, u.Path = u.Path, unescaped
	}
	u.RawQuery = k.query.Encode()
	var body io.Reader
	switch {
	case k.raw != nil:
		body = bytes.NewReader(k.raw)
	case k.body != nil:
		b, err := json.Marshal(k.body)
		if err != nil {
			return nil, failf(ExitFailed, "encode request: %v", err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, k.method, u.String(), body)
	if err != nil {
		return nil, failf(ExitUsage, "request %s: %v", c.where(), err)
	}
	for h, vs := range k.header {
		req.Header[h] = vs
	}
	if k.body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "decapctl")
	if c.token != "" && !k.noToken {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, c.transportError(ctx, err)
	}
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return resp, nil
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	return nil, c.statusError(k, resp.StatusCode, b)
}

// fetch sends a request and reads the whole JSON answer within the
// timeout; it returns the answer, its status, and out decoded from it
// when out is not nil.
func (c *client) fetch(ctx context.Context, k call, out any) ([]byte, int, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	resp, err := c.do(ctx, k)
	if err != nil {
		return nil, 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	if err != nil {
		return nil, 0, c.transportError(ctx, err)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			return nil, 0, failf(ExitUnavailable, "Decap at %s answered %s %s with something that is not the expected JSON: %v",
				c.where(), k.method, k.path, err)
		}
	}
	return b, resp.StatusCode, nil
}

// transportError explains a request that got no answer.
func (c *client) transportError(ctx context.Context, err error) error {
	var ne net.Error
	switch {
	case errors.Is(err, context.Canceled) && ctx.Err() != nil:
		return failf(ExitInterrupted, "interrupted")
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return failf(ExitUnavailable, "Decap at %s did not answer within %s (--timeout)", c.where(), c.timeout)
	}
	return failf(ExitUnavailable, "cannot reach Decap at %s: %s (is it running? set DECAP_URL)", c.where(), netReason(err))
}

// netReason is the short cause of a failed request: "connection refused",
// "no such host example.invalid", ...
func netReason(err error) string {
	var dns *net.DNSError
	var ue *url.Error
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, syscall.ECONNRESET):
		return "connection reset"
	case errors.As(err, &dns):
		if dns.IsNotFound {
			return "no such host " + dns.Name
		}
		return "cannot resolve " + dns.Name + ": " + dns.Err
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "the connection was closed"
	case errors.As(err, &ue):
		return ue.Err.Error()
	}
	return err.Error()
}

// statusError explains a non-2xx answer and picks its exit code.
func (c *client) statusError(k call, status int, body []byte) error {
	msg := serverMessage(status, body)
	switch {
	case status == http.StatusNotFound && msg == "Not Found", status == http.StatusMethodNotAllowed:
		// echo's answer when no route matches: an older server.
		return failf(ExitFailed, "Decap at %s does not offer %s %s (is it older than decapctl?)", c.where(), k.method, k.path)
	case status == http.StatusNotFound:
		if k.notFound != "" {
			return failf(ExitNotFound, "%s", k.notFound)
		}
		return failf(ExitNotFound, "%s", msg)
	case status == http.StatusUnauthorized || status == http.StatusForbidden:
		hint := k.authHint
		switch {
		case hint != "":
		case c.token == "" && c.tokenFrom != "":
			hint = "decapctl sent no API token (" + c.tokenFrom + "); set DECAP_TOKEN, DECAP_TOKEN_FILE or --token"
		case c.token == "":
			hint = "decapctl sent no API token; set DECAP_TOKEN, DECAP_TOKEN_FILE or --token"
		case c.tokenFrom != "":
			hint = "the API token from " + c.tokenFrom + " was refused: it is not the one Decap runs with (its DECAP_API_TOKEN)"
		default:
			hint = "the API token was refused; check DECAP_TOKEN, DECAP_TOKEN_FILE or --token"
		}
		return failf(ExitAuth, "%s; %s", msg, hint)
	case status == http.StatusNotImplemented:
		return failf(ExitFailed, "Decap at %s cannot do that: %s", c.where(), msg)
	case status >= 500:
		return failf(ExitUnavailable, "Decap at %s failed: %d %s", c.where(), status, msg)
	}
	return failf(ExitFailed, "%s", msg)
}

// serverMessage is the "error" of a JSON error answer, or the start of a
// body that is not one.
func serverMessage(status int, body []byte) string {
	var e api.Error
	if json.Unmarshal(body, &e) == nil && e.Text() != "" {
		return e.Text()
	}
	s := strings.TrimSpace(string(body))
	if s == "" || strings.HasPrefix(s, "<") {
		return http.StatusText(status)
	}
	return s
}

// pathEscape escapes each slash-separated segment of s, keeping the
// slashes: refs such as "feature/x" travel as path segments.
func pathEscape(s string) string {
	parts := strings.Split(s, "/")
	for i, p := range parts {
		parts[i] = url.PathEscape(p)
	}
	return strings.Join(parts, "/")
}

// isCode reports whether err is an *Error with the exit code.
func isCode(err error, code int) bool {
	var e *Error
	return errors.As(err, &e) && e.Code == code
}

// printJSON writes an answer indented; an answer that is not JSON is
// written as it came.
func printJSON(w io.Writer, raw []byte) error {
	var buf bytes.Buffer
	if err := json.Indent(&buf, bytes.TrimSpace(raw), "", "  "); err != nil {
		buf.Reset()
		buf.Write(raw)
	}
	buf.WriteByte('\n')
	_, err := w.Write(buf.Bytes())
	return err
}

// encodeJSON writes v as indented JSON.
func encodeJSON(w io.Writer, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("encode output: %w", err)
	}
	_, err = w.Write(append(b, '\n'))
	return err
}
