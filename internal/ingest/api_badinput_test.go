package ingest_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/decap-ci/decap/internal/build"
)

// TestHostileAPIRequests sends hostile names, bodies and credentials to
// the JSON API through the real router (invariant 5): each gets a clear
// 4xx, nothing is queued or recorded, the held lock and the open dispatch
// gate stay as they were, and the server still builds afterwards.
func TestHostileAPIRequests(t *testing.T) {
	t.Parallel()
	const builds = "/api/v1/projects/decap-ci/hello/builds"
	post := func(path, body string) func() *http.Request {
		return func() *http.Request { return apiRequest(http.MethodPost, path, token, body) }
	}
	get := func(path string) func() *http.Request {
		return func() *http.Request { return apiRequest(http.MethodGet, path, token, "") }
	}
	tests := []struct {
		name       string
		req        func() *http.Request
		wantStatus int
		want       string
		knownIssue string
	}{
		// Hostile team and project names in the path.
		{name: "team dot-dot", req: post("/api/v1/projects/../hello/builds", `{"ref":"main"}`), wantStatus: 400, want: "team"},
		{name: "team percent-encoded dot-dot", req: post("/api/v1/projects/%2e%2e/hello/builds", `{"ref":"main"}`), wantStatus: 400, want: "team"},
		{name: "team percent-encoded traversal", req: post("/api/v1/projects/%2E%2E%2F%2E%2E%2Fetc/hello/builds", `{"ref":"main"}`), wantStatus: 400, want: "team"},
		{name: "team with space", req: post("/api/v1/projects/decap%20ci/hello/builds", `{"ref":"main"}`), wantStatus: 400, want: "team"},
		{name: "team with NUL", req: post("/api/v1/projects/decap%00ci/hello/builds", `{"ref":"main"}`), wantStatus: 400, want: "team"},
		{name: "team overlong UTF-8 dots", req: post("/api/v1/projects/%C0%AE%C0%AE/hello/builds", `{"ref":"main"}`), wantStatus: 400, want: "team"},
		{name: "team Cyrillic lookalike", req: post("/api/v1/projects/d%D0%B5cap-ci/hello/builds", `{"ref":"main"}`), wantStatus: 400, want: "team"},
		{name: "team fullwidth lookalike", req: post("/api/v1/projects/%EF%BD%84ecap-ci/hello/builds", `{"ref":"main"}`), wantStatus: 400, want: "team"},
		{name: "team 101 characters", req: post("/api/v1/projects/"+strings.Repeat("t", 101)+"/hello/builds", `{"ref":"main"}`), wantStatus: 400, want: "longer than"},
		{name: "project hidden", req: post("/api/v1/projects/decap-ci/.git/builds", `{"ref":"main"}`), wantStatus: 400, want: "project"},
		{name: "project percent-encoded traversal", req: post("/api/v1/projects/decap-ci/hello%2F..%2F..%2Fetc/builds", `{"ref":"main"}`), wantStatus: 400, want: "project"},
		{name: "project with a leading dash", req: post("/api/v1/projects/decap-ci/-rf/builds", `{"ref":"main"}`), wantStatus: 400, want: "project"},

		// Hostile refs and bodies.
		{name: "ref dot-dot", req: post(builds, `{"ref":".."}`), wantStatus: 400, want: "not a valid git ref"},
		{name: "ref traversal", req: post(builds, `{"ref":"a/../../b"}`), wantStatus: 400, want: "not a valid git ref"},
		{name: "ref with space", req: post(builds, `{"ref":"a b"}`), wantStatus: 400, want: "contains"},
		{name: "ref with NUL", req: post(builds, `{"ref":"ma\u0000in"}`), wantStatus: 400, want: "contains"},
		{name: "ref with newline", req: post(builds, `{"ref":"main\nforged"}`), wantStatus: 400, want: "contains"},
		{name: "ref 300 characters", req: post(builds, `{"ref":"`+strings.Repeat("r", 300)+`"}`), wantStatus: 400, want: "longer than 255"},
		{name: "ref option-like", req: post(builds, `{"ref":"--upload-pack=evil"}`), wantStatus: 400, want: "not a valid git ref"},
		{
			name: "ref invalid UTF-8", req: post(builds, "{\"ref\":\"ma\xffin\"}"), wantStatus: 400, want: "UTF-8",
		},
		{name: "ref is a number", req: post(builds, `{"ref":123}`), wantStatus: 400, want: "must be JSON"},
		{name: "ref is null", req: post(builds, `{"ref":null}`), wantStatus: 400, want: "ref is empty"},
		{name: "duplicate ref, the last hostile", req: post(builds, `{"ref":"main","ref":"../x"}`), wantStatus: 400, want: "not a valid git ref"},
		{name: "refType unknown", req: post(builds, `{"ref":"main","refType":"pull"}`), wantStatus: 400, want: "refType"},
		{name: "sha not hex", req: post(builds, `{"ref":"main","sha":"$(id)"}`), wantStatus: 400, want: "sha"},
		{name: "sha is a number", req: post(builds, `{"ref":"main","sha":1234567}`), wantStatus: 400, want: "must be JSON"},
		{name: "unknown field", req: post(builds, `{"ref":"main","trigger":"push"}`), wantStatus: 400, want: "unknown field"},
		{name: "body is an array", req: post(builds, `[{"ref":"main"}]`), wantStatus: 400, want: "must be JSON"},
		{name: "form body", req: func() *http.Request {
			r := apiRequest(http.MethodPost, builds, token, "ref=main")
			r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			return r
		}, wantStatus: 400, want: "must be JSON"},
		{name: "deeply nested", req: post(builds, `{"ref":"main","sha":`+strings.Repeat("[", 20_000)+strings.Repeat("]", 20_000)+`}`), wantStatus: 400, want: "must be JSON"},
		{name: "body over the limit", req: post(builds, `{"ref":"main"}`+strings.Repeat(" ", 64<<10)), wantStatus: 413, want: "larger than"},
		{
			name: "data after the JSON object", req: post(builds, `{"ref":"main"} {"ref":"../x"}`), wantStatus: 400, want: "after",
		},

		// Credentials.
		{name: "token with a NUL appended", req: func() *http.Request {
			return apiRequest(http.MethodPost, builds, token+"\x00", `{"ref":"main"}`)
		}, wantStatus: 401, want: "API token"},
		{name: "token prefix", req: func() *http.Request {
			return apiRequest(http.MethodPost, builds, token[:len(token)-1], `{"ref":"main"}`)
		}, wantStatus: 401, want: "API token"},
		{name: "lowercase bearer", req: func() *http.Request {
			r := apiRequest(http.MethodPost, builds, "", `{"ref":"main"}`)
			r.Header.Set("Authorization", "bearer "+token)
			return r
		}, wantStatus: 401, want: "API token"},
		{name: "basic auth with the token", req: func() *http.Request {
			r := apiRequest(http.MethodPost, builds, "", `{"ref":"main"}`)
			r.Header.Set("Authorization", "Basic "+token)
			return r
		}, wantStatus: 401, want: "API token"},
		{name: "session body is a number", req: post("/api/v1/session", `{"token":123}`), wantStatus: 400, want: "must be JSON"},
		{name: "session token with a NUL appended", req: post("/api/v1/session", `{"token":"`+token+`\u0000"}`), wantStatus: 401, want: "wrong API token"},

		// Hostile build IDs, lock keys and query parameters.
		{name: "build id dot-dot", req: get("/api/v1/builds/.."), wantStatus: 400, want: "not a UUID"},
		{name: "build id percent-encoded traversal", req: get("/api/v1/builds/%2e%2e%2f%2e%2e%2fetc%2fpasswd"), wantStatus: 400, want: "not a UUID"},
		{name: "build id in capitals", req: get("/api/v1/builds/01A21AF2-0B80-7000-8000-000000000001"), wantStatus: 400, want: "lowercase UUID"},
		{name: "build id with NUL", req: get("/api/v1/builds/01a21af2-0b80-7000-8000-00000000000%00/log"), wantStatus: 400, want: "UUID"},
		{name: "build id 10k characters", req: get("/api/v1/builds/" + strings.Repeat("a", 10_000) + "/artifacts"), wantStatus: 400, want: "not a UUID"},
		{name: "lock ref traversal", req: get("/api/v1/locks/decap-ci/hello/a/../../b"), wantStatus: 400, want: "not a valid git ref"},
		{name: "lock ref percent-encoded dot-dot", req: get("/api/v1/locks/decap-ci/hello/%2e%2e"), wantStatus: 400, want: "not a valid git ref"},
		{name: "lock team dot-dot", req: get("/api/v1/locks/../hello/main"), wantStatus: 400, want: "team"},
		{name: "release lock with a traversal", req: func() *http.Request {
			return apiRequest(http.MethodDelete, "/api/v1/locks/decap-ci/hello/main%2F..%2F..%2Fother", token, "")
		}, wantStatus: 400, want: "not a valid git ref"},
		{name: "release lock with NUL", req: func() *http.Request {
			return apiRequest(http.MethodDelete, "/api/v1/locks/decap-ci/hello/main%00", token, "")
		}, wantStatus: 400, want: "contains"},
		{name: "history limit negative", req: get("/api/v1/projects/decap-ci/hello/builds?limit=-1"), wantStatus: 400, want: "limit"},
		{name: "history limit huge", req: get("/api/v1/projects/decap-ci/hello/builds?limit=99999999999999999999"), wantStatus: 400, want: "limit"},
		{name: "history cursor garbage", req: get("/api/v1/projects/decap-ci/hello/builds?cursor=..%2F..%2F%00"), wantStatus: 400, want: "cursor"},
		{name: "refs of a hostile team", req: get("/api/v1/projects/..%2F..%2Fetc/hello/refs"), wantStatus: 400, want: "team"},
		{name: "pause reason with control characters", req: post("/api/v1/dispatch/pause", `{"reason":"maintenance\u001b[2J"}`), wantStatus: 400, want: "control characters"},
		{name: "pause reason too long", req: post("/api/v1/dispatch/pause", `{"reason":"`+strings.Repeat("r", 501)+`"}`), wantStatus: 400, want: "longer than"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, nil)
			ctx := context.Background()
			held := build.Lease{Key: "decap-ci/hello/main", BuildID: id1, Owner: "dispatcher-1",
				AcquiredAt: f.clock.Now(), ExpiresAt: f.clock.Now().Add(time.Hour)}
			if err := f.locks.Acquire(ctx, held, 0); err != nil {
				t.Fatal(err)
			}
			w := f.do(tt.req())
			problems := afterBadInput(t, f, w, tt.wantStatus, tt.want)
			if leases, err := f.locks.List(ctx); err != nil || len(leases) != 1 || leases[0].Key != held.Key {
				problems = append(problems, "the held lock was changed")
			}
			if g, err := f.gate.Get(ctx); err != nil || g.Paused {
				problems = append(problems, "the dispatch gate was closed")
			}
			reportBadInput(t, problems, tt.knownIssue)
		})
	}
}
