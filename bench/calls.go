package main

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/decap-ci/decap/internal/build"
)

// calls counts the calls a service makes to its backend ports, by
// "port.operation". It is a backend.Instrumenter: its wrappers pass every
// call through unchanged. Lock releases are not counted.
type calls struct {
	mu sync.Mutex
	n  map[string]int
}

func newCalls() *calls { return &calls{n: map[string]int{}} }

func (c *calls) inc(op string) {
	c.mu.Lock()
	c.n[op]++
	c.mu.Unlock()
}

// snapshot returns the counts so far.
func (c *calls) snapshot() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]int, len(c.n))
	for k, v := range c.n {
		out[k] = v
	}
	return out
}

// since returns the counts made after the snapshot before.
func (c *calls) since(before map[string]int) map[string]int {
	out := c.snapshot()
	for k, v := range before {
		out[k] -= v
		if out[k] == 0 {
			delete(out, k)
		}
	}
	return out
}

// sum adds the counts of the operations whose name starts with prefix.
func sum(m map[string]int, prefix string) int {
	n := 0
	for k, v := range m {
		if strings.HasPrefix(k, prefix) {
			n += v
		}
	}
	return n
}

// format lists counts as "op n, op n", sorted by name.
func format(m map[string]int) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s %d", k, m[k])
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}

func (c *calls) Queue(q build.Queue) build.Queue                   { return countedQueue{q, c} }
func (c *calls) Locks(l build.Locks) build.Locks                   { return countedLocks{l, c} }
func (c *calls) Idempotency(i build.Idempotency) build.Idempotency { return countedIdempotency{i, c} }
func (c *calls) Records(r build.Records) build.Records             { return countedRecords{r, c} }
func (c *calls) Blobs(b build.Blobs) build.Blobs                   { return countedBlobs{b, c} }
func (c *calls) Gate(g build.Gate) build.Gate                      { return countedGate{g, c} }
func (c *calls) Intake(i build.Intake) build.Intake                { return countedIntake{i, c} }

// The wrappers embed the port, so that a method they do not count passes
// through as it is.

type countedQueue struct {
	build.Queue
	c *calls
}

func (w countedQueue) Publish(ctx context.Context, reqs ...build.Request) error {
	w.c.inc("queue.publish")
	return w.Queue.Publish(ctx, reqs...)
}

func (w countedQueue) Receive(ctx context.Context, max int, wait time.Duration) ([]build.Message, error) {
	w.c.inc("queue.receive")
	return w.Queue.Receive(ctx, max, wait)
}

func (w countedQueue) Delete(ctx context.Context, receipt string) error {
	w.c.inc("queue.delete")
	return w.Queue.Delete(ctx, receipt)
}

func (w countedQueue) ChangeVisibility(ctx context.Context, receipt string, d time.Duration) error {
	w.c.inc("queue.change_visibility")
	return w.Queue.ChangeVisibility(ctx, receipt, d)
}

func (w countedQueue) DeadLetter(ctx context.Context, m build.Message, reason string) error {
	w.c.inc("queue.dead_letter")
	return w.Queue.DeadLetter(ctx, m, reason)
}

func (w countedQueue) Depth(ctx context.Context) (build.QueueStats, error) {
	w.c.inc("queue.depth")
	return build.DepthOf(ctx, w.Queue)
}

func (w countedQueue) Stats(ctx context.Context) (build.QueueStats, error) {
	w.c.inc("queue.stats")
	return w.Queue.Stats(ctx)
}

type countedLocks struct {
	build.Locks
	c *calls
}

func (w countedLocks) Acquire(ctx context.Context, l build.Lease, cap int) error {
	w.c.inc("locks.acquire")
	return w.Locks.Acquire(ctx, l, cap)
}

func (w countedLocks) Extend(ctx context.Context, key string, id build.ID, until time.Time) error {
	w.c.inc("locks.extend")
	return w.Locks.Extend(ctx, key, id, until)
}

func (w countedLocks) List(ctx context.Context) ([]build.Lease, error) {
	w.c.inc("locks.list")
	return w.Locks.List(ctx)
}

type countedIdempotency struct {
	build.Idempotency
	c *calls
}

func (w countedIdempotency) Claim(ctx context.Context, key string, id build.ID, ttl time.Duration) (build.ID, error) {
	w.c.inc("idempotency.claim")
	return w.Idempotency.Claim(ctx, key, id, ttl)
}

type countedRecords struct {
	build.Records
	c *calls
}

func (w countedRecords) Save(ctx context.Context, r build.Record) error {
	w.c.inc("records.save")
	return w.Records.Save(ctx, r)
}

func (w countedRecords) Get(ctx context.Context, id build.ID) (build.Record, error) {
	w.c.inc("records.get")
	return w.Records.Get(ctx, id)
}

func (w countedRecords) ListProject(ctx context.Context, team, project string, limit int, cursor string) ([]build.Record, string, error) {
	w.c.inc("records.list_project")
	return w.Records.ListProject(ctx, team, project, limit, cursor)
}

func (w countedRecords) Running(ctx context.Context) ([]build.Record, error) {
	w.c.inc("records.running")
	return w.Records.Running(ctx)
}

func (w countedRecords) Waiting(ctx context.Context, offset, limit int) ([]build.Record, int, error) {
	w.c.inc("records.waiting")
	return w.Records.Waiting(ctx, offset, limit)
}

func (w countedRecords) AverageDuration(ctx context.Context, team, project string, n int) (time.Duration, int, error) {
	w.c.inc("records.average_duration")
	return w.Records.AverageDuration(ctx, team, project, n)
}

func (w countedRecords) Projects(ctx context.Context) ([]string, error) {
	w.c.inc("records.projects")
	return w.Records.Projects(ctx)
}

type countedBlobs struct {
	build.Blobs
	c *calls
}

func (w countedBlobs) Put(ctx context.Context, key string, r io.Reader) error {
	w.c.inc("blobs.put")
	return w.Blobs.Put(ctx, key, r)
}

func (w countedBlobs) Open(ctx context.Context, key string) (io.ReadCloser, error) {
	w.c.inc("blobs.open")
	return w.Blobs.Open(ctx, key)
}

type countedGate struct {
	build.Gate
	c *calls
}

func (w countedGate) Get(ctx context.Context) (build.GateState, error) {
	w.c.inc("gate.get")
	return w.Gate.Get(ctx)
}

func (w countedGate) Set(ctx context.Context, g build.GateState) error {
	w.c.inc("gate.set")
	return w.Gate.Set(ctx, g)
}

type countedIntake struct {
	build.Intake
	c *calls
}

func (w countedIntake) Enqueue(ctx context.Context, req build.Request, claims []string, ttl time.Duration) (build.ID, error) {
	w.c.inc("intake.enqueue")
	return w.Intake.Enqueue(ctx, req, claims, ttl)
}

func (w countedIntake) EnqueueSuperseding(ctx context.Context, req build.Request, claims []string, ttl time.Duration, now time.Time) (build.ID, []build.ID, error) {
	w.c.inc("intake.enqueue")
	return w.Intake.EnqueueSuperseding(ctx, req, claims, ttl, now)
}
