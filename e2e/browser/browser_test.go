package browser_test

import (
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/decap-ci/decap/internal/proctest"
)

// The generated projects' build scripts.
const (
	quickScript = `#!/usr/bin/env bash
set -euo pipefail
echo "quick build of ${PROJECT_KEY} at ${BRANCH_TO_BUILD} as ${BUILD_ID}"
echo "--- compile"
printf '\033[1;32mcompiled\033[0m with <b>markup</b> & \033]0;title\007escapes\n'
echo "::group::steps"
for step in compile test package; do
  echo "step: ${step}"
  sleep 0.2
done
echo "::endgroup::"
echo "--- package"
mkdir -p "${BUILD_ARTIFACTS}"
echo "built ${BUILD_ID} from ${BRANCH_TO_BUILD}" > "${BUILD_ARTIFACTS}/result.txt"
echo "quick build: all done"
`
	// slowScript prints a line every 0.5s for 2 minutes: the flow cancels
	// it, and looks at it running first, which took over 20 s on a busy
	// machine.
	slowScript = `#!/usr/bin/env bash
set -euo pipefail
for i in $(seq 1 240); do
  echo "slow tick ${i} of 240"
  sleep 0.5
done
echo "slow build: all done"
`
)

// writeScripts generates a build-scripts directory with browser/quick and
// browser/slow.
func writeScripts(t *testing.T) string {
	t.Helper()
	root := filepath.Join(t.TempDir(), "build-scripts")
	for project, script := range map[string]string{"quick": quickScript, "slow": slowScript} {
		dir := filepath.Join(root, "browser", project)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		desc := []byte(`{"buildImage": "debian:bookworm-slim", "repoManager": "github", "repoDescription": "the ` + project + ` project of the browser test"}`)
		if err := os.WriteFile(filepath.Join(dir, "project.json"), desc, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "build.sh"), []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

// TestBrowser runs the browser flow against the real services.
func TestBrowser(t *testing.T) {
	requireBrowser(t)
	start := time.Now()
	c := startServices(t, writeScripts(t))
	resp, err := http.Get(c.URL("/"))
	if err != nil {
		t.Fatalf("GET /: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		t.Skip("the status UI is not mounted in ingest yet (GET / answers 404): cmd/ingest must call ui.New(...).Register(srv.Echo())")
	}
	t.Logf("services ready in %s", time.Since(start).Round(time.Millisecond))
	runFlow(t, target{
		base:          c.URL(""),
		token:         apiToken,
		quick:         "browser/quick",
		slow:          "browser/slow",
		quickLastLine: "quick build: all done",
		artifactName:  "result.txt",
		slowLine:      "slow tick 3 of 240",
		shots:         filepath.Join(moduleRoot, "test-output", "browser"),
		docs:          os.Getenv("UPDATE_SCREENSHOTS") == "1",
		guarded:       true,
		badges:        true,
		live:          true,
		times:         true,
	})
}

// startServices builds the binaries if needed and starts ingest, a
// dispatcher and a reaper of the embedded default on scripts and a fresh
// data directory; see proctest.NewCluster for what happens when the test
// ends.
func startServices(t *testing.T, scripts string) *proctest.Cluster {
	t.Helper()
	binaries(t)
	c := proctest.NewCluster(t, proctest.Options{Bin: binDir, Scripts: scripts, Cap: 4, APIToken: apiToken})
	for _, kind := range []string{"ingest", "dispatcher", "reaper"} {
		c.Start(kind)
	}
	return c
}
