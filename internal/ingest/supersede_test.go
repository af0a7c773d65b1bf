package ingest_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/decap-ci/decap/internal/build"
)

// pushOf is a push payload of owner/repo's ref at commit sha.
func pushOf(owner, repo, ref, sha string) []byte {
	b, _ := json.Marshal(map[string]any{
		"ref": ref, "after": sha, "deleted": false,
		"repository": map[string]any{"name": repo, "owner": map[string]any{"login": owner}},
		"pusher":     map[string]any{"name": "someone"},
	})
	return b
}

// push sends a signed push of decap-ci/sup's ref at the n-th commit and
// returns the build ID ingest answered with.
func (f *fixture) push(t *testing.T, ref string, n int) build.ID {
	t.Helper()
	sha := fmt.Sprintf("%040x", n+1)
	w := f.do(hook("push", fmt.Sprintf("delivery-%s-%d", ref, n), pushOf("decap-ci", "sup", "refs/heads/"+ref, sha)))
	if w.Code != http.StatusAccepted {
		t.Fatalf("push %d: status %d (%s), want 202", n, w.Code, w.Body)
	}
	var out struct{ Builds []struct{ ID build.ID } }
	if err := json.Unmarshal(w.Body.Bytes(), &out); err != nil || len(out.Builds) != 1 {
		t.Fatalf("push %d: answer %s: want one build", n, w.Body)
	}
	f.clock.Advance(time.Second)
	return out.Builds[0].ID
}

// statusOf returns "status" or "status by <id>" of each build, with
// ", stopping" for a running build asked to stop.
func (f *fixture) statusOf(t *testing.T, ids ...build.ID) []string {
	t.Helper()
	var out []string
	for _, id := range ids {
		r, err := f.records.Get(t.Context(), id)
		if err != nil {
			t.Fatal(err)
		}
		s := string(r.Status)
		if r.SupersededBy != "" {
			s += " by " + string(r.SupersededBy)
		}
		if r.Status == build.StatusRunning && !r.CancelRequestedAt.IsZero() {
			s += ", stopping"
		}
		out = append(out, s)
	}
	return out
}

// TestPushSupersedesOlderRequests sends three pushes of a branch: each
// ends the one before, still waiting, superseded by it; each is
// answered 202 and queued (the dispatcher drops a superseded request when
// it receives it). A ref that exceptRefRegex exempts and a project that
// turned supersede off keep every request.
func TestPushSupersedesOlderRequests(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name, descriptor, ref string
		superseded            bool
	}{
		{"default", `{"buildImage":"x"}`, "dev", true},
		{"exempt ref", `{"buildImage":"x","supersede":{"exceptRefRegex":"main|release/.*"}}`, "release/1", false},
		{"not exempt", `{"buildImage":"x","supersede":{"exceptRefRegex":"main|release/.*"}}`, "release", true},
		{"off", `{"buildImage":"x","supersede":{"queued":false}}`, "dev", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, nil)
			f.catalog.Set("decap-ci/sup", tc.descriptor)
			first, second := f.push(t, tc.ref, 0), f.push(t, tc.ref, 1)
			// The second deferred by the dispatcher meanwhile.
			rec, err := f.records.Get(t.Context(), second)
			if err != nil {
				t.Fatal(err)
			}
			if err := rec.Defer(f.clock.Now(), f.clock.Now().Add(time.Minute), "busy"); err != nil {
				t.Fatal(err)
			}
			if err := f.records.Save(t.Context(), rec); err != nil {
				t.Fatal(err)
			}
			third := f.push(t, tc.ref, 2)
			want := []string{"queued", "deferred", "queued"}
			if tc.superseded {
				want = []string{"superseded by " + string(second), "superseded by " + string(third), "queued"}
			}
			if diff := cmp.Diff(want, f.statusOf(t, first, second, third)); diff != "" {
				t.Errorf("statuses of the three pushes (-want +got):\n%s", diff)
			}
			if st, err := f.queue.Stats(t.Context()); err != nil || st.Visible != 3 {
				t.Errorf("queue holds %+v, %v; want all 3 requests", st, err)
			}
		})
	}
}

