package build_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/decap-ci/decap/internal/build"
)

var (
	rt0   = time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)
	rtNow = rt0.Add(10 * time.Minute)
	rtID  = build.NewID(rt0)
	newer = build.NewID(rt0.Add(time.Minute))
)

func intp(n int) *int { return &n }

// recordIn returns a record of rtID as each state leaves it.
func recordIn(state string) build.Record {
	r := build.Record{BuildID: rtID, Team: "ae6rt", Project: "dynamodb-lab", Ref: "main", RefType: build.Branch,
		Trigger: build.TriggerPush, Status: build.StatusQueued, QueuedAt: rt0}
	final := func(s build.Status, reason string) build.Record {
		r.Status, r.Reason, r.FinishedAt = s, reason, rt0.Add(2*time.Minute)
		return r
	}
	ran := func(s build.Status, code int, reason string) build.Record {
		r.Status, r.StartedAt, r.FinishedAt, r.ExitCode, r.Reason = s, rt0.Add(time.Second), rt0.Add(time.Minute), intp(code), reason
		r.PodName, r.CatalogCommit = rtID.PodName(), "c0ffee"
		r.LogKey, r.ArtifactsKey = build.LogKey(rtID), build.ArtifactsKey(rtID)
		return r
	}
	switch state {
	case "queued":
		return r
	case "deferred":
		r.Status, r.Reason, r.NextAttemptAt = build.StatusDeferred, "another build of ae6rt/dynamodb-lab/main is running", rt0.Add(30*time.Second)
		return r
	case "running":
		r.Status, r.StartedAt, r.PodName, r.CatalogCommit = build.StatusRunning, rt0.Add(time.Second), rtID.PodName(), "c0ffee"
		return r
	case "running, cancel requested":
		r = recordIn("running")
		r.CancelRequestedAt = rt0.Add(5 * time.Second)
		return r
	case "running, supersede requested":
		r = recordIn("running")
		r.CancelRequestedAt, r.SupersededBy = rt0.Add(5*time.Second), newer
		return r
	case "queued, launching":
		r.LaunchingAt, r.InfraRetries, r.Supersedable = rt0.Add(time.Second), 2, true
		return r
	case "succeeded":
		return ran(build.StatusSucceeded, 0, "")
	case "failed":
		return ran(build.StatusFailed, 3, "exit code 3")
	case "timed_out":
		return ran(build.StatusTimedOut, 143, "deadline of 1h0m0s exceeded")
	case "cancelled":
		return final(build.StatusCancelled, "cancelled by ae6rt")
	case "errored":
		return final(build.StatusErrored, "project ae6rt/dynamodb-lab is not buildable")
	case "expired":
		return final(build.StatusExpired, "waited 24h0m0s")
	case "skipped":
		return final(build.StatusSkipped, "ref \"x\" does not match managedRefRegex")
	case "superseded":
		r.SupersededBy = newer
		return final(build.StatusSuperseded, "superseded by "+string(newer))
	}
	panic("no state " + state)
}

// states lists every state a record can be in: each status once, queued
// also while a dispatcher launches it, running also with a cancel and with
// a supersede request.
var states = []string{"queued", "queued, launching", "deferred", "running", "running, cancel requested", "running, supersede requested",
	"succeeded", "failed", "timed_out", "cancelled", "errored", "expired", "skipped", "superseded"}

// outcomeOf is what an executor reports of rtID's end.
func outcomeOf(s build.Status, code int, reason string) build.Outcome {
	return build.Outcome{BuildID: rtID, PodName: rtID.PodName(), Team: "ae6rt", Project: "dynamodb-lab", Ref: "main",
		Status: s, ExitCode: intp(code), Reason: reason, StartedAt: rt0.Add(2 * time.Second), FinishedAt: rt0.Add(9 * time.Minute),
		LogKey: build.LogKey(rtID), ArtifactsKey: build.ArtifactsKey(rtID)}
}

