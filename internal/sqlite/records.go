package sqlite

import (
	"context"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/decap-ci/decap/internal/build"
)

// DefaultPageSize is the page size ListProject uses when limit <= 0.
const DefaultPageSize = 50

// Records stores build records (buildtest.Records). Each record is kept whole
// as JSON next to the columns that queries need. It is safe for concurrent
// use.
type Records struct {
	db *DB
}

// NewRecords returns the build records stored in db.
func NewRecords(db *DB) *Records {
	return &Records{db: db}
}

// Save writes r, creating or replacing the stored record, unless the stored
// record's status ranks higher than r's or is final: then build.ErrConflict
// and nothing changes. A record it creates gets its project's next number
// (counted in project_numbers, in the same transaction, so numbers have no
// gaps and every process sharing the file counts on); a record it replaces
// keeps its stored number, and its launch claim when r has none
// (build.Record.KeepClaim). A record without build ID or with an unknown
// status gives build.ErrInvalid.
//
// A change adds its event to the outbox in the same transaction (the
// record's next version; see Outbox), or to the stream when it takes the
// records' events (Stream.TakeRecordEvents); a Save that leaves the record
// as it is (build.SameRecord) writes nothing.
func (s *Records) Save(ctx context.Context, r build.Record) error {
	if r.BuildID == "" || !r.Status.Valid() {
		return fmt.Errorf("save record %s: %w: empty build id or unknown status %q", r.BuildID, build.ErrInvalid, r.Status)
	}
	pre, err := encodeRecord(r)
	if err != nil {
		return fmt.Errorf("save record %s: %w", r.BuildID, err)
	}
	changed := false
	err = s.db.write(ctx, func(tx *Tx) error {
		var err error
		changed, err = s.saveTx(ctx, tx, r, pre)
		return err
	})
	if err != nil {
		return fmt.Errorf("save record %s: %w", r.BuildID, err)
	}
	if changed {
		s.db.eventsWritten()
	}
	return nil
}

