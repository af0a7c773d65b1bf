package github_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/decap-ci/decap/internal/build"
	"github.com/decap-ci/decap/internal/buildtest"
	"github.com/decap-ci/decap/internal/github"
)

const token = "ghp_test-token-never-shown"

// fakeGitHub mimics the few GitHub REST endpoints Decap calls: list
// branches and tags (paged with Link headers like GitHub's), create a
// commit status, and a primary rate limit.
type fakeGitHub struct {
	t   *testing.T
	srv *httptest.Server

	mu       sync.Mutex
	repos    map[string]fakeRepo // "owner/repo" → refs
	requests map[string]int      // "METHOD path" → count
	auth     []string            // Authorization headers seen
	statuses []postedStatus
	// rateLimitedUntil, when set, answers every request 403 with
	// X-RateLimit-Remaining: 0 and X-RateLimit-Reset at that time.
	rateLimitedUntil time.Time
	// fail5xx answers the next n status posts 502.
	fail5xx int
	// block, when set, holds list requests until it is closed.
	block chan struct{}
}

type fakeRepo struct{ branches, tags []build.RefInfo }

type postedStatus struct {
	Repo, SHA                              string
	State, Context, Description, TargetURL string
}

func newFakeGitHub(t *testing.T) *fakeGitHub {
	t.Helper()
	f := &fakeGitHub{t: t, repos: map[string]fakeRepo{}, requests: map[string]int{}}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /repos/{owner}/{repo}/branches", func(w http.ResponseWriter, r *http.Request) {
		f.list(w, r, func(fr fakeRepo) []build.RefInfo { return fr.branches })
	})
	mux.HandleFunc("GET /repos/{owner}/{repo}/tags", func(w http.ResponseWriter, r *http.Request) {
		f.list(w, r, func(fr fakeRepo) []build.RefInfo { return fr.tags })
	})
	mux.HandleFunc("POST /repos/{owner}/{repo}/statuses/{sha}", f.createStatus)
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		f.requests[r.Method+" "+r.URL.Path]++
		f.auth = append(f.auth, r.Header.Get("Authorization"))
		until, block := f.rateLimitedUntil, f.block
		f.mu.Unlock()
		if block != nil {
			<-block
		}
		if !until.IsZero() {
			w.Header().Set("X-RateLimit-Limit", "60")
			w.Header().Set("X-RateLimit-Remaining", "0")
			w.Header().Set("X-RateLimit-Used", "60")
			w.Header().Set("X-RateLimit-Reset", strconv.FormatInt(until.Unix(), 10))
			writeJSON(w, http.StatusForbidden, map[string]string{
				"message":           "API rate limit exceeded for 192.0.2.1.",
				"documentation_url": "https://docs.github.com/rest/overview/resources-in-the-rest-api#rate-limiting",
			})
			return
		}
		mux.ServeHTTP(w, r)
	}))
	t.Cleanup(f.srv.Close)
	return f
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func notFound(w http.ResponseWriter) {
	writeJSON(w, http.StatusNotFound, map[string]string{
		"message": "Not Found", "documentation_url": "https://docs.github.com/rest/branches/branches#list-branches",
	})
}

