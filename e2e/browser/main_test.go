// Package browser_test drives the status UI in headless Chromium (through
// chromedp): sign in with the API token, request a build from a project's
// page, watch its log stream to the end, download its artifacts, and cancel
// a slow build from its page.
//
// TestBrowser runs that flow against the real services — ingest, dispatcher
// and reaper built from cmd/, builds run by decap-entrypoint — on loopback
// with a temporary data directory and a generated build-scripts directory.
// TestBrowserFakeAPI runs the same flow against the UI mounted on an echo
// server whose JSON API is a small in-process stand-in, so the pages' own
// behaviour is checked even where the services are not at hand.
//
// Both skip when no chromium (or chromium-browser) is in PATH, and with
// -short. Screenshots of every step are written to test-output/browser/ at
// the module root; with UPDATE_SCREENSHOTS=1, TestBrowser also copies the
// dashboard and build page to docs/screenshots/.
package browser_test

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"sync"
	"testing"

	"github.com/decap-ci/decap/internal/proctest"
)

// apiToken is the API token of the services and the fake API; only the
// tests know it.
const apiToken = "browser-test-api-token-4e8a2c6f0b1d"

// Set once by TestMain, read-only afterwards.
var (
	// chromium is the browser's path.
	chromium string
	// moduleRoot is the directory of the module's go.mod.
	moduleRoot string
	// skipReason, when set, is why every test is skipped.
	skipReason string
	// binDir receives the service binaries, built by the first test that
	// needs them (see binaries).
	binDir string
)

func TestMain(m *testing.M) {
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	flag.Parse()
	switch {
	case testing.Short():
		skipReason = "browser tests start Chromium and real processes; skipped with -short"
	case runtime.GOOS != "linux":
		skipReason = "browser tests need Linux: the local executor reads /proc"
	default:
		for _, name := range []string{"chromium", "chromium-browser"} {
			if p, err := exec.LookPath(name); err == nil {
				chromium = p
				break
			}
		}
		if chromium == "" {
			skipReason = "browser tests need chromium (or chromium-browser) in PATH; on Debian: apt-get install chromium"
		}
	}
	if skipReason != "" {
		return m.Run()
	}
	root, err := proctest.ModuleRoot()
	if err != nil {
		fmt.Fprintln(os.Stderr, "browser:", err)
		return 1
	}
	moduleRoot = root
	dir, err := os.MkdirTemp("", "decap-browser-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "browser: create binary directory:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	binDir = dir
	return m.Run()
}

// requireBrowser skips t when the browser tests cannot run here.
func requireBrowser(t *testing.T) {
	t.Helper()
	if skipReason != "" {
		t.Skip(skipReason)
	}
}

var (
	buildOnce sync.Once
	buildErr  error
)

// binaries builds ingest, dispatcher, reaper and decap-entrypoint into
// binDir, once per test binary, as `make build` does.
func binaries(t *testing.T) {
	t.Helper()
	buildOnce.Do(func() { buildErr = proctest.BuildBinaries(moduleRoot, binDir) })
	if buildErr != nil {
		t.Fatal(buildErr)
	}
}