// saveTx is Save within tx: it tells whether it changed the record (and
// wrote its event); the caller calls db.eventsWritten after the commit.
// pre, if not nil, is r encoded (encodeRecord), made by the caller before the
// write lock: used when the store keeps r as it is (its number, no claim
// to keep), which is every save of a record already launching.
func (s *Records) saveTx(ctx context.Context, tx *Tx, r build.Record, pre []byte) (changed bool, err error) {
	var stored []byte
	var row int64
	var version, rank int
	var old build.Record
	number, kept := r.Number, false
	err = tx.QueryRowContext(ctx, `SELECT rowid, number, version, rank, doc FROM records WHERE id = ?`, string(r.BuildID)).Scan(&row, &r.Number, &version, &rank, &stored)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		version = 0
		err = tx.QueryRowContext(ctx, `
INSERT INTO project_numbers (team, project, last) VALUES (?, ?, 1)
ON CONFLICT (team, project) DO UPDATE SET last = last + 1
RETURNING last`, r.Team, r.Project).Scan(&r.Number)
	case err == nil:
		if old, err = s.decodeStored(r.BuildID, stored); err != nil {
			return false, err
		}
		kept = r.LaunchingAt.IsZero()
		r.KeepClaim(old)
		if rank < 2 && rank <= r.Status.Rank() && build.SameRecord(old, r) {
			return false, nil // the record as it is: no write, no event
		}
	}
	if err != nil {
		return false, err
	}
	doc := pre
	if doc == nil || kept || r.Number != number {
		if doc, err = json.Marshal(r); err != nil {
			return false, err
		}
	}
	// A stored record whose key columns stay as they are (a build's
	// team, project and queue time never change) is updated in the
	// columns that change: SQLite rewrites the entries of every index
	// whose columns an UPDATE sets, so the upsert below, which sets them
	// all, rewrote the project history's entry on every save too. A save
	// that keeps the status (a launch claim) leaves the status out as
	// well: the partial indexes of waiting and running records have it in
	// their WHERE, so setting it rewrote their entries. The unfinished
	// column, which the index of unfinished records names instead
	// (schemaV12), is set only when it changes (at the end), for the same
	// reason. The WHERE of the UPDATE is the rank rule: rank 2 is final;
	// it finds the row by the rowid read above, where the id would take
	// a second search of the id's index.
	keysStay := version > 0 && old.Team == r.Team && old.Project == r.Project && old.QueuedAt.Equal(r.QueuedAt)
	var res sql.Result
	switch {
	case keysStay && old.Status == r.Status:
		res, err = tx.ExecContext(ctx, `UPDATE records SET started_at = ?, finished_at = ?, version = ?, doc = ?
WHERE rowid = ? AND rank < 2 AND rank <= ?`,
			nullNanos(r.StartedAt), nullNanos(r.FinishedAt), version+1, doc, row, r.Status.Rank())
	case keysStay && unfinished(old.Status) == unfinished(r.Status):
		res, err = tx.ExecContext(ctx, `UPDATE records SET status = ?, rank = ?, started_at = ?, finished_at = ?, version = ?, doc = ?
WHERE rowid = ? AND rank < 2 AND rank <= ?`,
			string(r.Status), r.Status.Rank(), nullNanos(r.StartedAt), nullNanos(r.FinishedAt), version+1, doc, row, r.Status.Rank())
	case keysStay:
		res, err = tx.ExecContext(ctx, `UPDATE records SET status = ?, rank = ?, unfinished = ?, started_at = ?, finished_at = ?, version = ?, doc = ?
WHERE rowid = ? AND rank < 2 AND rank <= ?`,
			string(r.Status), r.Status.Rank(), unfinished(r.Status), nullNanos(r.StartedAt), nullNanos(r.FinishedAt), version+1, doc,
			row, r.Status.Rank())
	default:
		// The WHERE of the upsert is the rank rule: rank 2 is final. A
		// stored record keeps its number.
		res, err = tx.ExecContext(ctx, `
INSERT INTO records (id, team, project, status, rank, unfinished, queued_at, started_at, finished_at, number, version, doc)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (id) DO UPDATE SET team = excluded.team, project = excluded.project,
status = excluded.status, rank = excluded.rank, unfinished = excluded.unfinished, queued_at = excluded.queued_at,
started_at = excluded.started_at, finished_at = excluded.finished_at, version = excluded.version, doc = excluded.doc
WHERE records.rank < 2 AND records.rank <= excluded.rank`,
			string(r.BuildID), r.Team, r.Project, string(r.Status), r.Status.Rank(), unfinished(r.Status), nanos(r.QueuedAt),
			nullNanos(r.StartedAt), nullNanos(r.FinishedAt), r.Number, version+1, doc)
	}
	if err != nil {
		return false, err
	}
	if n, err := res.RowsAffected(); err != nil {
		return false, err
	} else if n == 0 { // refused by the rank rule: the record is stored, and old is it
		return false, fmt.Errorf("%w: stored status %s, new status %s", build.ErrConflict, old.Status, r.Status)
	}
	if err := s.db.writeEvent(ctx, tx, r, version+1, doc); err != nil {
		return false, err
	}
	s.db.docs.put(r.BuildID, doc, r)
	return true, nil
}

// decodeStored returns the record stored as doc: the one this process
// last wrote or read for id if doc is its document (docCache), else doc
// decoded.
func (s *Records) decodeStored(id build.ID, doc []byte) (build.Record, error) {
	if r, ok := s.db.docs.get(id, doc); ok {
		return r, nil
	}
	var r build.Record
	if err := json.Unmarshal(doc, &r); err != nil {
		return build.Record{}, fmt.Errorf("decode stored record: %w", err)
	}
	s.db.docs.put(id, doc, r)
	return r, nil
}

