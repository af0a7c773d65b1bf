package github_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/decap-ci/decap/internal/build"
	"github.com/decap-ci/decap/internal/github"
)

// TestPullRequestWaiting checks the status of a pull request's head that
// waits for approval: pending, with the builds' context (its build
// replaces it), linking to the project's page.
func TestPullRequestWaiting(t *testing.T) {
	t.Parallel()
	p := build.PullRequestState{Team: "Codertocat", Project: "Hello-World", Number: 2, BaseRef: "master", HeadRef: "changes",
		HeadRepo: "octocat/Hello-World", HeadSHA: "ec26c3e57ca3a959ca5aad62de7213c562f8c821", State: build.PullWaiting, Version: 1}
	for _, tt := range []struct {
		name  string
		token string
		want  []postedStatus
	}{
		{"with a token", token, []postedStatus{{
			Repo: "Codertocat/Hello-World", SHA: p.HeadSHA, State: "pending", Context: "decap/Hello-World",
			Description: "waiting for approval: an owner, member or collaborator comments /ok-to-test",
			TargetURL:   "https://decap.example.com/ui/projects/Codertocat/Hello-World#pull-2",
		}}},
		{"without", "", nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			gh := newFakeGitHub(t)
			gh.repos["Codertocat/Hello-World"] = fakeRepo{}
			s, err := github.NewStatuses(github.Config{BaseURL: gh.srv.URL, Token: tt.token, PublicURL: "https://decap.example.com/"}, time.Millisecond)
			if err != nil {
				t.Fatal(err)
			}
			if err := s.PullRequestWaiting(context.Background(), p); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, gh.statuses); diff != "" {
				t.Errorf("posted statuses (-want +got):\n%s", diff)
			}
		})
	}
}
