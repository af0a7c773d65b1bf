package dispatch

import (
	"context"
	"log/slog"
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
// long poll and a paused one once per interval. It belongs to one Run
// loop and is not safe for concurrent use. Its clock is the real,
// monotonic one, as the waits are real.
type gateWatch struct {
	gate    Gate // nil: always open
	every   time.Duration
	log     *slog.Logger
	obs     Observer  // hears every successful read
	paused  bool      // last known; open until a read says otherwise
	readAt  time.Time // of the last read, failed or not; zero before the first
	failing bool      // the last read failed
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
	w.readAt = time.Now()
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
	w.paused = st.Paused
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
