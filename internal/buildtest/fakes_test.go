package buildtest_test

import (
	"testing"

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
