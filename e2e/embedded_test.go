package e2e_test

import (
	"context"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/decap-ci/decap/internal/proctest"
)

// TestEmbeddedBuild runs the services as `make run` builds them (make
// build-embedded: -tags decap_embedded). They link neither the AWS SDK's
// services nor client-go, run a push to succeeded on the embedded
// default, and refuse the aws backend and the kubernetes executor at
// start, naming the tag.
func TestEmbeddedBuild(t *testing.T) {
	t.Parallel()
	requireE2E(t)
	bin := t.TempDir()
	if err := proctest.BuildEmbeddedBinaries(moduleRoot, bin); err != nil {
		t.Fatal(err)
	}
	for _, service := range []string{"ingest", "dispatcher", "reaper"} {
		out, err := exec.Command("go", "version", "-m", filepath.Join(bin, service)).Output()
		if err != nil {
			t.Fatalf("go version -m %s: %v", service, err)
		}
		for _, heavy := range []string{"k8s.io/client-go", "github.com/aws/aws-sdk-go-v2/service/"} {
			if strings.Contains(string(out), heavy) {
				t.Errorf("the embedded %s links %s", service, heavy)
			}
		}
	}

	payload, err := os.ReadFile(filepath.Join(moduleRoot, "internal", "ingest", "testdata", "github-webhooks", "push-with-new-branch.json"))
	if err != nil {
		t.Fatal(err)
	}
	c := proctest.NewCluster(t, proctest.Options{Bin: bin, WebhookSecret: webhookSecret, APIToken: apiToken,
		Scripts: filepath.Join(moduleRoot, "examples", "build-scripts"), AlwaysDump: os.Getenv("E2E_DUMP") != ""})
	c.Start("reaper")
	c.Start("dispatcher")
	c.Start("ingest")
	status, ans, body := c.SignedHook("push", proctest.NewDelivery(), payload)
	if status != http.StatusAccepted || len(ans.Builds) != 1 {
		t.Fatalf("signed push: got %d %s, want 202 with one build", status, body)
	}
	c.WaitSucceeded(ans.Builds[0].ID)

	for _, tc := range []struct {
		service string
		env     []string
		want    string
	}{
		{"ingest", []string{"DECAP_BACKEND=aws", "DECAP_PREFIX=embedded", "AWS_REGION=us-east-1"}, "DECAP_BACKEND=aws: this program was built for the embedded default only"},
		{"dispatcher", []string{"DECAP_EXECUTOR=kubernetes"}, "DECAP_EXECUTOR=kubernetes (which needs DECAP_BACKEND=aws): this program was built for the embedded default only"},
	} {
		ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
		cmd := exec.CommandContext(ctx, filepath.Join(bin, tc.service))
		cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir(),
			"DECAP_DATA_DIR=" + t.TempDir(), "DECAP_BUILD_SCRIPTS=" + filepath.Join(moduleRoot, "examples", "build-scripts"),
			"DECAP_ADDR=127.0.0.1:0", "DECAP_DISPATCHER_ADDR=127.0.0.1:0",
			"DECAP_GITHUB_WEBHOOK_SECRET=" + webhookSecret, "DECAP_API_TOKEN=" + apiToken}, tc.env...)
		out, err := cmd.CombinedOutput()
		cancel()
		if err == nil || !strings.Contains(string(out), tc.want) || !strings.Contains(string(out), "decap_embedded") {
			t.Errorf("embedded %s with %v: %v, output:\n%s\nwant a failure saying %q", tc.service, tc.env, err, out, tc.want)
		}
	}
}