// encodeRecord is r as saveTx stores it, for its pre.
func encodeRecord(r build.Record) ([]byte, error) {
	doc, err := json.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("encode record: %w", err)
	}
	return doc, nil
}

// Get returns one record; build.ErrNotFound if none.
func (s *Records) Get(ctx context.Context, id build.ID) (build.Record, error) {
	var doc []byte
	err := s.db.reads.queryRow(ctx, s.db.rdb, `SELECT doc FROM records WHERE id = ?`, string(id)).Scan(&doc)
	if errors.Is(err, sql.ErrNoRows) {
		return build.Record{}, fmt.Errorf("get record %s: %w", id, build.ErrNotFound)
	}
	if err != nil {
		return build.Record{}, fmt.Errorf("get record %s: %w", id, classify(err))
	}
	var r build.Record
	if err := json.Unmarshal(doc, &r); err != nil {
		return build.Record{}, fmt.Errorf("get record %s: %w", id, err)
	}
	s.db.docs.put(id, doc, r) // the save that most often follows a read
	return r, nil
}

// ListProject returns a project's records newest first (by QueuedAt, then
// BuildID), at most limit (DefaultPageSize when limit <= 0), starting after
// cursor ("" = from the newest), and the cursor of the next page ("" when
// there is none). A malformed cursor gives build.ErrInvalid.
func (s *Records) ListProject(ctx context.Context, team, project string, limit int, cursor string) ([]build.Record, string, error) {
	if limit <= 0 {
		limit = DefaultPageSize
	}
	// One more than a page tells whether a next page exists.
	q := `SELECT doc FROM records WHERE team = ? AND project = ? ORDER BY queued_at DESC, id DESC LIMIT ?`
	args := []any{team, project, limit + 1}
	if cursor != "" {
		after, err := parseCursor(cursor)
		if err != nil {
			return nil, "", fmt.Errorf("list builds of %s: %w", build.ProjectKey(team, project), err)
		}
		q = `SELECT doc FROM records WHERE team = ? AND project = ? AND (queued_at, id) < (?, ?)
ORDER BY queued_at DESC, id DESC LIMIT ?`
		args = []any{team, project, after.queued, string(after.id), limit + 1}
	}
	recs, err := s.query(ctx, q, args...)
	if err != nil {
		return nil, "", fmt.Errorf("list builds of %s: %w", build.ProjectKey(team, project), err)
	}
	if len(recs) <= limit {
		return recs, "", nil
	}
	recs = recs[:limit]
	last := recs[limit-1]
	return recs, position{queued: nanos(last.QueuedAt), id: last.BuildID}.cursor(), nil
}