// ended is the record End makes of before and o, with status and reason.
func ended(before build.Record, o build.Outcome, status build.Status, reason string) build.Record {
	r := before
	r.Status, r.Reason, r.ExitCode = status, reason, o.ExitCode
	r.StartedAt, r.FinishedAt, r.NextAttemptAt = o.StartedAt, o.FinishedAt, time.Time{}
	r.PodName, r.LogKey, r.ArtifactsKey = o.PodName, o.LogKey, o.ArtifactsKey
	return r
}

// dropped is the record a drop to status with reason makes of before.
func dropped(before build.Record, status build.Status, reason string) build.Record {
	r := before
	r.Status, r.Reason, r.FinishedAt, r.NextAttemptAt = status, reason, rtNow, time.Time{}
	return r
}

// TestTransitions takes every state through every transition: the moves the
// state machine has change exactly the fields named; every other move is
// refused with ErrConflict, names the build, its status and the move, and
// changes nothing.
func TestTransitions(t *testing.T) {
	t.Parallel()
	waiting := []string{"queued", "queued, launching", "deferred"}
	running := []string{"running", "running, cancel requested", "running, supersede requested"}
	both := append(append([]string{}, waiting...), running...)
	type transition struct {
		name  string
		move  string // as the refusal says it
		apply func(r *build.Record) error
		from  []string
		want  func(state string, before build.Record) build.Record
	}
	endWith := func(s build.Status, code int, reason string) transition {
		o := outcomeOf(s, code, reason)
		return transition{
			name: "End " + string(s), move: "end", from: both,
			apply: func(r *build.Record) error { return r.End(o, rtNow) },
			want: func(state string, before build.Record) build.Record {
				asked := state == "running, cancel requested"
				superseded := state == "running, supersede requested"
				switch {
				case superseded && s == build.StatusCancelled:
					return ended(before, o, build.StatusSuperseded, "superseded by "+string(newer))
				case superseded && s != build.StatusSucceeded:
					return ended(before, o, build.StatusSuperseded, "superseded by "+string(newer)+"; "+reason)
				case asked && s == build.StatusCancelled:
					return ended(before, o, build.StatusCancelled, "cancelled on request")
				case asked && s != build.StatusSucceeded:
					return ended(before, o, build.StatusCancelled, "cancelled on request; "+reason)
				case s == build.StatusCancelled:
					// Nobody asked: stopped from outside, an infrastructure
					// failure the executor did not name.
					r := ended(before, o, build.StatusErrored, "stopped from outside Decap, with no cancel asked for; "+reason)
					r.Infra = build.InfraDeleted
					return r
				}
				return ended(before, o, s, reason)
			},
		}
	}
	// An end by an infrastructure failure: errored, Infra kept, unless a
	// stop was asked for.
	endWithInfra := func(s build.Status, code int, reason string, cause build.InfraCause) transition {
		o := outcomeOf(s, code, reason)
		o.Infra = cause
		return transition{
			name: "End " + string(s) + " by " + string(cause), move: "end", from: both,
			apply: func(r *build.Record) error { return r.End(o, rtNow) },
			want: func(state string, before build.Record) build.Record {
				switch state {
				case "running, cancel requested":
					return ended(before, o, build.StatusCancelled, "cancelled on request; "+reason)
				case "running, supersede requested":
					return ended(before, o, build.StatusSuperseded, "superseded by "+string(newer)+"; "+reason)
				}
				r := ended(before, o, build.StatusErrored, reason)
				r.Infra = cause
				return r
			},
		}
	}
	drop := func(s build.Status, reason string) transition {
		return transition{
			name: "Drop " + string(s), move: "drop", from: waiting,
			apply: func(r *build.Record) error { return r.Drop(s, reason, rtNow) },
			want:  func(_ string, before build.Record) build.Record { return dropped(before, s, reason) },
		}
	}
	transitions := []transition{
		{name: "Defer", move: "defer", from: waiting,
			apply: func(r *build.Record) error {
				return r.Defer(rtNow, rtNow.Add(time.Minute), "concurrency cap of 4 running builds reached")
			},
			want: func(_ string, before build.Record) build.Record {
				r := before
				r.Status, r.Reason, r.NextAttemptAt = build.StatusDeferred, "concurrency cap of 4 running builds reached", rtNow.Add(time.Minute)
				return r
			}},
		{name: "Start", move: "start", from: waiting,
			apply: func(r *build.Record) error { return r.Start(rtNow, rtID.PodName(), "c0ffee") },
			want: func(_ string, before build.Record) build.Record {
				r := before
				r.Status, r.StartedAt, r.PodName, r.CatalogCommit = build.StatusRunning, rtNow, rtID.PodName(), "c0ffee"
				r.Reason, r.NextAttemptAt = "", time.Time{}
				return r
			}},
		{name: "Cancel", move: "cancel", from: waiting,
			apply: func(r *build.Record) error { return r.Cancel(rtNow, "ae6rt") },
			want: func(_ string, before build.Record) build.Record {
				return dropped(before, build.StatusCancelled, "cancelled by ae6rt")
			}},
		{name: "RequestCancel", move: "request a cancel", from: running,
			apply: func(r *build.Record) error { return r.RequestCancel(rtNow) },
			want: func(state string, before build.Record) build.Record {
				r := before
				if state == "running" {
					r.CancelRequestedAt = rtNow
				} // else the first request's time stays
				return r
			}},
		{name: "Supersede", move: "supersede", from: waiting,
			apply: func(r *build.Record) error { return r.Supersede(rtNow, newer) },
			want: func(_ string, before build.Record) build.Record {
				r := dropped(before, build.StatusSuperseded, "superseded by "+string(newer))
				r.SupersededBy = newer
				return r
			}},
		{name: "RequestSupersede", move: "request a supersede", from: running,
			apply: func(r *build.Record) error { return r.RequestSupersede(rtNow, newer) },
			want: func(state string, before build.Record) build.Record {
				r := before
				if state == "running" {
					r.CancelRequestedAt, r.SupersededBy = rtNow, newer
				} // else the first request (a cancel, or a supersede) stands
				return r
			}},
		{name: "Launching", move: "launch", from: waiting,
			apply: func(r *build.Record) error { return r.Launching(rtNow, 3, false) },
			want: func(state string, before build.Record) build.Record {
				r := before
				if state != "queued, launching" {
					r.LaunchingAt = rtNow
				} // else the first launch's time stays
				r.InfraRetries, r.Supersedable = 3, false
				return r
			}},
		drop(build.StatusSkipped, "project x/y is not in the build-scripts repository"),
		drop(build.StatusExpired, "waited 24h0m1s, longer than 24h0m0s"),
		drop(build.StatusErrored, "launch: invalid image name"),
		endWith(build.StatusSucceeded, 0, ""),
		endWith(build.StatusFailed, 2, "exit code 2"),
		endWith(build.StatusTimedOut, 143, "deadline of 10m0s exceeded"),
		endWith(build.StatusCancelled, 143, "cancelled"),
		endWith(build.StatusErrored, 137, "build pod was deleted before it ended"),
		endWithInfra(build.StatusErrored, 137, "build pod was evicted", build.InfraEvicted),
		endWithInfra(build.StatusFailed, 137, "build.sh was killed by SIGKILL", build.InfraKilled),
	}
	for _, state := range states {
		for _, tr := range transitions {
			t.Run(state+"/"+tr.name, func(t *testing.T) {
				t.Parallel()
				before := recordIn(state)
				got := recordIn(state)
				err := tr.apply(&got)
				allowed := false
				for _, s := range tr.from {
					allowed = allowed || s == state
				}
				if !allowed {
					if !errors.Is(err, build.ErrConflict) {
						t.Fatalf("%s of a %s record: got %v, want it refused with ErrConflict", tr.name, state, err)
					}
					is := strings.ReplaceAll(string(before.Status), "_", " ")
					for _, part := range []string{"build " + string(rtID), is, "cannot " + tr.move} {
						if !strings.Contains(err.Error(), part) {
							t.Errorf("refusal %q does not say %q", err, part)
						}
					}
					if diff := cmp.Diff(before, got); diff != "" {
						t.Errorf("a refused %s changed the record (-before +after):\n%s", tr.name, diff)
					}
					return
				}
				if err != nil {
					t.Fatalf("%s of a %s record: %v", tr.name, state, err)
				}
				if diff := cmp.Diff(tr.want(state, before), got); diff != "" {
					t.Errorf("record after %s (-want +got):\n%s", tr.name, diff)
				}
			})
		}
	}
}

