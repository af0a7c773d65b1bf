package dispatch

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/decap-ci/decap/internal/build"
)

// Gate is the dispatch gate, shared by every replica: while Get says
// Paused, Run takes nothing off the queue. Get returns the open gate (the
// zero GateState) when it was never set; an error leaves the state Run
// last saw in force.
type Gate interface {
	Get(ctx context.Context) (build.GateState, error)
}

// gateReadTimeout bounds one read of the gate, so that a hanging store
// does not stall the consumer loop; a timed-out read keeps the last state.
const gateReadTimeout = 10 * time.Second

// gateWatch is Run's view of the gate: the state last read, trusted for
// the gate interval, so that an idle dispatcher reads it about once per
// long poll and a paused one once per interval. Run's first receive loop
// reads it (waitOpen, pausedAfter: not safe for concurrent use); the
// others only look at what it read (openFresh, knownPaused), which any
// goroutine may. Its clock is the real, monotonic one, as the waits are
// real.
type gateWatch struct {
	gate    Gate // nil: always open
	every   time.Duration
	log     *slog.Logger
	obs     Observer // hears every successful read
	failing bool     // the last read failed

	// mu guards paused and readAt, written only by the method read (the
	// first loop's): that loop reads them without it, the others
	// (openFresh, knownPaused) with it.
	mu     sync.Mutex
	paused bool      // last known; open until a read says otherwise
	readAt time.Time // of the last read, failed or not; zero before the first
}

// openFresh reports whether the last read left the gate open and is no
// older than the gate interval: what waitOpen would trust without a read.
// False before the first read (of a gate that is set).
func (w *gateWatch) openFresh() bool {
	if w.gate == nil {
		return true
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return !w.paused && !w.readAt.IsZero() && time.Since(w.readAt) < w.every
}

// knownPaused reports whether the last read left the gate paused.
func (w *gateWatch) knownPaused() bool {
	if w.gate == nil {
		return false
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.paused
}

// waitOpen returns true once the gate is open, reading it when the last
// read is older than the gate interval; while it is paused it waits, and
// reads again every interval. It returns false when ctx ends first.
func (w *gateWatch) waitOpen(ctx context.Context) bool {
	if w.gate == nil {
		return true
	}
	for {
		if w.readAt.IsZero() || time.Since(w.readAt) >= w.every {
			w.read(ctx)
		}
		if ctx.Err() != nil {
			return false
		}
		if !w.paused {
			return true
		}
		t := time.NewTimer(w.every - time.Since(w.readAt))
		select {
		case <-ctx.Done():
			t.Stop()
			return false
		case <-t.C:
		}
	}
}

// read reads the gate and logs a change of state once; a failed read keeps
// the last known state and is logged once per run of failures.
func (w *gateWatch) read(ctx context.Context) {
	rctx, cancel := context.WithTimeout(ctx, gateReadTimeout)
	st, err := w.gate.Get(rctx)
	cancel()
	w.mu.Lock()
	w.readAt = time.Now()
	w.mu.Unlock()
	if err != nil {
		if ctx.Err() != nil {
			return
		}
		if !w.failing {
			w.log.Warn("read dispatch gate; keeping its last known state", "paused", w.paused, "err", err)
		}
		w.failing = true
		return
	}
	if w.failing {
		w.log.Info("dispatch gate readable again")
		w.failing = false
	}
	switch {
	case st.Paused && !w.paused:
		w.log.Warn("dispatch paused: taking nothing off the queue until resumed",
			"reason", st.Reason, "by", st.By, "since", st.Since)
	case !st.Paused && w.paused:
		w.log.Info("dispatch resumed", "by", st.By, "since", st.Since)
	}
	w.mu.Lock()
	w.paused = st.Paused
	w.mu.Unlock()
	if w.obs != nil {
		w.obs.Paused(w.paused)
	}
}

// receivedAtOnce is how long a receive may take and still count as one
// that found its messages waiting (a busy queue: microseconds on SQLite,
// a round trip on SQS), not one that waited for them in a long poll.
const receivedAtOnce = 100 * time.Millisecond

// pausedAfter reports whether the gate is paused after a receive that
// lasted took: read afresh when the receive waited for its messages in a
// long poll (a pause set meanwhile takes effect at once) or the last read
// is older than the gate interval; else as last read, as waitOpen trusts
// it. The last known state if the read fails. So a busy dispatcher reads
// the gate once per interval, not once per batch (a GetItem each on
// DynamoDB).
func (w *gateWatch) pausedAfter(ctx context.Context, took time.Duration) bool {
	if w.gate == nil {
		return false
	}
	if took >= receivedAtOnce || time.Since(w.readAt) >= w.every {
		w.read(ctx)
	}
	return w.paused
}
