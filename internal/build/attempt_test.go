package build_test

import (
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/decap-ci/decap/internal/build"
)

// failedByInfra is rtID's record after an end by cause at attempt, with
// retries infrastructure retries allowed.
func failedByInfra(cause build.InfraCause, attempt, retries int) build.Record {
	r := recordIn("running")
	r.SHA, r.RequestedBy, r.DeliveryID = "0123456789abcdef0123456789abcdef01234567", "octocat", "72d3162e-cc78-11e3-81ab-4c9367dc0958"
	r.Attempt, r.InfraRetries, r.Supersedable = attempt, retries, true
	o := outcomeOf(build.StatusErrored, 137, "build pod was evicted")
	o.Infra = cause
	if err := r.End(o, rtNow); err != nil {
		panic(err)
	}
	return r
}

// TestNextAttempt checks which ends start another attempt and what the
// retry is: the same request again under its own ID, linked and counted,
// made the same every time from the same failed record.
func TestNextAttempt(t *testing.T) {
	t.Parallel()
	failed := failedByInfra(build.InfraEvicted, 1, 2)
	req, rec, err := failed.NextAttempt()
	if err != nil {
		t.Fatalf("NextAttempt() error = %v", err)
	}
	wantReq := build.Request{V: build.MessageVersion, BuildID: build.RetryID(rtID, failed.FinishedAt), Team: "ae6rt", Project: "dynamodb-lab",
		Ref: "main", RefType: build.Branch, SHA: failed.SHA, Trigger: build.TriggerPush, RequestedBy: "octocat", RequestedAt: failed.FinishedAt}
	if diff := cmp.Diff(wantReq, req); diff != "" {
		t.Errorf("NextAttempt() request (-want +got):\n%s", diff)
	}
	wantRec := build.RecordFor(wantReq)
	wantRec.Attempt, wantRec.RetryOf = 2, rtID
	if diff := cmp.Diff(wantRec, rec); diff != "" {
		t.Errorf("NextAttempt() record (-want +got):\n%s", diff)
	}
	if req.DeliveryID != "" {
		t.Errorf("retry carries delivery %q: the dispatcher would drop it as a duplicate of the first attempt", req.DeliveryID)
	}
	if got := req.BuildID.Time(); !got.Equal(failed.FinishedAt.Truncate(time.Millisecond)) {
		t.Errorf("retry ID time = %v, want the failed build's end %v", got, failed.FinishedAt)
	}
	if _, err := build.ParseID(string(req.BuildID)); err != nil {
		t.Errorf("retry ID %s: %v", req.BuildID, err)
	}
	again, _, _ := failed.NextAttempt()
	if again.BuildID != req.BuildID {
		t.Errorf("NextAttempt() twice = %s, %s; want one retry ID per failed build", req.BuildID, again.BuildID)
	}
	if other := build.RetryID(newer, failed.FinishedAt); other == req.BuildID {
		t.Errorf("RetryID of two builds = %s both", other)
	}
	// The retry of the retry counts on.
	rec.Status, rec.StartedAt = build.StatusRunning, rtNow
	rec.InfraRetries = 2
	o := outcomeOf(build.StatusErrored, 137, "node lost")
	o.BuildID, o.Infra = rec.BuildID, build.InfraNodeLost
	if err := rec.End(o, rtNow); err != nil {
		t.Fatal(err)
	}
	_, third, err := rec.NextAttempt()
	if err != nil || third.Attempt != 3 || third.RetryOf != rec.BuildID {
		t.Errorf("NextAttempt() of attempt 2 = attempt %d, retryOf %s, %v; want 3, %s, nil", third.Attempt, third.RetryOf, err, rec.BuildID)
	}

	noRetry := map[string]build.Record{
		"retries used up":       failedByInfra(build.InfraEvicted, 3, 2),
		"no retries":            failedByInfra(build.InfraKilled, 1, 0),
		"script failed":         recordIn("failed"),
		"timed out":             recordIn("timed_out"),
		"cancelled":             recordIn("cancelled"),
		"superseded":            recordIn("superseded"),
		"errored, not by infra": recordIn("errored"),
		"running":               recordIn("running"),
	}
	for name, r := range noRetry {
		if r.InfraRetries == 0 && name != "no retries" {
			r.InfraRetries = 2
		}
		if r.Retryable() {
			t.Errorf("%s: Retryable() = true", name)
		}
		if _, _, err := r.NextAttempt(); !errors.Is(err, build.ErrConflict) {
			t.Errorf("%s: NextAttempt() error = %v, want ErrConflict", name, err)
		}
	}
	// A stop someone asked for is never an infrastructure failure.
	r := recordIn("running, cancel requested")
	r.InfraRetries = 2
	o = outcomeOf(build.StatusErrored, 137, "build pod was deleted")
	o.Infra = build.InfraDeleted
	if err := r.End(o, rtNow); err != nil || r.Retryable() || r.Infra != "" {
		t.Errorf("cancelled build: End() = %v, Retryable() = %t, Infra = %q; want nil, false, \"\"", err, r.Retryable(), r.Infra)
	}
	r = recordIn("running, supersede requested")
	r.InfraRetries = 2
	if err := r.End(o, rtNow); err != nil || r.Retryable() || r.Status != build.StatusSuperseded {
		t.Errorf("superseded build: End() = %v, Retryable() = %t, status %s; want nil, false, superseded", err, r.Retryable(), r.Status)
	}
}

// TestOlder checks the order a lock key's requests supersede in: by
// QueuedAt, then build ID, a strict order.
func TestOlder(t *testing.T) {
	t.Parallel()
	a := build.Record{BuildID: build.NewID(rt0), QueuedAt: rt0}
	b := build.Record{BuildID: build.NewID(rt0), QueuedAt: rt0}
	if a.BuildID > b.BuildID {
		a, b = b, a
	}
	c := build.Record{BuildID: "00000000-0000-4000-8000-000000000000", QueuedAt: rt0.Add(time.Millisecond)}
	for _, tc := range []struct {
		x, y build.Record
		want bool
	}{{a, b, true}, {b, a, false}, {a, a, false}, {b, c, true}, {c, a, false}} {
		if got := tc.x.Older(tc.y); got != tc.want {
			t.Errorf("%s@%v Older(%s@%v) = %t, want %t", tc.x.BuildID, tc.x.QueuedAt, tc.y.BuildID, tc.y.QueuedAt, got, tc.want)
		}
	}
}
