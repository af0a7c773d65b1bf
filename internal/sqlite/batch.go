package sqlite

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"
)

// Group commit. Every write of a process goes through one writer goroutine
// that runs the writes waiting at that moment in one transaction, each in a
// savepoint of its own, and commits them together: one fsync
// (synchronous=FULL) for the batch instead of one per write. Each write
// still runs alone and in order, sees the writes before it, and is rolled
// back alone when its function fails; its caller returns only after the
// commit, with the commit's error if that failed. A single waiting write
// runs exactly as it would without batching.
//
// When the writer had to wait for another process's write lock, the
// writes that came meanwhile join the transaction that waited for it,
// instead of waiting for one more. Two processes writing at once (the
// dispatcher and the reaper, ingest and the dispatcher) thus take turns
// with fuller transactions, where every turn costs each of them a commit
// and a page cache the other's commit made stale (docs/BENCHMARKS.md,
// tuning 21). A process writing alone batches as before.

// maxBatch bounds the writes committed together, so that one commit never
// holds the lock long.
const maxBatch = 64

// States of a write request.
const (
	reqPending   int32 = iota // queued: the writer has not started it
	reqStarted                // the writer runs it; its caller waits for the outcome
	reqAbandoned              // its caller gave up before it started; skipped
)

var errClosed = errors.New("database is closed")

// writeReq is one write waiting for the writer.
type writeReq struct {
	ctx   context.Context
	fn    func(*Tx) error
	state atomic.Int32
	done  chan error // buffered: the writer never blocks on a caller
}

// startWriter starts the writer goroutine; stopWriter ends it.
func (db *DB) startWriter() {
	db.writes = make(chan *writeReq)
	db.stop = make(chan struct{})
	db.stopped = make(chan struct{})
	db.stopCtx, db.cancelStop = context.WithCancel(context.Background())
	go db.writer()
}

func (db *DB) stopWriter() {
	db.stopOnce.Do(func() {
		if db.stop != nil {
			db.cancelStop() // a wait for another process's lock
			close(db.stop)
			<-db.stopped
		}
	})
}

func (db *DB) writer() {
	defer close(db.stopped)
	batch := make([]*writeReq, 0, maxBatch)
	for {
		select {
		case r := <-db.writes:
			batch = append(batch[:0], r)
		case <-db.stop:
			return
		}
		batch = db.runBatch(db.gather(batch))
		clear(batch)             // let the requests go
		db.stmts.prepare(db.wdb) // between transactions: the connection is free
	}
}

// gather adds the writes waiting now to batch, up to maxBatch.
func (db *DB) gather(batch []*writeReq) []*writeReq {
	for len(batch) < maxBatch {
		select {
		case r := <-db.writes:
			batch = append(batch, r)
		default:
			return batch
		}
	}
	return batch
}

// submit hands fn to the writer and waits for its outcome. A caller whose
// ctx ends before its write started gets ctx's error and the write never
// runs; once started, the caller waits for the commit, so an error always
// means nothing was written.
func (db *DB) submit(ctx context.Context, fn func(*Tx) error) error {
	r := &writeReq{ctx: ctx, fn: fn, done: make(chan error, 1)}
	select {
	case db.writes <- r:
	case <-ctx.Done():
		return ctx.Err()
	case <-db.stop:
		return errClosed
	}
	select {
	case err := <-r.done:
		return err
	case <-ctx.Done():
		if r.state.CompareAndSwap(reqPending, reqAbandoned) {
			return ctx.Err()
		}
		return <-r.done
	}
}

// runBatch takes the write lock, adds the writes that came while it
// waited for another process's lock to batch, and runs the live ones:
// alone as before, or together. It returns batch as run.
func (db *DB) runBatch(batch []*writeReq) []*writeReq {
	// The transaction outlives any one caller: a caller that gives up
	// before its write starts is skipped, one that gives up later waits
	// for the commit instead (see submit).
	sqlTx, waited, err := db.beginWrite(db.stopCtx)
	if waited {
		batch = db.gather(batch)
	}
	live := make([]*writeReq, 0, len(batch))
	for _, r := range batch {
		if r.state.CompareAndSwap(reqPending, reqStarted) {
			live = append(live, r)
		}
	}
	if err != nil {
		if db.stopCtx.Err() != nil {
			err = errClosed
		}
		for _, r := range live {
			r.done <- classify(err)
		}
		return batch
	}
	defer db.stats.held(time.Now(), len(live))
	tx := &Tx{Tx: sqlTx, stmts: db.stmts}
	switch len(live) {
	case 0:
		_ = tx.Rollback()
	case 1:
		live[0].done <- commitOne(tx, live[0].fn)
	default:
		results, err := writeBatch(tx, live)
		for i, r := range live {
			switch {
			case results[i] != nil:
				r.done <- classify(results[i])
			case err != nil:
				r.done <- classify(err)
			default:
				r.done <- nil
			}
		}
	}
	return batch
}

// commitOne runs fn in tx and commits, or rolls back if fn fails.
func commitOne(tx *Tx, fn func(*Tx) error) error {
	if err := fn(tx); err != nil {
		_ = tx.Rollback() // the error of fn matters more
		return classify(err)
	}
	return classify(tx.Commit())
}

// writeBatch runs the writes in tx, each in a savepoint, and commits.
// results[i] is the error of the i-th write's own function (its changes
// rolled back); err is the transaction's error, which undoes every write
// that had none of its own.
func writeBatch(tx *Tx, live []*writeReq) (results []error, err error) {
	results = make([]error, len(live))
	for i, r := range live {
		if err := r.ctx.Err(); err != nil {
			results[i] = err
			continue
		}
		if _, err := tx.ExecContext(context.Background(), "SAVEPOINT w"); err != nil {
			_ = tx.Rollback()
			return results, fmt.Errorf("savepoint: %w", err)
		}
		if ferr := r.fn(tx); ferr != nil {
			results[i] = ferr
			// A statement interrupted by its caller's context may have
			// rolled the whole transaction back: then this fails, and so
			// does the batch.
			if _, err := tx.ExecContext(context.Background(), "ROLLBACK TO w"); err != nil {
				_ = tx.Rollback()
				return results, fmt.Errorf("roll back a failed write: %w", err)
			}
		}
		if _, err := tx.ExecContext(context.Background(), "RELEASE w"); err != nil {
			_ = tx.Rollback()
			return results, fmt.Errorf("release savepoint: %w", err)
		}
	}
	return results, tx.Commit()
}
