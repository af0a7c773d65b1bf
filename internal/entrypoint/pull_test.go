package entrypoint_test

import (
	"strings"
	"testing"

	"github.com/decap-ci/decap/internal/build"
	"github.com/decap-ci/decap/internal/entrypoint"
)

// TestPullRequestVariables checks what a pull request's build sees: the
// PULL_REQUEST_* variables of its request, and none that its environment
// brought along (a branch's build has none at all).
func TestPullRequestVariables(t *testing.T) {
	t.Parallel()
	script := `env | grep '^PULL_REQUEST_' | sort; echo "sha $COMMIT_SHA"`
	forged := []string{"PULL_REQUEST_TRUSTED=true", "PULL_REQUEST_NUMBER=99", "PULL_REQUEST_REF=refs/heads/main"}
	for _, tt := range []struct {
		name string
		pull *build.PullRequest
		want []string
	}{
		{"fork", &build.PullRequest{Number: 7, BaseRef: "main", HeadRef: "feature/x", HeadRepo: "octocat/widget",
			HeadSHA: "0123456789abcdef0123456789abcdef01234567", ApprovedBy: "acme-owner"}, []string{
			"PULL_REQUEST_BASE_REF=main\nPULL_REQUEST_HEAD_REF=feature/x\nPULL_REQUEST_HEAD_REPO=octocat/widget\n" +
				"PULL_REQUEST_NUMBER=7\nPULL_REQUEST_REF=refs/pull/7/head\nPULL_REQUEST_TRUSTED=false\n",
			"sha 0123456789abcdef0123456789abcdef01234567\n",
		}},
		{"branch", nil, []string{"decap: build.sh", "sha 0123456789abcdef0123456789abcdef01234567\n"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg, up := setup(t, script)
			cfg.PullRequest = tt.pull
			if tt.pull != nil {
				cfg.Ref = tt.pull.Ref()
			}
			cfg.Env = append(cfg.Env, forged...)
			res := entrypoint.Run(t.Context(), cfg)
			if res.Status != build.StatusSucceeded {
				t.Fatalf("Run = %+v, want succeeded", res)
			}
			log := up.gunzip(t, build.LogKey(testID))
			for _, want := range tt.want {
				if !strings.Contains(log, want) {
					t.Errorf("console log lacks %q; log:\n%s", want, log)
				}
			}
			for _, f := range forged {
				if strings.Contains(log, f) {
					t.Errorf("the build saw %s from the entrypoint's environment; log:\n%s", f, log)
				}
			}
		})
	}
}