// TestStatesCoverEveryStatus keeps TestTransitions complete: a status added
// later must get a state there.
func TestStatesCoverEveryStatus(t *testing.T) {
	t.Parallel()
	all := []build.Status{build.StatusQueued, build.StatusDeferred, build.StatusRunning, build.StatusSucceeded,
		build.StatusFailed, build.StatusTimedOut, build.StatusCancelled, build.StatusErrored, build.StatusExpired,
		build.StatusSkipped, build.StatusSuperseded}
	covered := map[build.Status]bool{}
	for _, s := range states {
		r := recordIn(s)
		if !r.Status.Valid() {
			t.Errorf("state %s has invalid status %q", s, r.Status)
		}
		covered[r.Status] = true
	}
	for _, s := range all {
		if !covered[s] {
			t.Errorf("no state of TestTransitions has status %s", s)
		}
	}
}

// TestEndRecordsOnlyItsOwnObjects: a build reports its object keys (the
// entrypoint's result, a Pod's termination message: both written where the
// build script runs), so a hostile build could point its record at another
// build's log or artifacts. End keeps only the keys derived from the
// build's own ID.
func TestEndRecordsOnlyItsOwnObjects(t *testing.T) {
	t.Parallel()
	other := build.NewID(rt0.Add(-time.Hour))
	tests := []struct {
		name                     string
		logKey, artifactsKey     string
		wantLog, wantArtifacts   string
		wantReason, wantNoReason string
	}{
		{name: "its own", logKey: build.LogKey(rtID), artifactsKey: build.ArtifactsKey(rtID),
			wantLog: build.LogKey(rtID), wantArtifacts: build.ArtifactsKey(rtID), wantNoReason: "not its own"},
		{name: "none uploaded", wantNoReason: "not its own"},
		{name: "another build's", logKey: build.LogKey(other), artifactsKey: build.ArtifactsKey(other),
			wantReason: "reported a log key that is not its own; no log recorded; the build reported an artifacts key that is not its own"},
		{name: "swapped", logKey: build.ArtifactsKey(rtID), artifactsKey: build.LogKey(rtID),
			wantReason: "not its own"},
		{name: "traversal", logKey: "logs/" + string(rtID) + "/../../secrets/x", artifactsKey: build.ArtifactsKey(rtID),
			wantArtifacts: build.ArtifactsKey(rtID), wantReason: "log key that is not its own"},
		{name: "absolute", logKey: "/" + build.LogKey(rtID), artifactsKey: build.ArtifactsKey(rtID) + "\n",
			wantReason: "not its own"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := recordIn("running")
			o := outcomeOf(build.StatusSucceeded, 0, "")
			o.LogKey, o.ArtifactsKey = tt.logKey, tt.artifactsKey
			if err := r.End(o, rtNow); err != nil {
				t.Fatal(err)
			}
			if r.LogKey != tt.wantLog || r.ArtifactsKey != tt.wantArtifacts {
				t.Errorf("keys: got %q, %q; want %q, %q", r.LogKey, r.ArtifactsKey, tt.wantLog, tt.wantArtifacts)
			}
			if tt.wantReason != "" && !strings.Contains(r.Reason, tt.wantReason) {
				t.Errorf("reason %q does not say %q", r.Reason, tt.wantReason)
			}
			if tt.wantNoReason != "" && strings.Contains(r.Reason, tt.wantNoReason) {
				t.Errorf("reason %q says %q", r.Reason, tt.wantNoReason)
			}
			if strings.Contains(r.Reason, string(other)) || strings.Contains(r.Reason, "secrets") {
				t.Errorf("reason %q repeats the forged key", r.Reason)
			}
		})
	}
}

