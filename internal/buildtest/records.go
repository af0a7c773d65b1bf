package buildtest

import (
	"context"
	"encoding/base64"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/decap-ci/decap/internal/build"
)

// DefaultPageSize is the page size ListProject uses when limit <= 0.
const DefaultPageSize = 50

// FakeRecords is an in-memory Records. It is safe for concurrent use.
type FakeRecords struct {
	mu      sync.Mutex
	records map[build.ID]build.Record
	// numbers holds each project's last build number.
	numbers map[string]int
	// The event outbox (events.go): each record's version, the events
	// written and not yet forwarded, and the wake-up of Pending.
	versions map[build.ID]int
	outbox   []build.Event
	written  chan struct{}
}

// NewRecords returns an empty FakeRecords.
func NewRecords() *FakeRecords {
	return &FakeRecords{records: map[build.ID]build.Record{}, numbers: map[string]int{},
		versions: map[build.ID]int{}, written: make(chan struct{})}
}

// Save writes r unless the stored record ranks higher or is final; see
// Records. A record it creates gets its project's next number, a record it
// replaces keeps its own, and its launch claim when r has none
// (build.Record.KeepClaim). A record without build ID or with an unknown
// status gives ErrInvalid. A change writes its event to the outbox; a Save
// that changes nothing (build.SameRecord) writes nothing.
func (s *FakeRecords) Save(ctx context.Context, r build.Record) error {
	if r.BuildID == "" || !r.Status.Valid() {
		return fmt.Errorf("save record %s: %w: empty build id or unknown status %q", r.BuildID, build.ErrInvalid, r.Status)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	save, err := s.saveLocked(r)
	if err != nil {
		return err
	}
	save()
	return nil
}

// saveLocked decides Save with s.mu held: save makes the change, err
// (ErrConflict) says there is none to make.
func (s *FakeRecords) saveLocked(r build.Record) (save func(), err error) {
	old, ok := s.records[r.BuildID]
	switch {
	case ok && (old.Status.Final() || old.Status.Rank() > r.Status.Rank()):
		return nil, fmt.Errorf("save record %s: %w: stored status %s, new status %s", r.BuildID, build.ErrConflict, old.Status, r.Status)
	case ok:
		r.Number = old.Number
		r.KeepClaim(old)
		if build.SameRecord(old, r) {
			return func() {}, nil
		}
	}
	return func() {
		if !ok {
			s.numbers[r.ProjectKey()]++
			r.Number = s.numbers[r.ProjectKey()]
		}
		s.write(r)
	}, nil
}

// Get returns one record; ErrNotFound if none.
func (s *FakeRecords) Get(ctx context.Context, id build.ID) (build.Record, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.records[id]
	if !ok {
		return build.Record{}, fmt.Errorf("get record %s: %w", id, build.ErrNotFound)
	}
	return r, nil
}

// ListProject returns a page of a project's records, newest first; see
// Records. limit <= 0 means DefaultPageSize; a malformed cursor gives
// ErrInvalid.
func (s *FakeRecords) ListProject(ctx context.Context, team, project string, limit int, cursor string) ([]build.Record, string, error) {
	if limit <= 0 {
		limit = DefaultPageSize
	}
	var after *pos
	if cursor != "" {
		p, err := parseCursor(cursor)
		if err != nil {
			return nil, "", fmt.Errorf("list builds of %s: %w", build.ProjectKey(team, project), err)
		}
		after = &p
	}
	s.mu.Lock()
	var all []build.Record
	for _, r := range s.records {
		if r.Team == team && r.Project == project && (after == nil || posOf(r).before(*after)) {
			all = append(all, r)
		}
	}
	s.mu.Unlock()
	sort.Slice(all, func(i, j int) bool { return posOf(all[j]).before(posOf(all[i])) })
	if len(all) <= limit {
		return all, "", nil
	}
	page := all[:limit]
	return page, posOf(page[limit-1]).cursor(), nil
}

// Running returns every running record, ordered by build ID.
func (s *FakeRecords) Running(ctx context.Context) ([]build.Record, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []build.Record
	for _, r := range s.records {
		if r.Status == build.StatusRunning {
			out = append(out, r)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].BuildID < out[j].BuildID })
	return out, nil
}

// Waiting returns a page of the queued or deferred records, oldest first
// (by QueuedAt, then BuildID), and their number; see build.Records.
func (s *FakeRecords) Waiting(ctx context.Context, offset, limit int) ([]build.Record, int, error) {
	if offset < 0 {
		return nil, 0, fmt.Errorf("list waiting builds: %w: offset %d", build.ErrInvalid, offset)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []build.Record
	for _, r := range s.records {
		if r.Status == build.StatusQueued || r.Status == build.StatusDeferred {
			out = append(out, r)
		}
	}
	sort.Slice(out, func(i, j int) bool { return posOf(out[i]).before(posOf(out[j])) })
	return build.PageOf(out, offset, limit), len(out), nil
}

// AverageDuration averages the durations of the project's last n succeeded
// builds (newest by QueuedAt, then BuildID); see Records.
func (s *FakeRecords) AverageDuration(ctx context.Context, team, project string, n int) (time.Duration, int, error) {
	if n <= 0 {
		return 0, 0, nil
	}
	s.mu.Lock()
	var ok []build.Record
	for _, r := range s.records {
		if r.Team == team && r.Project == project && r.Status == build.StatusSucceeded {
			ok = append(ok, r)
		}
	}
	s.mu.Unlock()
	if len(ok) == 0 {
		return 0, 0, nil
	}
	sort.Slice(ok, func(i, j int) bool { return posOf(ok[j]).before(posOf(ok[i])) })
	ok = ok[:min(n, len(ok))]
	var sum time.Duration
	for _, r := range ok {
		sum += r.Duration()
	}
	return sum / time.Duration(len(ok)), len(ok), nil
}

// Projects returns the distinct project keys that have records, sorted.
func (s *FakeRecords) Projects(ctx context.Context) ([]string, error) {
	s.mu.Lock()
	seen := map[string]bool{}
	for _, r := range s.records {
		seen[r.ProjectKey()] = true
	}
	s.mu.Unlock()
	out := make([]string, 0, len(seen))
	for k := range seen {
		out = append(out, k)
	}
	sort.Strings(out)
	return out, nil
}

// pos is a record's place in a project's history: QueuedAt (Unix
// nanoseconds, 0 for the zero time), then BuildID.
type pos struct {
	queued int64
	id     build.ID
}

func posOf(r build.Record) pos {
	var n int64
	if !r.QueuedAt.IsZero() {
		n = r.QueuedAt.UnixNano()
	}
	return pos{queued: n, id: r.BuildID}
}

func (p pos) before(q pos) bool {
	return p.queued < q.queued || p.queued == q.queued && p.id < q.id
}

func (p pos) cursor() string {
	return base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(p.queued, 10) + ":" + string(p.id)))
}

func parseCursor(s string) (pos, error) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return pos{}, fmt.Errorf("%w: malformed cursor", build.ErrInvalid)
	}
	n, id, ok := strings.Cut(string(b), ":")
	q, err := strconv.ParseInt(n, 10, 64)
	if !ok || err != nil || id == "" {
		return pos{}, fmt.Errorf("%w: malformed cursor", build.ErrInvalid)
	}
	return pos{queued: q, id: build.ID(id)}, nil
}
