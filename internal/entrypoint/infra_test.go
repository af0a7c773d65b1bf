package entrypoint_test

import (
	"context"
	"testing"

	"github.com/decap-ci/decap/internal/build"
	"github.com/decap-ci/decap/internal/entrypoint"
)

func TestResultInfra(t *testing.T) {
	t.Parallel()
	code := func(n int) *int { return &n }
	keys := func(r entrypoint.Result) entrypoint.Result {
		r.LogKey, r.ArtifactsKey = "logs/x/console.log.gz", "artifacts/x/artifacts.tar.gz"
		return r
	}
	tests := []struct {
		name string
		res  entrypoint.Result
		want build.InfraCause
	}{
		{"succeeded", keys(entrypoint.Result{Status: build.StatusSucceeded, ExitCode: code(0)}), ""},
		{"script failed", keys(entrypoint.Result{Status: build.StatusFailed, ExitCode: code(3), Reason: "exit code 3"}), ""},
		{"script exited 137 itself", keys(entrypoint.Result{Status: build.StatusFailed, ExitCode: code(137), Reason: "exit code 137"}), ""},
		{"script killed", keys(entrypoint.Result{Status: build.StatusFailed, ExitCode: code(137), Reason: "killed by signal 9 (killed)"}), build.InfraKilled},
		{"script terminated, upload failed too", entrypoint.Result{Status: build.StatusFailed, ExitCode: code(143), Reason: "killed by signal 15 (terminated); upload log: 503"}, build.InfraKilled},
		{"script crashed", keys(entrypoint.Result{Status: build.StatusFailed, ExitCode: code(139), Reason: "killed by signal 11 (segmentation fault)"}), ""},
		{"script succeeded, log upload failed", entrypoint.Result{Status: build.StatusErrored, ExitCode: code(0), ArtifactsKey: "a", Reason: "upload log: 503"}, build.InfraUpload},
		{"script succeeded, artifacts upload failed", entrypoint.Result{Status: build.StatusErrored, ExitCode: code(0), LogKey: "l", Reason: "upload artifacts: 503"}, build.InfraUpload},
		{"script failed, upload failed", entrypoint.Result{Status: build.StatusFailed, ExitCode: code(1), Reason: "exit code 1; upload log: 503"}, ""},
		{"build.sh missing", entrypoint.Result{Status: build.StatusErrored, Reason: "build.sh not found at a/b/build.sh"}, ""},
		{"timed out", keys(entrypoint.Result{Status: build.StatusTimedOut, ExitCode: code(143), Reason: "deadline of 1s exceeded"}), ""},
		{"cancelled", keys(entrypoint.Result{Status: build.StatusCancelled, ExitCode: code(143), Reason: "cancelled"}), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := tt.res.Infra(); got != tt.want {
				t.Errorf("Infra() = %q, want %q", got, tt.want)
			}
		})
	}
}

// TestRunKilledScriptIsInfra runs a script that is killed by SIGKILL (as
// by a person or the OOM killer): Run's result reads as such, which pins
// Infra to the words Run uses.
func TestRunKilledScriptIsInfra(t *testing.T) {
	t.Parallel()
	cfg, _ := setup(t, "echo about to be killed\nkill -KILL $$\n")
	res := entrypoint.Run(context.Background(), cfg)
	if res.Status != build.StatusFailed || res.Infra() != build.InfraKilled {
		t.Fatalf("result %+v: status %s, Infra() %q; want failed, %q", res, res.Status, res.Infra(), build.InfraKilled)
	}
	cfg, _ = setup(t, "exit 137\n")
	if res := entrypoint.Run(context.Background(), cfg); res.Status != build.StatusFailed || res.Infra() != "" {
		t.Fatalf("result %+v: Infra() %q; want none: exit 137 is the script's own", res, res.Infra())
	}
}
