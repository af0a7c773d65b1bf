package ingest_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/decap-ci/decap/internal/build"
)

// rebuildPath is the rebuild endpoint of build id.
func rebuildPath(id build.ID) string { return "/api/v1/builds/" + string(id) + "/rebuild" }

// queuedAnswer is the answer of a request that queued a build.
type queuedAnswer struct {
	ID      build.ID `json:"id"`
	LockKey string   `json:"lockKey"`
	Number  int      `json:"number"`
}

func decodeQueued(t *testing.T, body []byte) queuedAnswer {
	t.Helper()
	var a queuedAnswer
	if err := json.Unmarshal(body, &a); err != nil {
		t.Fatalf("answer %s: %v", body, err)
	}
	return a
}

// TestRebuild rebuilds ended builds: the same project, ref, ref type and
// SHA queued again under a new build that names the first, numbered next in
// its project; the trigger and requestedBy say who asked.
func TestRebuild(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name        string
		id          build.ID
		session     bool
		wantRef     string
		wantSHA     string
		wantTrigger build.Trigger
		wantBy      string
	}{
		{"a push build, with the token", id1, false, "main", "6113728f27ae82c7b1a177c8d03f9e96e0adf246", build.TriggerAPI, "api"},
		{"a push build, from the UI", id1, true, "main", "6113728f27ae82c7b1a177c8d03f9e96e0adf246", build.TriggerManual, "ui"},
		// Built without a SHA: rebuilt without one (the ref's commit then).
		{"a failed API build without SHA", id2, false, "feature/Locks", "", build.TriggerAPI, "api"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, nil)
			f.seed(t)
			f.queued(t) // the seed's messages out of the way
			r := apiRequest(http.MethodPost, rebuildPath(tt.id), token, "")
			if tt.session {
				r = apiRequest(http.MethodPost, rebuildPath(tt.id), "", "")
				withCookie(r, f.signIn(t).Value, "1")
			}
			w := f.do(r)
			if w.Code != http.StatusAccepted {
				t.Fatalf("status = %d (%s), want 202", w.Code, w.Body)
			}
			got := decodeQueued(t, w.Body.Bytes())
			// The seed numbered id1, id2 and id3 of decap-ci/hello 1 to 3.
			want := queuedAnswer{ID: got.ID, LockKey: "decap-ci/hello/" + tt.wantRef, Number: 4}
			if diff := cmp.Diff(want, got); diff != "" || got.ID == "" || got.ID == tt.id {
				t.Errorf("answer %s (-want +got):\n%s", w.Body, diff)
			}
			rec, err := f.records.Get(context.Background(), got.ID)
			if err != nil {
				t.Fatalf("record of the rebuild: %v", err)
			}
			orig, _ := f.records.Get(context.Background(), tt.id)
			wantRec := build.Record{BuildID: got.ID, Number: 4, RebuildOf: tt.id, Team: "decap-ci", Project: "hello",
				Ref: tt.wantRef, RefType: build.Branch, SHA: tt.wantSHA, Trigger: tt.wantTrigger, RequestedBy: tt.wantBy,
				Status: build.StatusQueued, QueuedAt: f.clock.Now().UTC()}
			if diff := cmp.Diff(wantRec, rec); diff != "" {
				t.Errorf("record of the rebuild (-want +got):\n%s", diff)
			}
			if orig.Status.Final() != true || orig.RebuildOf != "" {
				t.Errorf("the rebuilt build's record changed: %+v", orig)
			}
			reqs := f.queued(t)
			if len(reqs) != 1 {
				t.Fatalf("queued %d requests, want 1: %+v", len(reqs), reqs)
			}
			q := reqs[0]
			if q.BuildID != got.ID || q.RebuildOf != tt.id || q.Ref != tt.wantRef || q.SHA != tt.wantSHA || q.RefType != build.Branch ||
				q.Trigger != tt.wantTrigger || q.RequestedBy != tt.wantBy || q.DeliveryID != "" {
				t.Errorf("queued %+v, want the rebuild of %s", q, tt.id)
			}
		})
	}
}

