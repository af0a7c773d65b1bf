package buildtest_test

import (
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/decap-ci/decap/internal/build"
	"github.com/decap-ci/decap/internal/buildtest"
)

func TestFakeQueue(t *testing.T) {
	t.Parallel()
	buildtest.TestQueue(t, func(t *testing.T, clock *buildtest.Clock) buildtest.Queue {
		return buildtest.NewQueue(clock.Now, buildtest.QueueOptions{
			VisibilityTimeout: buildtest.SuiteVisibilityTimeout,
			RedriveLimit:      buildtest.SuiteRedriveLimit,
		})
	})
}

func TestFakeLocks(t *testing.T) {
	t.Parallel()
	buildtest.TestLocks(t, func(t *testing.T, clock *buildtest.Clock) buildtest.Locks {
		return buildtest.NewLocks(clock.Now)
	})
}

func TestFakeIdempotency(t *testing.T) {
	t.Parallel()
	buildtest.TestIdempotency(t, func(t *testing.T, clock *buildtest.Clock) buildtest.Idempotency {
		return buildtest.NewIdempotency(clock.Now)
	})
}

func TestFakeRecords(t *testing.T) {
	t.Parallel()
	buildtest.TestRecords(t, func(t *testing.T) buildtest.Records {
		return buildtest.NewRecords()
	})
}

func TestFakeRecordsSupersedeRacesLaunch(t *testing.T) {
	t.Parallel()
	buildtest.CheckSupersedeRacesLaunch(t, []buildtest.Records{buildtest.NewRecords()}, 64)
}

func TestFakeBlobs(t *testing.T) {
	t.Parallel()
	buildtest.TestBlobs(t, func(t *testing.T) buildtest.Blobs {
		return buildtest.NewBlobs()
	})
}

func TestFakeGate(t *testing.T) {
	t.Parallel()
	buildtest.TestGate(t, func(t *testing.T) buildtest.Gate {
		return buildtest.NewGate()
	})
}

func TestFakeSessions(t *testing.T) {
	t.Parallel()
	buildtest.TestSessions(t, func(t *testing.T, clock *buildtest.Clock) buildtest.Sessions {
		return buildtest.NewSessions(clock.Now)
	})
}

func TestFakeExecutor(t *testing.T) {
	t.Parallel()
	buildtest.TestExecutor(t, buildtest.ExecutorHarness{New: func(t *testing.T) (buildtest.Executor, buildtest.ExecutorDriver) {
		ex := buildtest.NewExecutor(nil)
		return ex, &fakeDriver{ex: ex, endings: map[build.ID]buildtest.ExecutorEnding{}}
	}})
}

// fakeDriver ends the FakeExecutor's builds as the suite asks.
type fakeDriver struct {
	ex      *buildtest.FakeExecutor
	mu      sync.Mutex
	endings map[build.ID]buildtest.ExecutorEnding
}

func (d *fakeDriver) Job(id build.ID, ending buildtest.ExecutorEnding) build.Job {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.endings[id] = ending
	now := time.Now()
	return build.Job{Request: build.Request{V: 1, BuildID: id, Team: "acme", Project: "widget", Ref: "main",
		RefType: build.Branch, Trigger: build.TriggerManual, RequestedAt: now}, CatalogCommit: "c0ffee", Timeout: time.Minute}
}

func (d *fakeDriver) Watching(*testing.T) {}

