package e2e_test

import (
	"testing"

	"github.com/decap-ci/decap/internal/proctest"
)

// TestLocalBuildEndsWithoutTheReapersPoll: a reaper that polls the run
// directory once an hour records the ends of the builds the dispatcher,
// another process, launched, as they end (issue 15): the dispatcher is
// decap-entrypoint's parent and wakes the reaper's watch once it has
// reaped it. WaitSucceeded's bound is a deadlock guard, not a measure of
// speed.
func TestLocalBuildEndsWithoutTheReapersPoll(t *testing.T) {
	t.Parallel()
	s := newScripts(t)
	s.addTraced("e2e", "app", 0)
	c := newCluster(t, proctest.Options{Scripts: s.dir, Trace: s.trace, Cap: 4,
		KindEnv: map[string][]string{"reaper": {"DECAP_REAP_INTERVAL=1h"}}})
	// The reaper first: its first scan, at start, finds nothing.
	c.Start("reaper")
	c.Start("dispatcher")
	c.Start("ingest")
	c.WaitSucceeded(c.Push("e2e", "app", "main"), c.Push("e2e", "app", "feature/a"))
}
