package dispatch_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/decap-ci/decap/internal/build"
	"github.com/decap-ci/decap/internal/buildtest"
	"github.com/decap-ci/decap/internal/dispatch"
)

func pullRequest(team, project string, trusted bool, approvedBy string, at time.Time) build.Request {
	const sha = "ec26c3e57ca3a959ca5aad62de7213c562f8c821"
	return build.Request{
		V: 1, BuildID: build.NewID(at), Team: team, Project: project, Ref: "pull/2", RefType: build.Pull, SHA: sha,
		Trigger: build.TriggerPullRequest, RequestedAt: at,
		PullRequest: &build.PullRequest{Number: 2, BaseRef: "main", HeadRef: "feature", HeadRepo: "octocat/Hello-World",
			HeadSHA: sha, Trusted: trusted, ApprovedBy: approvedBy},
	}
}

// TestDecidePullRequests checks that a dispatcher builds a pull request's
// request only as the project's descriptor says now: the catalog may have
// changed since ingest accepted it, and another producer's was never
// decided. The launched job keeps the pull request, its trust with it.
func TestDecidePullRequests(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tests := []struct {
		name       string
		desc       string
		trusted    bool
		approvedBy string
		want       dispatch.Action
		wantReason string
	}{
		{name: "trusted", desc: `{"buildImage":"x","pullRequests":{}}`, trusted: true, want: dispatch.Launched},
		{name: "approved fork", desc: `{"buildImage":"x","pullRequests":{}}`, approvedBy: "ae6rt", want: dispatch.Launched},
		{name: "fork, forks always", desc: `{"buildImage":"x","pullRequests":{"forks":"always"}}`, want: dispatch.Launched},
		{name: "unapproved fork", desc: `{"buildImage":"x","pullRequests":{}}`, want: dispatch.Dropped, wantReason: "nobody approved"},
		{name: "fork, forks never", desc: `{"buildImage":"x","pullRequests":{"forks":"never"}}`, approvedBy: "ae6rt", want: dispatch.Dropped,
			wantReason: "forks is never"},
		{name: "no pullRequests", desc: `{"buildImage":"x"}`, trusted: true, want: dispatch.Dropped, wantReason: "does not build pull requests"},
		{name: "other base branch", desc: `{"buildImage":"x","pullRequests":{"baseRefRegex":"release/.*"}}`, trusted: true,
			want: dispatch.Dropped, wantReason: `base branch "main" does not match`},
		// managedRefRegex filters pushes, not pull requests.
		{name: "managedRefRegex", desc: `{"buildImage":"x","managedRefRegex":"main","pullRequests":{}}`, trusted: true, want: dispatch.Launched},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			clock := buildtest.NewClock(t0)
			f := newFixture(2, clock)
			f.catalog.Set("octocat/Hello-World", tt.desc)
			req := pullRequest("octocat", "Hello-World", tt.trusted, tt.approvedBy, clock.Now())
			dec := f.dispatcher(nil).Decide(ctx, req, message(t, req))
			if dec.Action != tt.want {
				t.Fatalf("action = %v (%s), want %v", dec.Action, dec.Reason, tt.want)
			}
			rec := record(t, f, req.BuildID)
			if tt.want == dispatch.Dropped {
				if rec.Status != build.StatusSkipped || !strings.Contains(rec.Reason, tt.wantReason) {
					t.Errorf("record %s %q, want skipped with %q", rec.Status, rec.Reason, tt.wantReason)
				}
				return
			}
			job, ok := f.launcher.Job(req.BuildID)
			if !ok || job.Request.PullRequest == nil || job.Request.Untrusted() == tt.trusted {
				t.Errorf("launched job %+v: want the pull request kept, untrusted = %v", job.Request, !tt.trusted)
			}
		})
	}
}