// TestSupersedeRunning checks supersede.running: a push asks the branch's
// running build to stop (the reaper stops it and records it superseded),
// unless the project leaves running builds alone (the default); a
// request a dispatcher is launching is left to the dispatcher either way.
func TestSupersedeRunning(t *testing.T) {
	t.Parallel()
	for _, running := range []bool{true, false} {
		t.Run(fmt.Sprintf("running %t", running), func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, nil)
			f.catalog.Set("decap-ci/sup", fmt.Sprintf(`{"buildImage":"x","supersede":{"running":%t}}`, running))
			first := f.push(t, "dev", 0)
			rec, err := f.records.Get(t.Context(), first)
			if err != nil {
				t.Fatal(err)
			}
			if err := rec.Start(f.clock.Now(), first.PodName(), "c0ffee"); err != nil {
				t.Fatal(err)
			}
			if err := f.records.Save(t.Context(), rec); err != nil {
				t.Fatal(err)
			}
			second := f.push(t, "dev", 1)
			// A dispatcher is launching the second (say, with the lock of
			// a first build that ended meanwhile).
			rec, err = f.records.Get(t.Context(), second)
			if err != nil {
				t.Fatal(err)
			}
			if err := rec.Launching(f.clock.Now(), 2, true); err != nil {
				t.Fatal(err)
			}
			if err := f.records.Save(t.Context(), rec); err != nil {
				t.Fatal(err)
			}
			third := f.push(t, "dev", 2)
			want := []string{"running", "queued", "queued"}
			if running {
				want[0] = "running by " + string(second) + ", stopping"
			}
			if diff := cmp.Diff(want, f.statusOf(t, first, second, third)); diff != "" {
				t.Errorf("statuses of running, launching, newest (-want +got):\n%s", diff)
			}
		})
	}
}

// TestAPIRequestSupersedesPush checks that a build asked for through the
// API supersedes a waiting push of the same branch, and that a
// "refs/heads/" ref names the same lock key.
func TestAPIRequestSupersedesPush(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil)
	f.catalog.Set("decap-ci/sup", `{"buildImage":"x"}`)
	pushed := f.push(t, "dev", 0)
	w := f.do(apiRequest(http.MethodPost, "/api/v1/projects/decap-ci/sup/builds", token, `{"ref":"refs/heads/dev"}`))
	if w.Code != http.StatusAccepted {
		t.Fatalf("status = %d (%s), want 202", w.Code, w.Body)
	}
	var out struct{ ID build.ID }
	if err := json.Unmarshal(w.Body.Bytes(), &out); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"superseded by " + string(out.ID), "queued"}, f.statusOf(t, pushed, out.ID)); diff != "" {
		t.Errorf("statuses of the push and the API request (-want +got):\n%s", diff)
	}
}

// TestRedeliverySupersedesNothing checks that a redelivered webhook, which
// is answered with its first build, supersedes nothing: only a new request
// does.
func TestRedeliverySupersedesNothing(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil)
	f.catalog.Set("decap-ci/sup", `{"buildImage":"x"}`)
	first, second := f.push(t, "dev", 0), f.push(t, "dev", 1)
	if diff := cmp.Diff([]string{"superseded by " + string(second), "queued"}, f.statusOf(t, first, second)); diff != "" {
		t.Fatalf("statuses (-want +got):\n%s", diff)
	}
	w := f.do(hook("push", "delivery-dev-0", pushOf("decap-ci", "sup", "refs/heads/dev", fmt.Sprintf("%040x", 1))))
	if w.Code != http.StatusAccepted {
		t.Fatalf("redelivery: status %d", w.Code)
	}
	if diff := cmp.Diff([]string{"superseded by " + string(second), "queued"}, f.statusOf(t, first, second)); diff != "" {
		t.Errorf("statuses after a redelivery of the first push (-want +got):\n%s", diff)
	}
}
