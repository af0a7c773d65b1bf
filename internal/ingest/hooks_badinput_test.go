package ingest_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/decap-ci/decap/internal/ingest"
)

// Hostile input through the real router (invariant 5 of DESIGN.md): every
// case gets a clear 4xx, or a 202 that says why it was ignored; nothing is
// queued or recorded; and the same server then still accepts a valid push.

// defaultLimit uses the server's default body limit (5 MiB) instead of the
// fixture's 64 KiB.
func defaultLimit(c *ingest.Config) { c.MaxBodyBytes = 0 }

const defaultMaxBody = 5 << 20

// rawPush is a push payload with each field given as raw JSON, so a case
// can put numbers, nulls or invalid UTF-8 where strings belong.
func rawPush(owner, repo, ref, extra string) []byte {
	return []byte(`{"ref":` + ref + `,"after":"6113728f27ae82c7b1a177c8d03f9e96e0adf246","deleted":false,` +
		`"repository":{"name":` + repo + `,"owner":{"login":` + owner + `}},"pusher":{"name":"someone"}` + extra + `}`)
}

// jsonString quotes s as a JSON string; invalid UTF-8 is kept as raw
// bytes, as a hostile sender would send it.
func jsonString(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '"' || c == '\\':
			b.WriteByte('\\')
			b.WriteByte(c)
		case c < 0x20:
			fmt.Fprintf(&b, `\u%04x`, c)
		default:
			b.WriteByte(c)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// padTo appends spaces (insignificant JSON whitespace) to body until it is
// n bytes long.
func padTo(body []byte, n int) []byte {
	return append(body, bytes.Repeat([]byte(" "), n-len(body))...)
}

// afterBadInput checks the effects of a request that must not build: the
// answer (status, JSON error or ignored reason containing want), nothing
// queued, no record; then that the same server still queues a valid push.
// It returns what was wrong, so that a case with a known issue can skip.
func afterBadInput(t *testing.T, f *fixture, w *httptest.ResponseRecorder, wantStatus int, want string) []string {
	t.Helper()
	var problems []string
	if w.Code != wantStatus {
		problems = append(problems, fmt.Sprintf("status = %d, want %d", w.Code, wantStatus))
	}
	if ct := w.Header().Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		problems = append(problems, fmt.Sprintf("Content-Type = %q, want application/json", ct))
	}
	var ans map[string]any
	if err := json.Unmarshal(w.Body.Bytes(), &ans); err != nil {
		problems = append(problems, fmt.Sprintf("answer %.300q is not a JSON object: %v", w.Body, err))
	}
	key := "error"
	if w.Code < 400 {
		key = "ignored"
	}
	if got, _ := ans[key].(string); got == "" || !strings.Contains(got, want) {
		problems = append(problems, fmt.Sprintf("%s = %.300q, want it to contain %q", key, got, want))
	}
	if _, ok := ans["builds"]; ok {
		problems = append(problems, fmt.Sprintf("answer names builds: %.300s", w.Body))
	}
	if n := queuedCount(t, f); n != 0 {
		problems = append(problems, fmt.Sprintf("%d requests queued, want none", n))
	}
	if recs, _, err := f.records.Waiting(context.Background(), 0, 0); err != nil || len(recs) != 0 {
		problems = append(problems, fmt.Sprintf("%d records saved (%v), want none", len(recs), err))
	}
	if strings.Contains(w.Body.String(), secret) || strings.Contains(w.Body.String(), token) {
		problems = append(problems, "the answer contains the webhook secret or the API token")
	}
	if len(problems) > 0 {
		return problems
	}
	// The server still works.
	ok := f.do(hook("push", "after-bad-input", pushBody("decap-ci", "hello", "refs/heads/main")))
	if ok.Code != http.StatusAccepted || !strings.Contains(ok.Body.String(), `"builds"`) || queuedCount(t, f) != 1 {
		problems = append(problems, fmt.Sprintf("a valid push afterwards: got %d %s with %d queued, want 202 with one build", ok.Code, ok.Body, queuedCount(t, f)))
	}
	return problems
}

