package e2e_test

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/decap-ci/decap/internal/proctest"
)

// TestDispatcherKilledMidway SIGKILLs the dispatcher three times while it
// dispatches, each time starting a new one (invariants 1, 3 and 4): every
// accepted build ends with a final record, none runs twice, the cap holds.
//
// It is the slowest test (a request a killed dispatcher held waits out its
// 30 s visibility timeout), so it comes first and overlaps the others.
func TestDispatcherKilledMidway(t *testing.T) {
	t.Parallel()
	const capacity = 2
	s := newScripts(t)
	s.addTraced("e2e", "app", time.Second)
	c := s.cluster(capacity)
	c.Start("reaper")
	d := c.Start("dispatcher")
	c.Start("ingest")

	var ids []string
	for i := range 6 {
		ids = append(ids, c.Push("e2e", "app", fmt.Sprintf("branch-%d", i)))
	}
	// The first kill comes right after the last push was accepted, while
	// the dispatcher is likely deciding; the next ones when the first and
	// the second build have started. A request the killed dispatcher held
	// comes back when its visibility timeout (30 s) ends.
	for kill := range 3 {
		c.WaitFor(proctest.BuildTimeout, fmt.Sprintf("%d builds to start", kill), func() (bool, string) {
			n := s.readTrace().started()
			return n >= kill, fmt.Sprintf("%d started", n)
		})
		c.Kill(d)
		d = c.Start("dispatcher")
	}

	recs := c.WaitFinal(ids...)
	tr := s.readTrace()
	for _, id := range ids {
		r := recs[id]
		sp := tr.spans[id]
		starts := 0
		if sp != nil {
			starts = sp.starts
		}
		switch {
		case r.Status == "succeeded":
			if starts != 1 {
				t.Errorf("build %s: succeeded but started %d times, want once", id, starts)
			}
		case r.Status == "errored" && strings.Contains(r.Reason, "launch interrupted"):
			// A dispatcher killed between creating the run directory and
			// starting the process; the script must not have run.
			t.Logf("build %s: %s", id, r)
			if starts != 0 {
				t.Errorf("build %s: recorded %s but started %d times, want never", id, r, starts)
			}
		default:
			t.Errorf("build %s: got %s, want succeeded (or errored with an interrupted launch)", id, r)
		}
	}
	for id, sp := range tr.spans {
		if _, ok := recs[id]; !ok {
			t.Errorf("build %s started (%d times), but it is none of the accepted builds", id, sp.starts)
		}
	}
	tr.checkBranchesSerialized(t)
	if most := tr.maxOverlap(); most > capacity {
		t.Errorf("most builds running at once: got %d, want at most the cap of %d\n%s", most, capacity, tr)
	}
}

// TestReaperRestartLosesNothing lets builds end while no reaper runs, then
// starts a reaper, SIGKILLs it once it has recorded a build, and starts
// another (invariant 4): every build is recorded succeeded, its run
// directory removed and its branch lock released.
func TestReaperRestartLosesNothing(t *testing.T) {
	t.Parallel()
	s := newScripts(t)
	s.addTraced("e2e", "app", 200*time.Millisecond)
	c := s.cluster(4)
	c.Start("dispatcher")
	c.Start("ingest")

	branches := []string{"main", "dev", "release/1", "feature/a"}
	var ids []string
	for _, b := range branches {
		ids = append(ids, c.Push("e2e", "app", b))
	}
	// With nobody reaping, the builds end (result.json) and their records
	// stay running.
	c.WaitFor(proctest.BuildTimeout, "4 builds to end with nobody reaping", func() (bool, string) {
		var pending []string
		for _, id := range ids {
			if _, err := os.Stat(filepath.Join(c.RunDir(id), "result.json")); err != nil {
				pending = append(pending, id+": no result.json yet")
				continue
			}
			rec, code, err := c.GetBuild(id)
			if err != nil || code != http.StatusOK || rec.Status != "running" {
				pending = append(pending, fmt.Sprintf("%s: record %s (HTTP %d, %v), want running", id, rec, code, err))
			}
		}
		return len(pending) == 0, strings.Join(pending, "; ")
	})

	first := c.Start("reaper")
	c.WaitFor(proctest.BuildTimeout, "the first reaper to record a build", func() (bool, string) {
		var got []string
		for _, id := range ids {
			rec, _, err := c.GetBuild(id)
			if err == nil && proctest.IsFinal(rec.Status) {
				return true, ""
			}
			got = append(got, id+": "+rec.String())
		}
		return false, strings.Join(got, "; ")
	})
	c.Kill(first)
	c.Start("reaper")

	c.WaitSucceeded(ids...)
	c.WaitFor(proctest.BuildTimeout, "run directories to be removed", func() (bool, string) {
		var left []string
		for _, id := range ids {
			if entries, err := os.ReadDir(c.RunDir(id)); err == nil {
				var names []string
				for _, e := range entries {
					names = append(names, e.Name())
				}
				left = append(left, fmt.Sprintf("%s holds %v", c.RunDir(id), names))
			}
		}
		return len(left) == 0, "still there: " + strings.Join(left, "; ")
	})

	// The locks were released: the same branches build again at once
	// (a held lock would defer them for its whole lease).
	var again []string
	for _, b := range branches {
		again = append(again, c.Push("e2e", "app", b))
	}
	c.WaitSucceeded(again...)
	tr := s.readTrace()
	tr.checkStartedOnce(t, append(append([]string(nil), ids...), again...)...)
	tr.checkBranchesSerialized(t)
}

// TestQueueSurvivesRestart queues builds through the API while no
// dispatcher runs, stops ingest, and only then starts the rest (invariant
// 1): the queue is durable, and every accepted request builds, a branch's
// requests in order.
func TestQueueSurvivesRestart(t *testing.T) {
	t.Parallel()
	s := newScripts(t)
	s.addSlow("e2e", "app", keepEveryRequest, 300*time.Millisecond)
	c := s.cluster(4)
	ingest := c.Start("ingest")

	main1 := c.RequestBuild("e2e", "app", "main")
	dev := c.RequestBuild("e2e", "app", "dev")
	main2 := c.RequestBuild("e2e", "app", "main")
	ids := []string{main1, dev, main2}
	// Accepted means recorded: visible before any dispatcher has seen it.
	if rec, code, err := c.GetBuild(main1); err != nil || code != http.StatusOK || rec.Status != "queued" {
		t.Errorf("GET /api/v1/builds/%s before any dispatcher ran: got %s (HTTP %d, %v), want queued", main1, rec, code, err)
	}
	c.Stop(ingest)

	c.Start("reaper")
	c.Start("dispatcher")
	c.Start("ingest")
	recs := c.WaitSucceeded(ids...)
	for _, id := range ids {
		if got := recs[id].Trigger; got != "api" {
			t.Errorf("build %s: got trigger %q, want api", id, got)
		}
	}
	tr := s.readTrace()
	tr.checkStartedOnce(t, ids...)
	tr.checkSerialized(t, main1, main2)
}
