package e2e_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/decap-ci/decap/internal/proctest"
)

// TestCancelThroughTheAPI cancels a running build and a request waiting
// behind it on the same branch through DELETE /api/v1/builds/{id}. Ingest
// stops no build itself: it records the cancel, and the reaper stops the
// running build's process; the waiting request is cancelled at once and
// never starts. The branch's lock is free afterwards.
func TestCancelThroughTheAPI(t *testing.T) {
	t.Parallel()
	s := newScripts(t)
	// Long enough that only a cancel ends the build within BuildTimeout;
	// the second push waits behind the first, not superseding it.
	s.addSlow("e2e", "slow", keepEveryRequest, 10*time.Minute)
	c := s.cluster(4)
	c.Start("reaper")
	c.Start("dispatcher")
	c.Start("ingest")
	auth := http.Header{"Authorization": {"Bearer " + apiToken}}

	running := c.Push("e2e", "slow", "main")
	waiting := c.Push("e2e", "slow", "main")
	c.WaitFor(proctest.BuildTimeout, "the first build's script to start", func() (bool, string) {
		sp := s.readTrace().spans[running]
		return sp != nil && sp.starts > 0, "no start in the trace yet"
	})

	status, body := c.MustDo(http.MethodDelete, "/api/v1/builds/"+waiting, auth, nil)
	if status != http.StatusOK || !strings.Contains(string(body), `"status":"cancelled"`) {
		t.Fatalf("cancel of the waiting request: got %d %s, want 200 with its cancelled record", status, body)
	}
	asked := time.Now()
	status, body = c.MustDo(http.MethodDelete, "/api/v1/builds/"+running, auth, nil)
	if status != http.StatusAccepted || !strings.Contains(string(body), `"cancelling"`) {
		t.Fatalf("cancel of the running build: got %d %s, want 202 cancelling", status, body)
	}
	recs := c.WaitFinal(running)
	t.Logf("the running build ended %s after its cancel", time.Since(asked).Round(10*time.Millisecond))
	if got := recs[running]; got.Status != "cancelled" || !strings.HasPrefix(got.Reason, "cancelled on request") {
		t.Errorf("cancelled build: got %s, want cancelled on request", got)
	}
	if log := c.BuildLog(running); !strings.Contains(log, "cancelled") {
		t.Errorf("log of the cancelled build does not say so:\n%s", log)
	}
	c.WaitFor(proctest.BuildTimeout, "the branch's lock to be released", func() (bool, string) {
		leases, err := c.Locks()
		if err != nil {
			return false, err.Error()
		}
		return len(leases) == 0, "locks held"
	})
	// A second cancel of an ended build is a conflict.
	if status, body := c.MustDo(http.MethodDelete, "/api/v1/builds/"+running, auth, nil); status != http.StatusConflict {
		t.Errorf("cancel of an ended build: got %d %s, want 409", status, body)
	}
	// The waiting request was dropped by the dispatcher, never run.
	time.Sleep(2 * time.Second)
	if rec, _, err := c.GetBuild(waiting); err != nil || rec.Status != "cancelled" {
		t.Errorf("cancelled request: got %s (%v), want it still cancelled", rec, err)
	}
	if sp := s.readTrace().spans[waiting]; sp != nil {
		t.Errorf("the cancelled request ran: %+v", *sp)
	}
}
