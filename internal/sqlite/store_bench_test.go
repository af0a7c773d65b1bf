package sqlite_test

import (
	"context"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/decap-ci/decap/internal/build"
	"github.com/decap-ci/decap/internal/sqlite"
)

// The store's share of one webhook and one launch, one at a time, as the
// serial writer runs them: what prepared statements and fewer writes per
// request are measured by (docs/BENCHMARKS.md, "Tuning").

// benchStores opens a database in a temporary directory.
func benchStores(b *testing.B) (*sqlite.DB, *sqlite.Queue, *sqlite.Records, *sqlite.Locks, *sqlite.Idempotency) {
	b.Helper()
	db, err := sqlite.Open(filepath.Join(b.TempDir(), "decap.db"), sqlite.Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { db.Close() })
	return db, sqlite.NewQueue(db, sqlite.QueueOptions{}), sqlite.NewRecords(db), sqlite.NewLocks(db), sqlite.NewIdempotency(db)
}

// cpuTime is the process's user and system CPU time so far.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// reportCPU reports the CPU time per operation since start: on a shared
// machine it moves less than the wall-clock ns/op, which waits for fsync
// and for other processes.
func reportCPU(b *testing.B, start time.Duration) {
	b.ReportMetric(float64(cpuTime(b)-start)/float64(b.N), "cpu-ns/op")
}

func benchRequest(i int) build.Request {
	now := time.Now().UTC()
	return build.Request{
		V:           build.MessageVersion,
		BuildID:     build.NewID(now),
		Team:        "team",
		Project:     "project",
		Ref:         "main",
		RefType:     build.Branch,
		SHA:         "0123456789abcdef0123456789abcdef01234567",
		Trigger:     build.TriggerPush,
		DeliveryID:  "delivery-" + strconv.Itoa(i),
		RequestedBy: "octocat",
		RequestedAt: now,
	}
}

// BenchmarkStoreWebhook is an accepted push's writes: its two claims
// (the push and the delivery), the queued record and the publish, as
// separate calls (steps: build.StepIntake, what ingest did before) and in
// one write (intake: sqlite.Intake).
func BenchmarkStoreWebhook(b *testing.B) {
	for _, variant := range []string{"steps", "intake"} {
		b.Run(variant, func(b *testing.B) {
			ctx := context.Background()
			_, q, records, _, claims := benchStores(b)
			var in build.Intake = build.StepIntake{Idempotency: claims, Records: records, Queue: q}
			if variant == "intake" {
				var err error
				if in, err = sqlite.NewIntake(q, claims, records); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportAllocs()
			defer reportCPU(b, cpuTime(b))
			for i := 0; b.Loop(); i++ {
				req := benchRequest(i)
				if _, err := in.Enqueue(ctx, req, []string{"push:" + req.DeliveryID, req.IdempotencyKey()}, time.Hour); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkStoreLaunch is a build's store calls from its publish to its
// end, one build at a time: the queued record and the publish (as
// ingest), receive, then the launch and the end as the dispatcher and the
// reaper write them: in separate calls (steps: lock, launch claim,
// running lease, running record, delete; final record, release) or in
// one write for each moment (combined: Launches.Claim, Launches.Started,
// Ends.Ended), as they do on the embedded store.
func BenchmarkStoreLaunch(b *testing.B) {
	for _, variant := range []string{"steps", "combined"} {
		b.Run(variant, func(b *testing.B) {
			ctx := context.Background()
			_, q, records, locks, _ := benchStores(b)
			launches, err := sqlite.NewLaunches(locks, records, q)
			if err != nil {
				b.Fatal(err)
			}
			ends, err := sqlite.NewEnds(locks, records, q)
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			defer reportCPU(b, cpuTime(b))
			for i := 0; b.Loop(); i++ {
				req := benchRequest(i)
				rec := build.RecordFor(req)
				if err := records.Save(ctx, rec); err != nil {
					b.Fatal(err)
				}
				if err := q.Publish(ctx, req); err != nil {
					b.Fatal(err)
				}
				msgs, err := q.Receive(ctx, 1, 0)
				if err != nil || len(msgs) != 1 {
					b.Fatalf("Receive() = %d messages, %v", len(msgs), err)
				}
				now := time.Now()
				lease := build.Lease{Key: req.LockKey(), BuildID: req.BuildID, Owner: "bench", AcquiredAt: now, ExpiresAt: now.Add(time.Minute)}
				if err := rec.Launching(now, 2, true); err != nil {
					b.Fatal(err)
				}
				started := rec
				if err := started.Start(now, "", "catalog"); err != nil {
					b.Fatal(err)
				}
				ended := started
				if err := ended.End(build.Outcome{BuildID: req.BuildID, Status: build.StatusSucceeded}, time.Now()); err != nil {
					b.Fatal(err)
				}
				until := now.Add(time.Hour)
				if variant == "combined" {
					if err := launches.Claim(ctx, lease, 10, rec); err != nil {
						b.Fatal(err)
					}
					if _, err := launches.Started(ctx, lease.Key, until, started, msgs[0].Receipt); err != nil {
						b.Fatal(err)
					}
					if _, err := ends.Ended(ctx, ended, lease.Key); err != nil {
						b.Fatal(err)
					}
					continue
				}
				for _, step := range []func() error{
					func() error { return locks.Acquire(ctx, lease, 10) },
					func() error { return records.Save(ctx, rec) },
					func() error { return locks.Extend(ctx, lease.Key, lease.BuildID, until) },
					func() error { return records.Save(ctx, started) },
					func() error { return q.Delete(ctx, msgs[0].Receipt) },
					func() error { return records.Save(ctx, ended) },
					func() error { _, err := locks.Release(ctx, lease.Key, lease.BuildID); return err },
				} {
					if err := step(); err != nil {
						b.Fatal(err)
					}
				}
			}
		})
	}
}

// BenchmarkStoreTwoOpens is webhooks written through two opens of one
// database file at once, as ingest and the dispatcher write it: each
// open's writer meets the other's write lock. ns/op is per webhook.
func BenchmarkStoreTwoOpens(b *testing.B) {
	ctx := context.Background()
	path := filepath.Join(b.TempDir(), "decap.db")
	var opens [2]*sqlite.DB
	for i := range opens {
		db, err := sqlite.Open(path, sqlite.Options{})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { db.Close() })
		opens[i] = db
	}
	var next atomic.Int64
	var turn atomic.Int64
	b.ReportAllocs()
	defer reportCPU(b, cpuTime(b))
	b.SetParallelism(2) // 4 goroutines on 2 CPUs, taking the opens in turn
	b.RunParallel(func(pb *testing.PB) {
		db := opens[turn.Add(1)%2]
		q, records, claims := sqlite.NewQueue(db, sqlite.QueueOptions{}), sqlite.NewRecords(db), sqlite.NewIdempotency(db)
		for pb.Next() {
			req := benchRequest(int(next.Add(1)))
			if _, err := claims.Claim(ctx, req.IdempotencyKey(), req.BuildID, time.Hour); err != nil {
				b.Error(err)
				return
			}
			if err := records.Save(ctx, build.RecordFor(req)); err != nil {
				b.Error(err)
				return
			}
			if err := q.Publish(ctx, req); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