func queuedCount(t *testing.T, f *fixture) int {
	t.Helper()
	st, err := f.queue.Stats(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return st.Visible + st.InFlight
}

// reportBadInput fails the test with problems, or skips it when they are
// the known issue the case describes.
func reportBadInput(t *testing.T, problems []string, knownIssue string) {
	t.Helper()
	switch {
	case len(problems) == 0:
	case knownIssue != "":
		t.Skipf("known issue, not fixed yet: %s\n%s", knownIssue, strings.Join(problems, "\n"))
	default:
		t.Error(strings.Join(problems, "\n"))
	}
}

func TestHostileWebhooks(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("x", 300)
	tests := []struct {
		name       string
		cfg        func(*ingest.Config)
		req        func() *http.Request
		wantStatus int
		want       string // part of the error, or of the ignored reason of a 202
		// knownIssue, when set, names a reported bug this case shows; the
		// case skips while the bug is there and passes once it is fixed.
		knownIssue string
	}{
		// Hostile team and project names.
		{name: "owner dot-dot", req: signedPush("..", "hello", "refs/heads/main"), wantStatus: 400, want: "repository owner"},
		{name: "owner dot", req: signedPush(".", "hello", "refs/heads/main"), wantStatus: 400, want: "repository owner"},
		{name: "owner with space", req: signedPush("decap ci", "hello", "refs/heads/main"), wantStatus: 400, want: "repository owner"},
		{name: "owner with NUL", req: signedPush("decap\x00ci", "hello", "refs/heads/main"), wantStatus: 400, want: "repository owner"},
		{name: "owner percent-encoded dot-dot", req: signedPush("%2e%2e", "hello", "refs/heads/main"), wantStatus: 400, want: "repository owner"},
		{name: "owner Cyrillic lookalike", req: signedPush("dеcap-ci", "hello", "refs/heads/main"), wantStatus: 400, want: "repository owner"},
		{name: "owner fullwidth lookalike", req: signedPush("ｄecap-ci", "hello", "refs/heads/main"), wantStatus: 400, want: "repository owner"},
		{name: "owner invalid UTF-8", req: signedPush("decap\xff-ci", "hello", "refs/heads/main"), wantStatus: 400, want: "repository owner"},
		{name: "owner 101 characters", req: signedPush(strings.Repeat("o", 101), "hello", "refs/heads/main"), wantStatus: 400, want: "longer than"},
		{name: "repository dot-dot", req: signedPush("decap-ci", "..", "refs/heads/main"), wantStatus: 400, want: "repository name"},
		{name: "repository path traversal", req: signedPush("decap-ci", "hello/../../etc", "refs/heads/main"), wantStatus: 400, want: "repository name"},
		{name: "repository with NUL", req: signedPush("decap-ci", "hello\x00", "refs/heads/main"), wantStatus: 400, want: "repository name"},
		{name: "repository zero-width space", req: signedPush("decap-ci", "hel\u200blo", "refs/heads/main"), wantStatus: 400, want: "repository name"},
		{name: "repository hidden", req: signedPush("decap-ci", ".git", "refs/heads/main"), wantStatus: 400, want: "repository name"},

		// Hostile refs.
		{name: "ref dot-dot", req: signedPush("decap-ci", "hello", "refs/heads/.."), wantStatus: 400, want: "not a valid git ref"},
		{name: "ref traversal", req: signedPush("decap-ci", "hello", "refs/heads/a/../../b"), wantStatus: 400, want: "not a valid git ref"},
		{name: "ref with space", req: signedPush("decap-ci", "hello", "refs/heads/a b"), wantStatus: 400, want: "contains ' '"},
		{name: "ref with NUL", req: signedPush("decap-ci", "hello", "refs/heads/ma\x00in"), wantStatus: 400, want: `contains '\x00'`},
		{name: "ref with terminal escape", req: signedPush("decap-ci", "hello", "refs/heads/\x1b[31mred"), wantStatus: 400, want: "contains"},
		{name: "ref with newline", req: signedPush("decap-ci", "hello", "refs/heads/main\nINFO forged log line"), wantStatus: 400, want: "contains"},
		{name: "ref 300 characters", req: signedPush("decap-ci", "hello", "refs/heads/"+long), wantStatus: 400, want: "longer than 255"},
		{name: "ref 256 bytes", req: signedPush("decap-ci", "hello", "refs/heads/"+strings.Repeat("é", 128)), wantStatus: 400, want: "longer than 255"},
		{name: "ref empty branch", req: signedPush("decap-ci", "hello", "refs/heads/"), wantStatus: 400, want: "ref is empty"},
		{name: "ref option-like", req: signedPush("decap-ci", "hello", "refs/heads/--upload-pack=evil"), wantStatus: 400, want: "not a valid git ref"},
		{name: "ref lock file", req: signedPush("decap-ci", "hello", "refs/heads/main.lock"), wantStatus: 400, want: "not a valid git ref"},
		{name: "ref reflog syntax", req: signedPush("decap-ci", "hello", "refs/heads/main@{1}"), wantStatus: 400, want: "not a valid git ref"},
		{name: "ref percent-encoded dot-dot is only a name", req: signedPush("Codertocat", "Hello-World", "refs/heads/%2e%2e"), wantStatus: 202, want: "does not match managedRefRegex"},
		{name: "ref Cyrillic lookalike of master", req: signedPush("Codertocat", "Hello-World", "refs/heads/mаster"), wantStatus: 202, want: "does not match managedRefRegex"},
		{name: "ref zero-width space after master", req: signedPush("Codertocat", "Hello-World", "refs/heads/master\u200b"), wantStatus: 202, want: "does not match managedRefRegex"},
		{name: "ref right-to-left override", req: signedPush("Codertocat", "Hello-World", "refs/heads/\u202eretsam"), wantStatus: 202, want: "does not match managedRefRegex"},
		{name: "ref other case than managed", req: signedPush("Codertocat", "Hello-World", "refs/heads/MASTER"), wantStatus: 202, want: "does not match managedRefRegex"},
		{name: "ref invalid UTF-8, filtered project", req: signedPush("Codertocat", "Hello-World", "refs/heads/ma\xffster"), wantStatus: 400, want: "UTF-8"},
		{
			name: "ref invalid UTF-8", req: signedPush("decap-ci", "hello", "refs/heads/ma\xffin"), wantStatus: 400, want: "UTF-8",
		},
		{name: "ref neither branch nor tag", req: signedPush("decap-ci", "hello", "refs/remotes/origin/main"), wantStatus: 202, want: "neither a branch nor a tag"},
		{name: "ref 300 characters outside refs/heads", req: signedPush("decap-ci", "hello", "refs/x/"+long), wantStatus: 202, want: "neither a branch nor a tag"},

		// Bodies just under and over the limit, declared or streamed.
		{name: "body just under the limit", cfg: defaultLimit, req: func() *http.Request {
			return hook("push", "d1", padTo(pushBody("nobody", "nothing", "refs/heads/main"), defaultMaxBody-1))
		}, wantStatus: 202, want: "not in the build-scripts repository"},
		{name: "body at the limit", cfg: defaultLimit, req: func() *http.Request {
			return hook("push", "d1", padTo(pushBody("nobody", "nothing", "refs/heads/main"), defaultMaxBody))
		}, wantStatus: 202, want: "not in the build-scripts repository"},
		{name: "body just over the limit", cfg: defaultLimit, req: func() *http.Request {
			return hook("push", "d1", padTo(pushBody("decap-ci", "hello", "refs/heads/main"), defaultMaxBody+1))
		}, wantStatus: 413, want: "larger than"},
		{name: "body just over the limit, streamed", cfg: defaultLimit, req: func() *http.Request {
			r := hook("push", "d1", padTo(pushBody("decap-ci", "hello", "refs/heads/main"), defaultMaxBody+1))
			r.ContentLength = -1
			return r
		}, wantStatus: 413, want: "larger than"},
		{name: "huge string field under the limit", cfg: defaultLimit, req: func() *http.Request {
			return hook("push", "d1", rawPush(jsonString("nobody"), jsonString("nothing"), jsonString("refs/heads/main"), `,"head_commit":{"message":`+jsonString(strings.Repeat("m", defaultMaxBody-1024))+`}`))
		}, wantStatus: 202, want: "not in the build-scripts repository"},

		// Deeply nested JSON.
		{name: "100k open brackets", cfg: defaultLimit, req: func() *http.Request {
			return hook("push", "d1", bytes.Repeat([]byte("["), 100_000))
		}, wantStatus: 400, want: "push payload"},
		{name: "100k balanced brackets", cfg: defaultLimit, req: func() *http.Request {
			return hook("push", "d1", []byte(strings.Repeat("[", 100_000)+strings.Repeat("]", 100_000)))
		}, wantStatus: 400, want: "push payload"},
		{name: "100k nested objects in an unread field", cfg: defaultLimit, req: func() *http.Request {
			return hook("push", "d1", rawPush(jsonString("decap-ci"), jsonString("hello"), jsonString("refs/heads/main"),
				`,"commits":`+strings.Repeat(`{"a":`, 100_000)+`1`+strings.Repeat(`}`, 100_000)))
		}, wantStatus: 400, want: "push payload"},
		{name: "100k brackets over the fixture's limit", req: func() *http.Request {
			return hook("push", "d1", bytes.Repeat([]byte("["), 100_000))
		}, wantStatus: 413, want: "larger than"},

		// Content types.
		{name: "form encoded, as GitHub sends when so configured", req: func() *http.Request {
			r := hook("push", "d1", []byte("payload="+url.QueryEscape(string(pushBody("decap-ci", "hello", "refs/heads/main")))))
			r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			return r
		}, wantStatus: 415, want: "application/json"},
		{name: "text/plain with a JSON body", req: func() *http.Request {
			r := hook("push", "d1", pushBody("decap-ci", "hello", "refs/heads/main"))
			r.Header.Set("Content-Type", "text/plain")
			return r
		}, wantStatus: 415, want: "application/json"},
		{name: "multipart", req: func() *http.Request {
			r := hook("push", "d1", pushBody("decap-ci", "hello", "refs/heads/main"))
			r.Header.Set("Content-Type", "multipart/form-data; boundary=x")
			return r
		}, wantStatus: 415, want: "application/json"},
		{name: "no content type, form body", req: func() *http.Request {
			r := hook("push", "d1", []byte("payload="+url.QueryEscape(string(pushBody("decap-ci", "hello", "refs/heads/main")))))
			r.Header.Del("Content-Type")
			return r
		}, wantStatus: 400, want: "push payload"},
		{name: "no content type, empty body", req: func() *http.Request {
			r := hook("push", "d1", nil)
			r.Header.Del("Content-Type")
			return r
		}, wantStatus: 400, want: "push payload"},

		// Duplicate keys: the last one wins, as in encoding/json.
		{name: "duplicate ref, the last hostile", req: signedPush("decap-ci", "hello", "refs/heads/main", `,"ref":"refs/heads/a/../../b"`), wantStatus: 400, want: "not a valid git ref"},
		{name: "duplicate repository, the last hostile", req: signedPush("decap-ci", "hello", "refs/heads/main", `,"repository":{"name":"hello","owner":{"login":".."}}`), wantStatus: 400, want: "repository owner"},
		{name: "duplicate deleted, the last true", req: signedPush("decap-ci", "hello", "refs/heads/main", `,"deleted":true`), wantStatus: 202, want: "was deleted"},
		{name: "duplicate ref, the last a pull request", req: signedPush("decap-ci", "hello", "refs/heads/main", `,"ref":"refs/pull/1/head"`), wantStatus: 202, want: "neither a branch nor a tag"},

		// Numbers and other types where strings are expected.
		{name: "ref is a number", req: signedRawPush(jsonString("decap-ci"), jsonString("hello"), `123`), wantStatus: 400, want: "push payload"},
		{name: "ref is an array", req: signedRawPush(jsonString("decap-ci"), jsonString("hello"), `["refs/heads/main"]`), wantStatus: 400, want: "push payload"},
		{name: "ref is null", req: signedRawPush(jsonString("decap-ci"), jsonString("hello"), `null`), wantStatus: 400, want: "no ref"},
		{name: "repository name is a number", req: signedRawPush(jsonString("decap-ci"), `42`, jsonString("refs/heads/main")), wantStatus: 400, want: "push payload"},
		{name: "owner login is a huge number", req: signedRawPush(`1e400`, jsonString("hello"), jsonString("refs/heads/main")), wantStatus: 400, want: "push payload"},
		{name: "owner login is an object", req: signedRawPush(`{"login":"decap-ci"}`, jsonString("hello"), jsonString("refs/heads/main")), wantStatus: 400, want: "push payload"},
		{name: "after is a number", req: signedPush("decap-ci", "hello", "refs/heads/main", `,"after":0`), wantStatus: 400, want: "push payload"},
		{name: "deleted is a string", req: signedPush("decap-ci", "hello", "refs/heads/main", `,"deleted":"false"`), wantStatus: 400, want: "push payload"},
		{name: "repository is a string", req: func() *http.Request {
			return hook("push", "d1", []byte(`{"ref":"refs/heads/main","after":"6113728f27ae82c7b1a177c8d03f9e96e0adf246","repository":"decap-ci/hello"}`))
		}, wantStatus: 400, want: "push payload"},
		{name: "repository is null", req: func() *http.Request {
			return hook("push", "d1", []byte(`{"ref":"refs/heads/main","after":"6113728f27ae82c7b1a177c8d03f9e96e0adf246","repository":null}`))
		}, wantStatus: 400, want: "repository owner"},
		{name: "body is a JSON string", req: func() *http.Request { return hook("push", "d1", []byte(`"push"`)) }, wantStatus: 400, want: "push payload"},
		{name: "body is null", req: func() *http.Request { return hook("push", "d1", []byte(`null`)) }, wantStatus: 400, want: "repository owner"},
		{name: "body starts with a byte order mark", req: func() *http.Request {
			return hook("push", "d1", append([]byte("\xef\xbb\xbf"), pushBody("decap-ci", "hello", "refs/heads/main")...))
		}, wantStatus: 400, want: "push payload"},
		{name: "binary garbage", req: func() *http.Request { return hook("push", "d1", []byte("\x00\x01\xfe\xff\x7fELF")) }, wantStatus: 400, want: "push payload"},

		// Hostile headers of a correctly signed request.
		{name: "delivery with a newline", req: func() *http.Request {
			return hook("push", "d1\nforged", pushBody("decap-ci", "hello", "refs/heads/main"))
		}, wantStatus: 400, want: "X-GitHub-Delivery"},
		{name: "delivery 129 characters", req: func() *http.Request {
			return hook("push", strings.Repeat("d", 129), pushBody("decap-ci", "hello", "refs/heads/main"))
		}, wantStatus: 400, want: "X-GitHub-Delivery"},
		{name: "delivery non-ASCII", req: func() *http.Request {
			return hook("push", "dеlivery", pushBody("decap-ci", "hello", "refs/heads/main"))
		}, wantStatus: 400, want: "X-GitHub-Delivery"},
		{name: "event in capitals", req: func() *http.Request {
			return hook("PUSH", "d1", pushBody("decap-ci", "hello", "refs/heads/main"))
		}, wantStatus: 202, want: "does not trigger builds"},
		{name: "event 300 characters", req: func() *http.Request {
			return hook(long, "d1", pushBody("decap-ci", "hello", "refs/heads/main"))
		}, wantStatus: 202, want: "does not trigger builds"},
		{name: "signature in capitals", req: func() *http.Request {
			r := hook("push", "d1", pushBody("decap-ci", "hello", "refs/heads/main"))
			r.Header.Set("X-Hub-Signature-256", strings.ToUpper(r.Header.Get("X-Hub-Signature-256")))
			return r
		}, wantStatus: 401, want: "sha256="},
		{name: "signature twice as long", req: func() *http.Request {
			r := hook("push", "d1", pushBody("decap-ci", "hello", "refs/heads/main"))
			r.Header.Set("X-Hub-Signature-256", r.Header.Get("X-Hub-Signature-256")+strings.Repeat("0", 64))
			return r
		}, wantStatus: 401, want: "not a hex SHA-256"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, tt.cfg)
			w := f.do(tt.req())
			reportBadInput(t, afterBadInput(t, f, w, tt.wantStatus, tt.want), tt.knownIssue)
		})
	}
}