func (d *fakeDriver) Drive(t *testing.T, id build.ID) {
	d.mu.Lock()
	ending := d.endings[id]
	d.mu.Unlock()
	code := 143
	switch ending {
	case buildtest.EndSucceeds:
		d.ex.Finish(id, build.StatusSucceeded, 0)
	case buildtest.EndFails:
		d.ex.Finish(id, build.StatusFailed, 3)
	case buildtest.EndTimesOut:
		d.ex.End(id, build.Outcome{Status: build.StatusTimedOut, ExitCode: &code, Reason: "deadline of 1m0s exceeded"})
	case buildtest.EndErrors:
		d.ex.End(id, build.Outcome{Status: build.StatusErrored, Reason: "build.sh not found at acme/widget/build.sh"})
	case buildtest.EndUploadFails:
		zero := 0
		d.ex.End(id, build.Outcome{Status: build.StatusErrored, ExitCode: &zero, Reason: "upload log: 503", Infra: build.InfraUpload})
	case buildtest.EndRunsLong:
	default:
		t.Fatalf("no ending for build %s", id)
	}
}

func (d *fakeDriver) KillFromOutside(t *testing.T, id build.ID) {
	code := 137
	if !d.ex.End(id, build.Outcome{Status: build.StatusErrored, ExitCode: &code, Reason: "killed", Infra: build.InfraKilled}) {
		t.Fatalf("build %s does not run", id)
	}
}

func (d *fakeDriver) Runs(_ *testing.T, id build.ID) int {
	n := 0
	for _, l := range d.ex.Launched() {
		if l == id {
			n++
		}
	}
	return n
}

func TestFakeSecrets(t *testing.T) {
	t.Parallel()
	buildtest.TestSecrets(t, func(t *testing.T, clock *buildtest.Clock) buildtest.Secrets {
		return buildtest.NewSecrets(clock.Now)
	}, buildtest.SecretsFeatures{})
}

func TestFakeEventOutbox(t *testing.T) {
	t.Parallel()
	buildtest.TestEventOutbox(t, func(t *testing.T) (buildtest.Records, build.EventOutbox) {
		s := buildtest.NewRecords()
		return s, s.Outbox()
	})
}

func TestFakeEventStream(t *testing.T) {
	t.Parallel()
	buildtest.TestEventStream(t, func(t *testing.T) (message.Publisher, build.EventStream) {
		s := buildtest.NewStream()
		return s, s
	})
}

// TestFakeLaunches runs the Launches contract for the fake, which
// dispatcher tests use to take the combined path.
func TestFakeLaunches(t *testing.T) {
	t.Parallel()
	buildtest.TestLaunches(t, func(t *testing.T, clock *buildtest.Clock) buildtest.LaunchesStores {
		locks, recs, q := buildtest.NewLocks(clock.Now), buildtest.NewRecords(), buildtest.NewQueue(clock.Now, buildtest.QueueOptions{})
		return buildtest.LaunchesStores{Launches: buildtest.NewOneWrite(locks, recs, q), Locks: locks, Records: recs, Queue: q}
	})
}

// TestFakeEnds runs the Ends contract for the fake, which reaper tests
// use to take the combined path.
func TestFakeEnds(t *testing.T) {
	t.Parallel()
	buildtest.TestEnds(t, func(t *testing.T, clock *buildtest.Clock) buildtest.EndsStores {
		locks, recs, q := buildtest.NewLocks(clock.Now), buildtest.NewRecords(), buildtest.NewQueue(clock.Now, buildtest.QueueOptions{})
		return buildtest.EndsStores{Ends: buildtest.NewOneWrite(locks, recs, q), Locks: locks, Records: recs, Queue: q}
	})
}

// TestStepIntakeOnFakes runs the Intake contract for build.StepIntake over
// the fakes: the composition every backend without a combined write uses.
func TestStepIntakeOnFakes(t *testing.T) {
	t.Parallel()
	buildtest.TestIntake(t, func(t *testing.T, clock *buildtest.Clock) buildtest.IntakeStores {
		idem, recs, q := buildtest.NewIdempotency(clock.Now), buildtest.NewRecords(), buildtest.NewQueue(clock.Now, buildtest.QueueOptions{})
		return buildtest.IntakeStores{Intake: build.StepIntake{Idempotency: idem, Records: recs, Queue: q}, Idempotency: idem, Records: recs, Queue: q}
	})
}