// list serves one page (page, per_page) and a Link header like GitHub's.
func (f *fakeGitHub) list(w http.ResponseWriter, r *http.Request, refs func(fakeRepo) []build.RefInfo) {
	f.mu.Lock()
	repo, ok := f.repos[r.PathValue("owner")+"/"+r.PathValue("repo")]
	f.mu.Unlock()
	if !ok {
		notFound(w)
		return
	}
	all := refs(repo)
	page, _ := strconv.Atoi(r.URL.Query().Get("page"))
	per, _ := strconv.Atoi(r.URL.Query().Get("per_page"))
	if page < 1 {
		page = 1
	}
	if per < 1 {
		per = 30
	}
	last := max(1, (len(all)+per-1)/per)
	var links []string
	link := func(p int, rel string) {
		u := *r.URL
		q := u.Query()
		q.Set("page", strconv.Itoa(p))
		u.RawQuery = q.Encode()
		links = append(links, fmt.Sprintf(`<%s%s>; rel="%s"`, f.srv.URL, u.RequestURI(), rel))
	}
	if page < last {
		link(page+1, "next")
		link(last, "last")
	}
	if page > 1 {
		link(page-1, "prev")
		link(1, "first")
	}
	if len(links) > 0 {
		w.Header().Set("Link", strings.Join(links, ", "))
	}
	out := []map[string]any{}
	for i := (page - 1) * per; i < min(page*per, len(all)); i++ {
		out = append(out, map[string]any{
			"name":   all[i].Name,
			"commit": map[string]any{"sha": all[i].SHA, "url": f.srv.URL + "/repos/x/y/commits/" + all[i].SHA},
		})
	}
	writeJSON(w, http.StatusOK, out)
}

func (f *fakeGitHub) createStatus(w http.ResponseWriter, r *http.Request) {
	var in struct {
		State       string `json:"state"`
		Context     string `json:"context"`
		Description string `json:"description"`
		TargetURL   string `json:"target_url"`
	}
	if err := json.NewDecoder(r.Body).Decode(&in); err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"message": "Problems parsing JSON"})
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail5xx > 0 {
		f.fail5xx--
		writeJSON(w, http.StatusBadGateway, map[string]string{"message": "Server Error"})
		return
	}
	key := r.PathValue("owner") + "/" + r.PathValue("repo")
	if _, ok := f.repos[key]; !ok {
		notFound(w)
		return
	}
	f.statuses = append(f.statuses, postedStatus{Repo: key, SHA: r.PathValue("sha"),
		State: in.State, Context: in.Context, Description: in.Description, TargetURL: in.TargetURL})
	writeJSON(w, http.StatusCreated, map[string]any{"id": len(f.statuses), "state": in.State, "context": in.Context})
}

func (f *fakeGitHub) count(method, path string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.requests[method+" "+path]
}

func (f *fakeGitHub) total() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, c := range f.requests {
		n += c
	}
	return n
}

func (f *fakeGitHub) set(fn func(f *fakeGitHub)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f)
}

func refs(prefix string, n int) []build.RefInfo {
	out := make([]build.RefInfo, n)
	for i := range out {
		out[i] = build.RefInfo{Name: fmt.Sprintf("%s%03d", prefix, i), SHA: fmt.Sprintf("%040x", i+1)}
	}
	return out
}