// Running returns every record with status running, ordered by build ID.
func (s *Records) Running(ctx context.Context) ([]build.Record, error) {
	recs, err := s.query(ctx, `SELECT doc FROM records WHERE status = 'running' ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("list running builds: %w", err)
	}
	return recs, nil
}

// Waiting returns a page of the records with status queued or deferred,
// oldest first (by QueuedAt, then BuildID), and how many there are: both
// read from the index of the waiting records (records_waiting), the page
// only as far as offset+limit. The count and the page are two reads, so
// they may differ by a request that arrived or started in between.
func (s *Records) Waiting(ctx context.Context, offset, limit int) ([]build.Record, int, error) {
	if offset < 0 {
		return nil, 0, fmt.Errorf("list waiting builds: %w: offset %d", build.ErrInvalid, offset)
	}
	var total int
	if err := s.db.rdb.QueryRowContext(ctx, `SELECT COUNT(*) FROM records WHERE status IN ('queued', 'deferred')`).Scan(&total); err != nil {
		return nil, 0, fmt.Errorf("count waiting builds: %w", classify(err))
	}
	if limit <= 0 {
		limit = -1 // SQLite: no limit
	}
	recs, err := s.query(ctx, `SELECT doc FROM records WHERE status IN ('queued', 'deferred') ORDER BY queued_at, id LIMIT ? OFFSET ?`, limit, offset)
	if err != nil {
		return nil, 0, fmt.Errorf("list waiting builds: %w", err)
	}
	return recs, total, nil
}

// AverageDuration averages the durations of the project's last n succeeded
// builds (newest by QueuedAt, then BuildID); it returns how many it averaged
// (0: no figure).
func (s *Records) AverageDuration(ctx context.Context, team, project string, n int) (time.Duration, int, error) {
	if n <= 0 {
		return 0, 0, nil
	}
	var count int
	var sum int64
	err := s.db.rdb.QueryRowContext(ctx, `
SELECT COUNT(*), COALESCE(SUM(d), 0) FROM (
	SELECT CASE WHEN started_at IS NULL OR finished_at IS NULL THEN 0 ELSE finished_at - started_at END AS d
	FROM records
	WHERE team = ? AND project = ? AND status = 'succeeded'
	ORDER BY queued_at DESC, id DESC
	LIMIT ?)`, team, project, n).Scan(&count, &sum)
	if err != nil {
		return 0, 0, fmt.Errorf("average duration of %s: %w", build.ProjectKey(team, project), classify(err))
	}
	if count == 0 {
		return 0, 0, nil
	}
	return time.Duration(sum / int64(count)), count, nil
}

// Projects returns the distinct project keys ("team/project") that have
// records, sorted as strings.
func (s *Records) Projects(ctx context.Context) ([]string, error) {
	rows, err := s.db.rdb.QueryContext(ctx, `SELECT DISTINCT team || '/' || project AS k FROM records ORDER BY k`)
	if err != nil {
		return nil, fmt.Errorf("list projects: %w", classify(err))
	}
	defer rows.Close()
	out := []string{}
	for rows.Next() {
		var k string
		if err := rows.Scan(&k); err != nil {
			return nil, fmt.Errorf("list projects: %w", classify(err))
		}
		out = append(out, k)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list projects: %w", classify(err))
	}
	return out, nil
}

// query returns the records whose docs the query selects.
func (s *Records) query(ctx context.Context, query string, args ...any) ([]build.Record, error) {
	rows, err := s.db.rdb.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, classify(err)
	}
	defer rows.Close()
	out := []build.Record{}
	for rows.Next() {
		var doc []byte
		if err := rows.Scan(&doc); err != nil {
			return nil, classify(err)
		}
		var r build.Record
		if err := json.Unmarshal(doc, &r); err != nil {
			return nil, fmt.Errorf("decode record: %w", err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, classify(err)
	}
	return out, nil
}

// unfinished is the unfinished column of a record of status s: 1 when
// it is in the index of unfinished records (queued, deferred, running:
// rank below final), else 0.
func unfinished(s build.Status) int {
	if s.Rank() < 2 {
		return 1
	}
	return 0
}

func nullNanos(t time.Time) sql.NullInt64 {
	if t.IsZero() {
		return sql.NullInt64{}
	}
	return sql.NullInt64{Int64: t.UnixNano(), Valid: true}
}

// position is a record's place in a project's history: QueuedAt in Unix
// nanoseconds, then BuildID.
type position struct {
	queued int64
	id     build.ID
}

// cursor encodes p opaquely for API clients.
func (p position) cursor() string {
	return base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(p.queued, 10) + ":" + string(p.id)))
}

func parseCursor(s string) (position, error) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return position{}, fmt.Errorf("%w: malformed cursor", build.ErrInvalid)
	}
	n, id, ok := strings.Cut(string(b), ":")
	q, err := strconv.ParseInt(n, 10, 64)
	if !ok || err != nil || id == "" {
		return position{}, fmt.Errorf("%w: malformed cursor", build.ErrInvalid)
	}
	return position{queued: q, id: build.ID(id)}, nil
}
