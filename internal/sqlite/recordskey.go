package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/decap-ci/decap/internal/build"
)

// Unfinished returns the queued, deferred and running records of lock key
// key, oldest first (by QueuedAt, then BuildID). It reads the partial
// index of the project's unfinished records (records_unfinished) and
// keeps those of the key's ref. A malformed key gives build.ErrInvalid.
func (s *Records) Unfinished(ctx context.Context, key string) ([]build.Record, error) {
	team, project, ref, err := build.SplitLockKey(key)
	if err != nil {
		return nil, fmt.Errorf("list unfinished builds of %s: %w", key, err)
	}
	recs, err := s.query(ctx, unfinishedQuery, team, project, ref)
	if err != nil {
		return nil, fmt.Errorf("list unfinished builds of %s: %w", key, err)
	}
	return recs, nil
}

// unfinishedQuery selects one lock key's unfinished records, oldest
// first: the unfinished condition is the partial index's, so SQLite reads
// records_unfinished; the ref is in the record's JSON, stored as a BLOB,
// hence the cast (SQLite reads a BLOB as JSONB).
const unfinishedQuery = `
SELECT doc FROM records
WHERE team = ? AND project = ? AND unfinished = 1
	AND json_extract(CAST(doc AS TEXT), '$.ref') = ?
ORDER BY queued_at, id`

// EndWaiting writes r, which must be final, only if the stored record is
// queued or deferred and not being launched (its LaunchingAt is zero); see
// buildtest.Records. The check, the write and its event in the outbox
// (see Outbox) are one transaction.
func (s *Records) EndWaiting(ctx context.Context, r build.Record) error {
	if !r.Status.Final() {
		return fmt.Errorf("end waiting build %s: %w: status %q is not final", r.BuildID, build.ErrInvalid, r.Status)
	}
	err := s.db.write(ctx, func(tx *Tx) error { return s.endWaitingTx(ctx, tx, r) })
	if err != nil {
		return fmt.Errorf("end waiting build %s: %w", r.BuildID, err)
	}
	s.db.eventsWritten()
	return nil
}

// endWaitingTx is EndWaiting in tx.
func (s *Records) endWaitingTx(ctx context.Context, tx *Tx, r build.Record) error {
	var stored []byte
	var version int
	err := tx.QueryRowContext(ctx, `SELECT version, doc FROM records WHERE id = ?`, string(r.BuildID)).Scan(&version, &stored)
	if errors.Is(err, sql.ErrNoRows) {
		return build.ErrNotFound
	}
	if err != nil {
		return err
	}
	old, err := s.decodeStored(r.BuildID, stored)
	if err != nil {
		return err
	}
	if !old.Waiting() || !old.LaunchingAt.IsZero() {
		return fmt.Errorf("%w: stored status %s, launching since %v", build.ErrConflict, old.Status, old.LaunchingAt)
	}
	r.Number = old.Number // the store's: kept, as Save keeps it
	return s.writeEndedTx(ctx, tx, r, version)
}

// writeEndedTx writes r, a waiting record now final whose stored version
// is version (read in tx, under the write lock, and found waiting and not
// being launched), and its event.
func (s *Records) writeEndedTx(ctx context.Context, tx *Tx, r build.Record, version int) error {
	doc, err := json.Marshal(r)
	if err != nil {
		return err
	}
	// The status in the WHERE repeats the check for the reader: the
	// write transaction holds the database's write lock throughout.
	res, err := tx.ExecContext(ctx, `
UPDATE records SET status = ?, rank = ?, unfinished = 0, started_at = ?, finished_at = ?, version = ?, doc = ?
WHERE id = ? AND status IN ('queued', 'deferred')`,
		string(r.Status), r.Status.Rank(), nullNanos(r.StartedAt), nullNanos(r.FinishedAt), version+1, doc, string(r.BuildID))
	if err != nil {
		return err
	}
	if n, err := res.RowsAffected(); err != nil {
		return err
	} else if n != 1 { // cannot be: the write lock is held since the read
		return fmt.Errorf("%w: stored record changed under the write lock", build.ErrConflict)
	}
	return s.db.writeEvent(ctx, tx, r, version+1, doc)
}

// unfinishedTx is Unfinished read in tx, with each record's stored
// version.
func (s *Records) unfinishedTx(ctx context.Context, tx *Tx, key string) ([]build.Record, map[build.ID]int, error) {
	team, project, ref, err := build.SplitLockKey(key)
	if err != nil {
		return nil, nil, err
	}
	rows, err := tx.QueryContext(ctx, unfinishedVersionsQuery, team, project, ref)
	if err != nil {
		return nil, nil, err
	}
	defer rows.Close()
	var list []build.Record
	versions := map[build.ID]int{}
	for rows.Next() {
		var doc []byte
		var version int
		if err := rows.Scan(&version, &doc); err != nil {
			return nil, nil, err
		}
		var r build.Record
		if err := json.Unmarshal(doc, &r); err != nil {
			return nil, nil, fmt.Errorf("decode record: %w", err)
		}
		list = append(list, r)
		versions[r.BuildID] = version
	}
	return list, versions, rows.Err()
}

// unfinishedVersionsQuery is unfinishedQuery with the versions.
const unfinishedVersionsQuery = `
SELECT version, doc FROM records
WHERE team = ? AND project = ? AND unfinished = 1
	AND json_extract(CAST(doc AS TEXT), '$.ref') = ?
ORDER BY queued_at, id`