// signedPush returns a signed push of owner, repo and ref; extra (raw
// JSON) is added at the end of the object.
func signedPush(owner, repo, ref string, extra ...string) func() *http.Request {
	return signedRawPush(jsonString(owner), jsonString(repo), jsonString(ref), extra...)
}

// signedRawPush is signedPush with the fields given as raw JSON.
func signedRawPush(owner, repo, ref string, extra ...string) func() *http.Request {
	return func() *http.Request {
		return hook("push", "d1", rawPush(owner, repo, ref, strings.Join(extra, "")))
	}
}

// TestInvalidRegexInProjectJSON puts project.json files whose
// managedRefRegex does not compile (or compiles and would be catastrophic
// for a backtracking engine) into the catalog: pushes are ignored with the
// reason, builds by hand get 422, and the other projects still build.
func TestInvalidRegexInProjectJSON(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, regex string
		knownIssue  string
	}{
		{name: "unclosed-group", regex: `release/(.+`},
		{name: "repeat-over-1000", regex: `a{1001}`},
		{name: "lookahead", regex: `(?=main)main`},
		{name: "backreference", regex: `(a)\1`},
		{name: "reversed-class", regex: `[z-a]`},
		{name: "trailing-backslash", regex: `main\`},
		{name: "bad-named-group", regex: `(?P<n`},
		{name: "nested-repeat", regex: `((a{1000}){1000}){1000}`},
		// The issue's bomb: 900 bytes that compile to 200,000 instructions
		// (150 MiB to parse, every catalog refresh, before the size limit).
		{name: "program-size-bomb", regex: strings.Repeat(".{0,1000}", 100)},
		{name: "over-4096-instructions", regex: strings.Repeat("a", 5000)},
		{
			name: "closes-the-anchoring-group", regex: `nothing)|(.*`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, nil)
			desc, _ := json.Marshal(map[string]string{"buildImage": "debian:bookworm-slim", "managedRefRegex": tt.regex})
			f.catalog.Set("evil/"+tt.name, string(desc))
			w := f.do(hook("push", "d-"+tt.name, pushBody("evil", tt.name, "refs/heads/main")))
			reportBadInput(t, afterBadInput(t, f, w, http.StatusAccepted, "not buildable"), tt.knownIssue)

			w = f.do(apiRequest(http.MethodPost, "/api/v1/projects/evil/"+tt.name+"/builds", token, `{"ref":"main"}`))
			if w.Code != http.StatusUnprocessableEntity || !strings.Contains(w.Body.String(), "not buildable") {
				t.Errorf("build by hand: got %d %s, want 422 not buildable", w.Code, w.Body)
			}
			if n := queuedCount(t, f); n != 1 { // the valid push of afterBadInput
				t.Errorf("%d requests queued, want only the valid push", n)
			}
		})
	}

	// A regex that backtracking engines take exponential time on is linear
	// in Go's: a long unmatched ref is answered at once (bounded by the
	// test's timeout, not timed here).
	t.Run("catastrophic for backtracking", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t, nil)
		f.catalog.Set("evil/redos", `{"buildImage":"debian:bookworm-slim","managedRefRegex":"(a+)+$|(a|aa)+b"}`)
		w := f.do(hook("push", "d-redos", pushBody("evil", "redos", "refs/heads/"+strings.Repeat("a", 240)+"!")))
		reportBadInput(t, afterBadInput(t, f, w, http.StatusAccepted, "does not match managedRefRegex"), "")
	})
}