// TestEndFillsWhatTheExecutorDidNotKnow: an executor that saw no times (a
// Pod deleted before it started) still leaves a record with both.
func TestEndFillsWhatTheExecutorDidNotKnow(t *testing.T) {
	t.Parallel()
	r := build.RecordForOutcome(build.Outcome{BuildID: rtID, Team: "ae6rt", Project: "dynamodb-lab", Ref: "main"})
	want := build.Record{BuildID: rtID, Team: "ae6rt", Project: "dynamodb-lab", Ref: "main", RefType: build.Branch,
		Status: build.StatusQueued, QueuedAt: rtID.Time()}
	if diff := cmp.Diff(want, r); diff != "" {
		t.Fatalf("RecordForOutcome (-want +got):\n%s", diff)
	}
	if err := r.End(build.Outcome{BuildID: rtID, Status: build.StatusErrored, Reason: "launch interrupted"}, rtNow); err != nil {
		t.Fatal(err)
	}
	want.Status, want.Reason, want.StartedAt, want.FinishedAt = build.StatusErrored, "launch interrupted", rtNow, rtNow
	if diff := cmp.Diff(want, r); diff != "" {
		t.Errorf("ended (-want +got):\n%s", diff)
	}
	// The exit code is the record's own copy.
	o := outcomeOf(build.StatusFailed, 1, "exit code 1")
	r = recordIn("running")
	if err := r.End(o, rtNow); err != nil {
		t.Fatal(err)
	}
	*o.ExitCode = 99
	if *r.ExitCode != 1 {
		t.Errorf("exit code follows the outcome's: %d", *r.ExitCode)
	}
}

