package browser_test

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/decap-ci/decap/internal/proctest"
)

// TestBrowserAWS runs the browser flow against the services on the aws
// backend (an emulator at AWS_ENDPOINT_URL, as the e2e AWS tests use): the
// same pages, and the same live checks, the build events reaching them
// through ingest's tail queue on the SNS topic (GET /api/v1/events; the
// pages polled before ingest had a tail on AWS).
func TestBrowserAWS(t *testing.T) {
	requireBrowser(t)
	endpoint := os.Getenv("AWS_ENDPOINT_URL")
	if endpoint == "" {
		t.Skip("AWS_ENDPOINT_URL not set: start moto (scripts/with-moto.sh) to run the browser flow on the aws backend")
	}
	if _, err := exec.LookPath("aws"); err != nil {
		t.Skipf("the AWS CLI (aws) is not on PATH, and aws-resources/create-world.sh needs it: %v", err)
	}
	prefix := "browser-" + proctest.RandomHex(4)
	awsEnv := []string{"AWS_ENDPOINT_URL=" + endpoint, "AWS_ACCESS_KEY_ID=test", "AWS_SECRET_ACCESS_KEY=test", "AWS_REGION=us-east-1"}
	// The scripts see this world only: none of the developer's AWS or
	// Decap settings.
	var scriptEnv []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "AWS_") && !strings.HasPrefix(kv, "DECAP_") {
			scriptEnv = append(scriptEnv, kv)
		}
	}
	scriptEnv = append(scriptEnv, awsEnv...)
	scriptEnv = append(scriptEnv, "DECAP_PREFIX="+prefix, "AWS_DEFAULT_REGION=us-east-1", "AWS_PAGER=", "CI=true")
	script := func(name string, args ...string) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, filepath.Join(moduleRoot, "aws-resources", name), args...)
		cmd.Env = scriptEnv
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Run(); err != nil {
			t.Errorf("%s for prefix %s: %v\n%s", name, prefix, err, out.String())
		}
	}
	// Registered first, so it runs last: after the services are gone.
	t.Cleanup(func() { script("destroy-world.sh", "--yes") })
	script("create-world.sh")
	if t.Failed() {
		t.FailNow()
	}

	binaries(t)
	env := append([]string{"DECAP_BACKEND=aws", "DECAP_PREFIX=" + prefix}, awsEnv...)
	c := proctest.NewCluster(t, proctest.Options{Bin: binDir, Scripts: writeScripts(t), Cap: 4, APIToken: apiToken, Env: env})
	for _, kind := range []string{"ingest", "dispatcher", "reaper"} {
		c.Start(kind)
	}
	runFlow(t, target{
		base:          c.URL(""),
		token:         apiToken,
		quick:         "browser/quick",
		slow:          "browser/slow",
		quickLastLine: "quick build: all done",
		artifactName:  "result.txt",
		slowLine:      "slow tick 3 of 240",
		shots:         filepath.Join(moduleRoot, "test-output", "browser-aws"),
		guarded:       true,
		badges:        true,
		live:          true,
		times:         true,
	})
}
