package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/decap-ci/decap/internal/build"
)

// Gate stores the dispatch gate (buildtest.Gate) in a one-row table, shared
// by every process that opens the database. It is safe for concurrent use.
type Gate struct {
	db *DB
}

// NewGate returns the dispatch gate stored in db.
func NewGate(db *DB) *Gate {
	return &Gate{db: db}
}

// Get returns the gate; open (the zero GateState) if it was never set.
func (g *Gate) Get(ctx context.Context) (build.GateState, error) {
	var (
		st     build.GateState
		paused int
		since  int64
	)
	err := g.db.rdb.QueryRowContext(ctx, `SELECT paused, reason, set_by, since FROM dispatch_gate WHERE id = 1`).
		Scan(&paused, &st.Reason, &st.By, &since)
	if errors.Is(err, sql.ErrNoRows) {
		return build.GateState{}, nil
	}
	if err != nil {
		return build.GateState{}, fmt.Errorf("get dispatch gate: %w", classify(err))
	}
	st.Paused, st.Since = paused != 0, fromNanos(since)
	return st, nil
}

// Set replaces the gate.
func (g *Gate) Set(ctx context.Context, st build.GateState) error {
	paused := 0
	if st.Paused {
		paused = 1
	}
	err := g.db.write(ctx, func(tx *Tx) error {
		_, err := tx.ExecContext(ctx, `
INSERT INTO dispatch_gate (id, paused, reason, set_by, since) VALUES (1, ?, ?, ?, ?)
ON CONFLICT (id) DO UPDATE SET paused = excluded.paused, reason = excluded.reason,
	set_by = excluded.set_by, since = excluded.since`,
			paused, st.Reason, st.By, nanos(st.Since))
		return err
	})
	if err != nil {
		return fmt.Errorf("set dispatch gate: %w", err)
	}
	return nil
}