// TestTransitionArguments: what no state makes valid is ErrInvalid, and
// changes nothing.
func TestTransitionArguments(t *testing.T) {
	t.Parallel()
	foreign := outcomeOf(build.StatusSucceeded, 0, "")
	foreign.BuildID = newer
	tests := []struct {
		name  string
		state string
		apply func(r *build.Record) error
	}{
		{"drop as failed", "queued", func(r *build.Record) error { return r.Drop(build.StatusFailed, "x", rtNow) }},
		{"drop as cancelled", "queued", func(r *build.Record) error { return r.Drop(build.StatusCancelled, "x", rtNow) }},
		{"drop as superseded", "deferred", func(r *build.Record) error { return r.Drop(build.StatusSuperseded, "x", rtNow) }},
		{"drop without reason", "queued", func(r *build.Record) error { return r.Drop(build.StatusSkipped, "", rtNow) }},
		{"defer without reason", "queued", func(r *build.Record) error { return r.Defer(rtNow, rtNow, "") }},
		{"superseded by itself", "queued", func(r *build.Record) error { return r.Supersede(rtNow, rtID) }},
		{"superseded by nobody", "queued", func(r *build.Record) error { return r.Supersede(rtNow, "") }},
		{"end with another build's outcome", "running", func(r *build.Record) error { return r.End(foreign, rtNow) }},
		{"end running", "running", func(r *build.Record) error { return r.End(outcomeOf(build.StatusRunning, 0, ""), rtNow) }},
		{"end skipped", "running", func(r *build.Record) error { return r.End(outcomeOf(build.StatusSkipped, 0, ""), rtNow) }},
		{"end superseded", "running", func(r *build.Record) error { return r.End(outcomeOf(build.StatusSuperseded, 0, ""), rtNow) }},
		{"end without status", "running", func(r *build.Record) error { return r.End(outcomeOf("", 0, ""), rtNow) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			before, got := recordIn(tt.state), recordIn(tt.state)
			if err := tt.apply(&got); !errors.Is(err, build.ErrInvalid) {
				t.Fatalf("got %v, want ErrInvalid", err)
			}
			if diff := cmp.Diff(before, got); diff != "" {
				t.Errorf("a refused transition changed the record (-before +after):\n%s", diff)
			}
		})
	}
	// A record with no valid status refuses everything.
	r := build.Record{BuildID: rtID}
	if err := r.Start(rtNow, "p", "c"); !errors.Is(err, build.ErrConflict) || !strings.Contains(err.Error(), `has status ""`) {
		t.Errorf("Start of a record without status: got %v, want ErrConflict naming the status", err)
	}
}

