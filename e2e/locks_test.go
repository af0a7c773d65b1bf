package e2e_test

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/decap-ci/decap/internal/proctest"
)

// TestTwoPushesOneBranchSerialized pushes one branch twice (two deliveries)
// and another branch once (invariant 3): the builds of one branch never
// overlap and run in request order; other branches are not held up by it.
func TestTwoPushesOneBranchSerialized(t *testing.T) {
	t.Parallel()
	s := newScripts(t)
	s.addSlow("e2e", "app", keepEveryRequest, time.Second)
	c := s.cluster(4)
	reaper := c.Start("reaper")
	dispatcher := c.Start("dispatcher")
	ingest := c.Start("ingest")

	main := []string{c.Push("e2e", "app", "main"), c.Push("e2e", "app", "main")}
	feature := c.Push("e2e", "app", "feature/x")
	all := append(append([]string(nil), main...), feature)
	recs := c.WaitSucceeded(all...)

	tr := s.readTrace()
	tr.checkStartedOnce(t, all...)
	tr.checkSerialized(t, main...)
	tr.checkBranchesSerialized(t)
	for _, id := range main {
		if got := recs[id].Ref; got != "main" {
			t.Errorf("build %s: got ref %q, want main", id, got)
		}
	}
	if got := recs[feature].Ref; got != "feature/x" {
		t.Errorf("build %s: got ref %q, want feature/x", feature, got)
	}
	// Different branches may overlap; whether they did depends on timing.
	t.Logf("most builds running at once: %d\n%s", tr.maxOverlap(), tr)

	// The build saw its own variables and none of Decap's settings or
	// secrets.
	files := tarFiles(t, c.Artifacts(feature))
	if got, want := files["built.txt"], feature+" feature/x\n"; got != want {
		t.Errorf("built.txt of %s: got %q, want %q", feature, got, want)
	}
	env := files["env.txt"]
	for _, want := range []string{"BUILD_ID=" + feature, "BRANCH_TO_BUILD=feature/x", "PROJECT_KEY=e2e/app"} {
		if !strings.Contains(env, want) {
			t.Errorf("environment of build %s lacks %q; got:\n%s", feature, want, env)
		}
	}
	for _, leak := range []string{"DECAP_", webhookSecret, apiToken} {
		if strings.Contains(env, leak) {
			t.Errorf("environment of build %s contains %q; got:\n%s", feature, leak, env)
		}
	}

	// Every service shuts down cleanly on SIGTERM.
	c.Stop(ingest)
	c.Stop(dispatcher)
	c.Stop(reaper)
}

// TestCapAcrossDispatcherProcesses runs three dispatcher processes on one
// data directory with a cap of two running builds and pushes ten branches
// (invariant 3): all build, never more than two at once.
func TestCapAcrossDispatcherProcesses(t *testing.T) {
	t.Parallel()
	const capacity, branches = 2, 10
	s := newScripts(t)
	s.addSideBySide("e2e", "app", "", 700*time.Millisecond)
	c := s.cluster(capacity)
	c.Start("reaper")
	dispatchers := []*proctest.Service{c.Start("dispatcher"), c.Start("dispatcher"), c.Start("dispatcher")}
	c.Start("ingest")

	var ids []string
	for i := range branches {
		ids = append(ids, c.Push("e2e", "app", fmt.Sprintf("branch-%02d", i)))
	}
	c.WaitSucceeded(ids...)

	tr := s.readTrace()
	tr.checkStartedOnce(t, ids...)
	tr.checkBranchesSerialized(t)
	most := tr.maxOverlap()
	if most > capacity {
		t.Errorf("most builds running at once: got %d, want at most the cap of %d\n%s", most, capacity, tr)
	}
	// With ten builds queued at once, the first waiting for a second, two
	// run side by side; one at a time would mean the cap is enforced as 1.
	if most < 2 {
		t.Errorf("most builds running at once: got %d, want %d (builds ran one at a time)\n%s", most, capacity, tr)
	}
	for _, d := range dispatchers {
		log, _ := os.ReadFile(d.LogPath)
		t.Logf("%s launched %d builds", d.Name, strings.Count(string(log), "build launched"))
	}
}