// TestRebuildOfARebuild chains: a rebuild of a rebuild names the rebuild
// it repeats, and each gets the project's next number.
func TestRebuildOfARebuild(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil)
	f.seed(t)
	first := decodeQueued(t, f.do(apiRequest(http.MethodPost, rebuildPath(id1), token, "")).Body.Bytes())
	rec, _ := f.records.Get(context.Background(), first.ID)
	if err := rec.End(build.Outcome{BuildID: rec.BuildID, Status: build.StatusFailed, FinishedAt: f.clock.Now()}, f.clock.Now()); err != nil {
		t.Fatal(err)
	}
	f.save(t, rec)
	f.clock.Advance(time.Minute)
	w := f.do(apiRequest(http.MethodPost, rebuildPath(first.ID), token, ""))
	if w.Code != http.StatusAccepted {
		t.Fatalf("status = %d (%s), want 202", w.Code, w.Body)
	}
	second := decodeQueued(t, w.Body.Bytes())
	got, _ := f.records.Get(context.Background(), second.ID)
	if first.Number != 4 || second.Number != 5 || got.Number != 5 || got.RebuildOf != first.ID {
		t.Errorf("rebuild #%d, its rebuild #%d (record #%d, rebuild of %s); want #4, #5, a rebuild of %s",
			first.Number, second.Number, got.Number, got.RebuildOf, first.ID)
	}
}

// TestRebuildRefused checks the builds that cannot be rebuilt: each
// answer's status and message, and that nothing was queued or recorded.
func TestRebuildRefused(t *testing.T) {
	t.Parallel()
	gone := build.ID("01a21af2-0b80-7000-8000-0000000000a1")
	broken := build.ID("01a21af2-0b80-7000-8000-0000000000a2")
	hostile := build.ID("01a21af2-0b80-7000-8000-0000000000a3")
	tests := []struct {
		name      string
		path      string
		want      int
		wantError string
	}{
		{"running", rebuildPath(id3), http.StatusConflict, "is running; rebuild it once it has ended"},
		{"deferred", rebuildPath(id4), http.StatusConflict, "is deferred"},
		{"queued", rebuildPath(id5), http.StatusConflict, "is queued"},
		{"unknown build", rebuildPath("01a21af2-0b80-7000-8000-0000000000ff"), http.StatusNotFound, "not found"},
		{"not a build id", "/api/v1/builds/..%2Fx/rebuild", http.StatusBadRequest, "not a UUID"},
		{"project gone from the catalog", rebuildPath(gone), http.StatusUnprocessableEntity, "project decap-ci/gone is not buildable any more"},
		{"project not buildable", rebuildPath(broken), http.StatusUnprocessableEntity, "project decap-ci/broken is not buildable any more"},
		{"a record no request may hold", rebuildPath(hostile), http.StatusUnprocessableEntity, "cannot be rebuilt"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, nil)
			f.seed(t)
			ended := build.Record{Team: "decap-ci", RefType: build.Branch, Trigger: build.TriggerPush,
				Status: build.StatusSucceeded, QueuedAt: f.at(0), FinishedAt: f.at(time.Minute)}
			for id, change := range map[build.ID]func(r *build.Record){
				gone:    func(r *build.Record) { r.Project, r.Ref = "gone", "main" },
				broken:  func(r *build.Record) { r.Project, r.Ref = "broken", "main" },
				hostile: func(r *build.Record) { r.Project, r.Ref = "hello", "../../etc" },
			} {
				r := ended
				r.BuildID = id
				change(&r)
				f.save(t, r)
			}
			before := f.state(t)
			w := f.do(apiRequest(http.MethodPost, tt.path, token, ""))
			if w.Code != tt.want {
				t.Fatalf("status = %d (%s), want %d", w.Code, w.Body, tt.want)
			}
			if msg, _ := decodeJSON(t, w)["error"].(string); !strings.Contains(msg, tt.wantError) {
				t.Errorf("error = %q, want it to contain %q", msg, tt.wantError)
			}
			if after := f.state(t); after != before {
				t.Errorf("a refused rebuild changed the state:\nbefore %s\nafter  %s", before, after)
			}
		})
	}
}