// TestEndWithInfrastructureFailures: an outcome is an infrastructure
// failure (EndedByInfra) exactly when End records it errored with a cause:
// a stop someone asked for is a cancel, whatever the executor saw; a stop
// nobody asked for is one; the script's own end never is.
func TestEndWithInfrastructureFailures(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		asked      bool
		status     build.Status
		infra      build.InfraCause
		wantStatus build.Status
		wantInfra  build.InfraCause
		wantReason string
	}{
		{"pod deleted from outside", false, build.StatusErrored, build.InfraDeleted, build.StatusErrored, build.InfraDeleted, "x"},
		{"pod deleted by the cancel", true, build.StatusErrored, build.InfraDeleted, build.StatusCancelled, "", "cancelled on request; x"},
		{"entrypoint stopped, nobody asked, cause unnamed", false, build.StatusCancelled, "", build.StatusErrored, build.InfraDeleted, "stopped from outside Decap"},
		{"entrypoint stopped, nobody asked, killed", false, build.StatusCancelled, build.InfraKilled, build.StatusErrored, build.InfraKilled, "stopped from outside Decap"},
		{"entrypoint stopped on request", true, build.StatusCancelled, build.InfraDeleted, build.StatusCancelled, "", "cancelled on request"},
		{"script killed from outside", false, build.StatusFailed, build.InfraKilled, build.StatusErrored, build.InfraKilled, "x"},
		{"script killed, but a cancel was asked", true, build.StatusFailed, build.InfraKilled, build.StatusCancelled, "", "cancelled on request"},
		{"evicted", false, build.StatusErrored, build.InfraEvicted, build.StatusErrored, build.InfraEvicted, "x"},
		{"upload failed", false, build.StatusErrored, build.InfraUpload, build.StatusErrored, build.InfraUpload, "x"},
		{"succeeded although asked", true, build.StatusSucceeded, "", build.StatusSucceeded, "", ""},
		{"script failed", false, build.StatusFailed, "", build.StatusFailed, "", "x"},
		{"timed out", false, build.StatusTimedOut, "", build.StatusTimedOut, "", "x"},
		{"errored, not infra (build.sh missing)", false, build.StatusErrored, "", build.StatusErrored, "", "x"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := recordIn("running")
			if tt.asked {
				r = recordIn("running, cancel requested")
			}
			reason := "x"
			if tt.status == build.StatusSucceeded {
				reason = ""
			}
			o := outcomeOf(tt.status, 137, reason)
			o.Infra = tt.infra
			if err := r.End(o, rtNow); err != nil {
				t.Fatal(err)
			}
			if r.Status != tt.wantStatus || !strings.HasPrefix(r.Reason, tt.wantReason) {
				t.Errorf("record: got %s %q, want %s %q...", r.Status, r.Reason, tt.wantStatus, tt.wantReason)
			}
			if got := r.EndedByInfra(o); got != tt.wantInfra {
				t.Errorf("EndedByInfra: got %q, want %q", got, tt.wantInfra)
			}
		})
	}
	// An outcome of another build, or a record not ended by End, says
	// nothing.
	r := recordIn("errored")
	o := outcomeOf(build.StatusErrored, 1, "x")
	o.Infra, o.BuildID = build.InfraDeleted, newer
	if got := r.EndedByInfra(o); got != "" {
		t.Errorf("EndedByInfra of another build's outcome: %q, want none", got)
	}
}
