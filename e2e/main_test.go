// Package e2e_test runs the embedded default as real processes — ingest,
// dispatchers and reapers built from cmd/, with decap-entrypoint running
// every build as a detached local process — and checks the invariants of
// DESIGN.md from the outside: through signed webhooks, the JSON API, the
// data directory's run/ layout and a trace that the build scripts write.
// The tests in aws_test.go run the same processes on the AWS backend
// against the emulator at AWS_ENDPOINT_URL (skipped without it).
//
// The tests need Linux (the local executor reads /proc) and bash. They build
// the four binaries once, in TestMain, and are skipped with -short. A failed
// test logs its services' logs, the trace and what is left in the run
// directory; E2E_DUMP=1 logs them for passing tests too.
package e2e_test

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"testing"

	"github.com/decap-ci/decap/internal/proctest"
)

// Secrets of every cluster; only the tests know them.
const (
	webhookSecret = "e2e-webhook-secret-2f7a9c1e5b3d8a6f"
	apiToken      = "e2e-api-token-8c2e6a4f1d9b3e7a5c0f"
)

// Set once by TestMain, read-only afterwards.
var (
	// binDir holds ingest, dispatcher, reaper and decap-entrypoint.
	binDir string
	// moduleRoot is the directory of the module's go.mod.
	moduleRoot string
	// skipReason, when set, is why every test is skipped.
	skipReason string
)

func TestMain(m *testing.M) {
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	flag.Parse()
	switch {
	case testing.Short():
		skipReason = "end-to-end tests start real processes; skipped with -short"
	case runtime.GOOS != "linux":
		skipReason = "end-to-end tests need Linux: the local executor reads /proc"
	default:
		if _, err := exec.LookPath("bash"); err != nil {
			skipReason = "end-to-end tests need bash in PATH to run build scripts: " + err.Error()
		}
	}
	if skipReason != "" {
		return m.Run()
	}

	root, err := proctest.ModuleRoot()
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	moduleRoot = root
	dir, err := os.MkdirTemp("", "decap-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e: create binary directory:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	if err := proctest.BuildBinaries(root, dir); err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	binDir = dir
	return m.Run()
}

// requireE2E skips t when the end-to-end tests cannot run here.
func requireE2E(t *testing.T) {
	t.Helper()
	if skipReason != "" {
		t.Skip(skipReason)
	}
}

// newCluster prepares a cluster of the binaries TestMain built, with the
// secrets above (opts.Env may override them), after requireE2E; see
// proctest.NewCluster. E2E_DUMP=1 logs the dumps of passing tests too.
func newCluster(t *testing.T, opts proctest.Options) *proctest.Cluster {
	t.Helper()
	requireE2E(t)
	opts.Bin = binDir
	opts.WebhookSecret = webhookSecret
	if opts.APIToken == "" {
		opts.APIToken = apiToken
	}
	opts.AlwaysDump = os.Getenv("E2E_DUMP") != ""
	return proctest.NewCluster(t, opts)
}
