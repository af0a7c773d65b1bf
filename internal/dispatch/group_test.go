package dispatch_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/decap-ci/decap/internal/build"
	"github.com/decap-ci/decap/internal/dispatch"
)

// batchQueue hands out one batch once, with two messages of one group, as
// SQS FIFO may, and records visibility changes and deletes.
type batchQueue struct {
	mu       sync.Mutex
	batch    []build.Message
	extended map[string]int // receipt → extensions (d > 0)
	deleted  []string
}

func (q *batchQueue) Receive(ctx context.Context, max int, wait time.Duration) ([]build.Message, error) {
	q.mu.Lock()
	b := q.batch
	q.batch = nil
	q.mu.Unlock()
	if b == nil {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(wait):
		}
	}
	return b, nil
}

func (q *batchQueue) Delete(_ context.Context, receipt string) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.deleted = append(q.deleted, receipt)
	return nil
}

func (q *batchQueue) ChangeVisibility(_ context.Context, receipt string, d time.Duration) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if d > 0 {
		q.extended[receipt]++
	}
	return nil
}

func (q *batchQueue) DeadLetter(context.Context, build.Message, string) error { return nil }

func TestBatchedFollowerStaysInvisibleWhileLeaderIsDecided(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	f := newFixture(0, nil)
	now := time.Now()
	first := request("decap-ci/hello", "main", build.TriggerPush, now)
	second := request("decap-ci/hello", "main", build.TriggerPush, now.Add(time.Millisecond))
	m1, m2 := message(t, first), message(t, second)
	m1.Receipt, m2.Receipt = "r1", "r2"
	q := &batchQueue{batch: []build.Message{m1, m2}, extended: map[string]int{}}
	release := f.slowly()
	d := dispatch.New(dispatch.Config{VisibilityTimeout: 200 * time.Millisecond, WaitTime: 50 * time.Millisecond},
		dispatch.Deps{Queue: q, Catalog: f.catalog, Locks: f.locks, Idempotency: f.idem, Records: f.records, Launcher: f.launcher, Now: time.Now})
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	// The first decision hangs in launch for several visibility timeouts.
	time.Sleep(700 * time.Millisecond)
	q.mu.Lock()
	follower := q.extended["r2"]
	q.mu.Unlock()
	if follower == 0 {
		t.Errorf("the follower's visibility was never extended while the leader was decided")
	}
	close(release)
	// The leader launches; the follower is then deferred (its branch is
	// busy) — or launched, never lost.
	waitFor(t, "the leader's launch", func() bool { return len(f.launcher.Launched()) == 1 })
	cancel()
	<-done
}
