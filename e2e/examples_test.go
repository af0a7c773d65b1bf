package e2e_test

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/decap-ci/decap/internal/proctest"
)

// The example repository's decap-ci/slow runs as long as its ref says: a
// build of "seconds/1" takes one second. It promised $SLOW_SECONDS, which
// no build is given (a build's environment is fixed: README, "What a build
// sees"), so every build of it took 30 seconds.
func TestExampleSlowTakesItsSecondsFromTheRef(t *testing.T) {
	t.Parallel()
	c := newCluster(t, proctest.Options{Scripts: filepath.Join(moduleRoot, "examples", "build-scripts")})
	for _, kind := range []string{"reaper", "dispatcher", "ingest"} {
		c.Start(kind)
	}
	id := c.RequestBuild("decap-ci", "slow", "seconds/1")
	if got := c.WaitFinal(id)[id]; got.Status != "succeeded" {
		t.Fatalf("build of decap-ci/slow seconds/1: %s, want succeeded", got)
	}
	log := c.BuildLog(id)
	if !strings.Contains(log, "working... 1/1\n") || strings.Contains(log, "/30") {
		t.Errorf("log of decap-ci/slow seconds/1 does not count one second:\n%s", log)
	}
}
