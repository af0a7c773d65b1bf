package e2e_test

import (
	"encoding/json"
	"net/http"
	"testing"
	"time"
)

// TestRebuildThroughTheAPI builds a pushed branch, rebuilds it through
// POST /api/v1/builds/{id}/rebuild on the real processes, and checks that
// the second build ran the same ref and commit, names the first, is
// numbered next in its project, and that both succeeded; and that a build
// that has not ended cannot be rebuilt.
func TestRebuildThroughTheAPI(t *testing.T) {
	t.Parallel()
	s := newScripts(t)
	s.addTraced("e2e", "again", 0)
	s.addTraced("e2e", "slow", 10*time.Minute) // ends only when cancelled
	c := s.cluster(2)
	c.Start("reaper")
	c.Start("dispatcher")
	c.Start("ingest")

	first := c.Push("e2e", "again", "main")
	orig := c.WaitSucceeded(first)[first]
	if orig.Number < 1 || orig.SHA == "" {
		t.Fatalf("the pushed build: number %d, sha %q; want a number and the push's commit", orig.Number, orig.SHA)
	}

	status, body := c.MustDo(http.MethodPost, "/api/v1/builds/"+first+"/rebuild", nil, nil)
	var ans struct {
		ID      string `json:"id"`
		LockKey string `json:"lockKey"`
		Number  int    `json:"number"`
	}
	if status != http.StatusAccepted || json.Unmarshal(body, &ans) != nil || ans.ID == "" || ans.ID == first {
		t.Fatalf("rebuild: got %d %s, want 202 with a new build", status, body)
	}
	if ans.LockKey != "e2e/again/main" || ans.Number != orig.Number+1 {
		t.Errorf("rebuild answer %s, want lock key e2e/again/main and number %d", body, orig.Number+1)
	}
	again := c.WaitSucceeded(ans.ID)[ans.ID]
	if again.Ref != orig.Ref || again.RefType != orig.RefType || again.SHA != orig.SHA {
		t.Errorf("the rebuild built %s %s at %s, want %s %s at %s", again.RefType, again.Ref, again.SHA, orig.RefType, orig.Ref, orig.SHA)
	}
	if again.RebuildOf != first || again.Number != orig.Number+1 || again.Trigger != "api" {
		t.Errorf("the rebuild's record: rebuildOf %q, number %d, trigger %q; want %s, %d, api", again.RebuildOf, again.Number, again.Trigger, first, orig.Number+1)
	}
	tr := s.readTrace()
	for _, id := range []string{first, ans.ID} {
		if sp := tr.spans[id]; sp == nil || sp.starts != 1 || sp.end.IsZero() {
			t.Errorf("build %s did not run once to its end: %+v", id, sp)
		}
	}
	// The first build's record is unchanged.
	if rec, _, err := c.GetBuild(first); err != nil || rec.RebuildOf != "" || rec.Number != orig.Number || rec.Status != "succeeded" {
		t.Errorf("the rebuilt build's record afterwards: %+v, %v", rec, err)
	}

	// A build that has not ended: 409, whether it waits or runs.
	slow := c.RequestBuild("e2e", "slow", "main")
	if status, body := c.MustDo(http.MethodPost, "/api/v1/builds/"+slow+"/rebuild", nil, nil); status != http.StatusConflict {
		t.Errorf("rebuild of a build that has not ended: got %d %s, want 409", status, body)
	}
	if status, body := c.MustDo(http.MethodDelete, "/api/v1/builds/"+slow, nil, nil); status != http.StatusOK && status != http.StatusAccepted {
		t.Errorf("cancel of the slow build: got %d %s", status, body)
	}
	c.WaitFinal(slow)
}