func newRefs(t *testing.T, gh *fakeGitHub, tok string, clock *buildtest.Clock) *github.Refs {
	t.Helper()
	r, err := github.NewRefs(github.Config{BaseURL: gh.srv.URL, Token: tok, Timeout: 5 * time.Second}, 30*time.Second, clock.Now)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestRefsListsEveryPage(t *testing.T) {
	t.Parallel()
	for _, tok := range []string{"", token} {
		t.Run(fmt.Sprintf("token=%t", tok != ""), func(t *testing.T) {
			t.Parallel()
			gh := newFakeGitHub(t)
			want := fakeRepo{branches: refs("branch-", 250), tags: refs("v1.", 120)}
			gh.repos["ae6rt/dynamodb-lab"] = want
			r := newRefs(t, gh, tok, buildtest.NewClock(time.Time{}))
			branches, tags, err := r.Refs(context.Background(), "ae6rt", "dynamodb-lab")
			if err != nil {
				t.Fatalf("Refs: %v", err)
			}
			if diff := cmp.Diff(want.branches, branches); diff != "" {
				t.Errorf("branches (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(want.tags, tags); diff != "" {
				t.Errorf("tags (-want +got):\n%s", diff)
			}
			if got := gh.count("GET", "/repos/ae6rt/dynamodb-lab/branches"); got != 3 {
				t.Errorf("branch pages fetched = %d, want 3", got)
			}
			if got := gh.count("GET", "/repos/ae6rt/dynamodb-lab/tags"); got != 2 {
				t.Errorf("tag pages fetched = %d, want 2", got)
			}
			wantAuth := ""
			if tok != "" {
				wantAuth = "Bearer " + tok
			}
			for _, got := range gh.auth {
				if got != wantAuth {
					t.Fatalf("Authorization = %q, want %q", got, wantAuth)
				}
			}
		})
	}
}

func TestRefsEmptyRepository(t *testing.T) {
	t.Parallel()
	gh := newFakeGitHub(t)
	gh.repos["decap-ci/empty"] = fakeRepo{}
	branches, tags, err := newRefs(t, gh, "", buildtest.NewClock(time.Time{})).Refs(context.Background(), "decap-ci", "empty")
	if err != nil {
		t.Fatal(err)
	}
	// Empty, not nil: the API answers [] rather than null.
	if branches == nil || tags == nil || len(branches)+len(tags) != 0 {
		t.Errorf("Refs = %#v, %#v, want two empty slices", branches, tags)
	}
}

func TestRefsCachesForTTL(t *testing.T) {
	t.Parallel()
	gh := newFakeGitHub(t)
	gh.repos["decap-ci/hello"] = fakeRepo{branches: refs("b", 2), tags: refs("t", 1)}
	clock := buildtest.NewClock(time.Time{})
	r := newRefs(t, gh, "", clock)
	ctx := context.Background()
	get := func() []build.RefInfo {
		t.Helper()
		b, _, err := r.Refs(ctx, "decap-ci", "hello")
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	first := get()
	first[0].Name = "scribbled on by the caller"
	clock.Advance(29 * time.Second)
	if got := get(); got[0].Name != "b000" {
		t.Errorf("cached listing changed by an earlier caller: %v", got)
	}
	// The names differ only in case: GitHub's names are case-insensitive.
	if _, _, err := r.Refs(ctx, "Decap-CI", "Hello"); err != nil {
		t.Fatal(err)
	}
	if n := gh.total(); n != 2 {
		t.Fatalf("requests within the TTL = %d, want 2 (one listing)", n)
	}
	gh.set(func(f *fakeGitHub) { f.repos["decap-ci/hello"] = fakeRepo{branches: refs("new", 1)} })
	clock.Advance(2 * time.Second)
	if got := get(); len(got) != 1 || got[0].Name != "new000" {
		t.Errorf("after the TTL got %v, want the new listing", got)
	}
	if n := gh.total(); n != 4 {
		t.Errorf("requests after the TTL = %d, want 4 (two listings)", n)
	}
}

func TestRefsConcurrentCallersShareOneListing(t *testing.T) {
	t.Parallel()
	gh := newFakeGitHub(t)
	gh.repos["decap-ci/hello"] = fakeRepo{branches: refs("b", 3)}
	block := make(chan struct{})
	gh.block = block
	r := newRefs(t, gh, "", buildtest.NewClock(time.Time{}))
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Go(func() {
			b, _, err := r.Refs(context.Background(), "decap-ci", "hello")
			if err == nil && len(b) != 3 {
				err = fmt.Errorf("got %d branches, want 3", len(b))
			}
			errs <- err
		})
	}
	// Wait until the one listing has reached the server, then let it go.
	for gh.total() == 0 {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(20 * time.Millisecond)
	close(block)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if n := gh.total(); n != 2 {
		t.Errorf("requests = %d, want 2 (one listing for 8 callers)", n)
	}
}

func TestRefsCallerGivesUp(t *testing.T) {
	t.Parallel()
	gh := newFakeGitHub(t)
	gh.repos["decap-ci/hello"] = fakeRepo{branches: refs("b", 1)}
	block := make(chan struct{})
	gh.block = block
	r := newRefs(t, gh, "", buildtest.NewClock(time.Time{}))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, _, err := r.Refs(ctx, "decap-ci", "hello"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Refs with an ending context: got %v, want context.DeadlineExceeded", err)
	}
	gh.set(func(f *fakeGitHub) { f.block = nil })
	close(block)
	// The abandoned listing still completes and fills the cache.
	if b, _, err := r.Refs(context.Background(), "decap-ci", "hello"); err != nil || len(b) != 1 {
		t.Fatalf("Refs after the abandoned call = %v, %v", b, err)
	}
	if n := gh.total(); n != 2 {
		t.Errorf("requests = %d, want 2 (the abandoned listing was reused)", n)
	}
}

func TestRefsErrors(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	t.Run("unknown repository", func(t *testing.T) {
		t.Parallel()
		gh := newFakeGitHub(t)
		_, _, err := newRefs(t, gh, "", buildtest.NewClock(time.Time{})).Refs(ctx, "decap-ci", "nothing")
		if !errors.Is(err, build.ErrNotFound) {
			t.Fatalf("got %v, want build.ErrNotFound", err)
		}
		if !strings.Contains(err.Error(), "decap-ci/nothing") {
			t.Errorf("error %q does not name the repository", err)
		}
	})
	t.Run("hostile names", func(t *testing.T) {
		t.Parallel()
		gh := newFakeGitHub(t)
		r := newRefs(t, gh, "", buildtest.NewClock(time.Time{}))
		for _, tp := range [][2]string{{"..", "x"}, {"a", "../../user"}, {"", "x"}, {"a", "b/c"}} {
			if _, _, err := r.Refs(ctx, tp[0], tp[1]); !errors.Is(err, build.ErrInvalid) {
				t.Errorf("Refs(%q, %q) = %v, want build.ErrInvalid", tp[0], tp[1], err)
			}
		}
		if n := gh.total(); n != 0 {
			t.Errorf("requests = %d, want none", n)
		}
	})
	t.Run("rate limited without a cached listing", func(t *testing.T) {
		t.Parallel()
		gh := newFakeGitHub(t)
		gh.repos["decap-ci/hello"] = fakeRepo{}
		reset := time.Now().Add(17 * time.Minute).Truncate(time.Second)
		gh.rateLimitedUntil = reset
		_, _, err := newRefs(t, gh, token, buildtest.NewClock(time.Now())).Refs(ctx, "decap-ci", "hello")
		if !errors.Is(err, build.ErrUnavailable) {
			t.Fatalf("got %v, want build.ErrUnavailable", err)
		}
		for _, want := range []string{"rate limit", reset.UTC().Format(time.RFC3339), "decap-ci/hello"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error %q does not contain %q", err, want)
			}
		}
		if strings.Contains(err.Error(), token) {
			t.Errorf("error %q shows the token", err)
		}
	})
	t.Run("rate limited with a stale listing", func(t *testing.T) {
		t.Parallel()
		gh := newFakeGitHub(t)
		gh.repos["decap-ci/hello"] = fakeRepo{branches: refs("b", 2), tags: refs("t", 1)}
		clock := buildtest.NewClock(time.Time{})
		r := newRefs(t, gh, "", clock)
		wantB, wantT, err := r.Refs(ctx, "decap-ci", "hello")
		if err != nil {
			t.Fatal(err)
		}
		clock.Advance(time.Hour)
		gh.set(func(f *fakeGitHub) { f.rateLimitedUntil = time.Now().Add(time.Hour) })
		b, tg, err := r.Refs(ctx, "decap-ci", "hello")
		if err != nil {
			t.Fatalf("rate limited with a cached listing: %v, want the cached listing", err)
		}
		if diff := cmp.Diff(wantB, b); diff != "" {
			t.Errorf("branches (-want +got):\n%s", diff)
		}
		if diff := cmp.Diff(wantT, tg); diff != "" {
			t.Errorf("tags (-want +got):\n%s", diff)
		}
		if n := gh.count("GET", "/repos/decap-ci/hello/branches"); n != 2 {
			t.Errorf("branch requests = %d, want 2 (GitHub was asked again after the TTL)", n)
		}
	})
	t.Run("unreachable", func(t *testing.T) {
		t.Parallel()
		gh := newFakeGitHub(t)
		gh.srv.Close()
		_, _, err := newRefs(t, gh, "", buildtest.NewClock(time.Time{})).Refs(ctx, "decap-ci", "hello")
		if !errors.Is(err, build.ErrUnavailable) {
			t.Fatalf("got %v, want build.ErrUnavailable", err)
		}
	})
}

func TestStatuses(t *testing.T) {
	t.Parallel()
	const id = build.ID("0193dd6e-7a3b-7c1d-9e2f-0a1b2c3d4e5f")
	const sha = "6113728f27ae82c7b1a177c8d03f9e96e0adf246"
	start := time.Date(2026, 11, 27, 3, 0, 0, 0, time.UTC)
	rec := func(status build.Status, mutate ...func(*build.Record)) build.Record {
		r := build.Record{
			BuildID: id, Team: "ae6rt", Project: "dynamodb-lab", Ref: "main", RefType: build.Branch,
			SHA: sha, Trigger: build.TriggerPush, Status: status, QueuedAt: start,
		}
		if status.Final() {
			r.StartedAt, r.FinishedAt = start.Add(time.Second), start.Add(43*time.Second)
		}
		for _, m := range mutate {
			m(&r)
		}
		return r
	}
	two := 2
	tests := []struct {
		name   string
		queued bool // BuildQueued instead of BuildEnded
		rec    build.Record
		token  string
		want   []postedStatus
	}{
		{"queued push", true, rec(build.StatusQueued), token, []postedStatus{{
			State: "pending", Description: "build 0193dd6e… queued",
		}}},
		{"succeeded", false, rec(build.StatusSucceeded), token, []postedStatus{{
			State: "success", Description: "build 0193dd6e… succeeded in 42s",
		}}},
		{"failed", false, rec(build.StatusFailed, func(r *build.Record) { r.ExitCode = &two }), token, []postedStatus{{
			State: "failure", Description: "build 0193dd6e… failed (exit code 2) after 42s",
		}}},
		{"timed out", false, rec(build.StatusTimedOut), token, []postedStatus{{
			State: "error", Description: "build 0193dd6e… timed out after 42s",
		}}},
		{"cancelled", false, rec(build.StatusCancelled), token, []postedStatus{{
			State: "error", Description: "build 0193dd6e… was cancelled",
		}}},
		{"errored", false, rec(build.StatusErrored, func(r *build.Record) { r.Reason = "image pull failed: " + strings.Repeat("x", 200) }), token, []postedStatus{{
			State: "error", Description: string([]rune("build 0193dd6e… errored: image pull failed: " + strings.Repeat("x", 200))[:139]) + "…",
		}}},
		{"expired", false, rec(build.StatusExpired, func(r *build.Record) { r.StartedAt, r.FinishedAt = time.Time{}, time.Time{} }), token, []postedStatus{{
			State: "error", Description: "build 0193dd6e… expired before it ran",
		}}},
		{"api build with a sha", true, rec(build.StatusQueued, func(r *build.Record) { r.Trigger = build.TriggerAPI }), token, []postedStatus{{
			State: "pending", Description: "build 0193dd6e… queued",
		}}},
		{"skipped", false, rec(build.StatusSkipped), token, nil},
		{"no sha", true, rec(build.StatusQueued, func(r *build.Record) { r.SHA = "" }), token, nil},
		{"no token", false, rec(build.StatusSucceeded), "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			gh := newFakeGitHub(t)
			gh.repos["ae6rt/dynamodb-lab"] = fakeRepo{}
			s, err := github.NewStatuses(github.Config{BaseURL: gh.srv.URL, Token: tt.token, PublicURL: "https://decap.example.com/"}, time.Millisecond)
			if err != nil {
				t.Fatal(err)
			}
			if tt.queued {
				err = s.BuildQueued(context.Background(), tt.rec)
			} else {
				err = s.BuildEnded(context.Background(), tt.rec)
			}
			if err != nil {
				t.Fatalf("got %v, want no error", err)
			}
			for i := range tt.want {
				tt.want[i].Repo, tt.want[i].SHA = "ae6rt/dynamodb-lab", sha
				tt.want[i].Context = "decap/dynamodb-lab"
				tt.want[i].TargetURL = "https://decap.example.com/ui/builds/" + string(id)
			}
			if diff := cmp.Diff(tt.want, gh.statuses); diff != "" {
				t.Errorf("posted statuses (-want +got):\n%s", diff)
			}
			if len(tt.want) == 0 && gh.total() != 0 {
				t.Errorf("requests = %d, want none", gh.total())
			}
			if len(tt.want) > 0 && gh.auth[0] != "Bearer "+token {
				t.Errorf("Authorization = %q, want the token", gh.auth[0])
			}
		})
	}
}

func TestStatusesErrors(t *testing.T) {
	t.Parallel()
	rec := build.Record{
		BuildID: "0193dd6e-7a3b-7c1d-9e2f-0a1b2c3d4e5f", Team: "ae6rt", Project: "dynamodb-lab", Ref: "main",
		SHA: "6113728f27ae82c7b1a177c8d03f9e96e0adf246", Trigger: build.TriggerPush, Status: build.StatusSucceeded,
	}
	tests := []struct {
		name      string
		setup     func(*fakeGitHub)
		rec       func(build.Record) build.Record
		wantErr   error // nil: success
		wantPosts int   // POST requests that reached the server
	}{
		{"one 5xx is retried", func(f *fakeGitHub) { f.fail5xx = 1 }, nil, nil, 2},
		{"two 5xx give up", func(f *fakeGitHub) { f.fail5xx = 5 }, nil, build.ErrUnavailable, 2},
		{"unknown repository", func(f *fakeGitHub) { delete(f.repos, "ae6rt/dynamodb-lab") }, nil, build.ErrNotFound, 1},
		{"rate limited", func(f *fakeGitHub) { f.rateLimitedUntil = time.Now().Add(time.Hour) }, nil, build.ErrUnavailable, 1},
		{"not ended", nil, func(r build.Record) build.Record { r.Status = build.StatusRunning; return r }, build.ErrInvalid, 0},
		{"hostile team", nil, func(r build.Record) build.Record { r.Team = "../x"; return r }, build.ErrInvalid, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			gh := newFakeGitHub(t)
			gh.repos["ae6rt/dynamodb-lab"] = fakeRepo{}
			if tt.setup != nil {
				gh.set(tt.setup)
			}
			s, err := github.NewStatuses(github.Config{BaseURL: gh.srv.URL, Token: token}, time.Millisecond)
			if err != nil {
				t.Fatal(err)
			}
			r := rec
			if tt.rec != nil {
				r = tt.rec(r)
			}
			err = s.BuildEnded(context.Background(), r)
			switch {
			case tt.wantErr == nil && err != nil:
				t.Fatalf("got %v, want no error", err)
			case tt.wantErr != nil && !errors.Is(err, tt.wantErr):
				t.Fatalf("got %v, want %v", err, tt.wantErr)
			}
			if err != nil && strings.Contains(err.Error(), token) {
				t.Errorf("error %q shows the token", err)
			}
			if got := gh.count("POST", "/repos/ae6rt/dynamodb-lab/statuses/"+rec.SHA); got != tt.wantPosts {
				t.Errorf("status posts = %d, want %d", got, tt.wantPosts)
			}
		})
	}
}
