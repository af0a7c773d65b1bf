// Package buildtest holds stateful in-memory fakes of Decap's storage ports
// and the contract suites that the fakes and every real adapter (SQLite, AWS)
// must pass, so fakes cannot drift from the adapters they stand in for.
package buildtest

import (
	"context"
	"io"
	"time"

	"github.com/decap-ci/decap/internal/build"
)

// Queue is a FIFO queue with SQS semantics: message groups, visibility
// timeouts, deduplication, receive counts and a dead-letter queue.
type Queue interface {
	// Publish enqueues requests with group = LockKey() and deduplication ID =
	// DedupID(). A request whose deduplication ID was published within the
	// dedup window (5 minutes) is accepted and dropped.
	Publish(ctx context.Context, reqs ...build.Request) error
	// Receive returns up to max messages, waiting up to wait for the first.
	// Within a group, messages come in publish order, and none is returned
	// while an earlier message of its group is in flight. Each returned
	// message is invisible for the queue's visibility timeout. A message
	// received more than the redrive limit is moved to the dead-letter queue
	// instead of being returned. A consumer must also cope with several
	// messages of one group in a batch (SQS FIFO returns them in order). When
	// ctx ends during the wait, the error wraps ctx.Err().
	Receive(ctx context.Context, max int, wait time.Duration) ([]build.Message, error)
	// Delete removes a received message. A stale receipt gives ErrNotFound.
	Delete(ctx context.Context, receipt string) error
	// ChangeVisibility makes a received message visible again after d (0 =
	// now). A stale receipt gives ErrNotFound.
	ChangeVisibility(ctx context.Context, receipt string, d time.Duration) error
	// DeadLetter moves a received message to the dead-letter queue with the
	// reason attached, and deletes it from the queue; ErrNotFound for a stale
	// receipt.
	DeadLetter(ctx context.Context, m build.Message, reason string) error
	// Stats counts messages; Visible includes messages waiting behind an
	// in-flight message of their group.
	Stats(ctx context.Context) (build.QueueStats, error)
}

// Locks holds branch locks, which are also the slots of the concurrency cap.
type Locks interface {
	// Acquire takes l.Key for l.BuildID until l.ExpiresAt, together with one
	// slot of cap (cap <= 0: no cap), or neither. It fails with ErrLocked when
	// another build holds an unexpired lease on the key, and with
	// ErrCapReached when cap unexpired leases exist. Acquiring a key that
	// l.BuildID already holds succeeds and moves its expiry to l.ExpiresAt.
	Acquire(ctx context.Context, l build.Lease, cap int) error
	// Extend moves the expiry of key, held by id, to until. ErrNotFound when
	// id does not hold an unexpired lease on key: an expired lease never
	// comes back to life, so its slot stays free.
	Extend(ctx context.Context, key string, id build.ID, until time.Time) error
	// Release drops key if id holds it. Releasing a key that nobody holds, or
	// whose lease expired, is not an error; a key held by another build gives
	// ErrConflict and stays held.
	Release(ctx context.Context, key string, id build.ID) error
	// ForceRelease drops key whoever holds it; ErrNotFound if nobody holds an
	// unexpired lease on it.
	ForceRelease(ctx context.Context, key string) error
	// List returns unexpired leases, ordered by key.
	List(ctx context.Context) ([]build.Lease, error)
}

// Idempotency remembers which build owns a delivery or request.
type Idempotency interface {
	// Claim records that key belongs to id for ttl, unless an unexpired claim
	// exists. It returns the owner: id when the claim is new (or was id's
	// already; a repeated claim does not extend the ttl), the earlier build's
	// ID otherwise.
	Claim(ctx context.Context, key string, id build.ID, ttl time.Duration) (build.ID, error)
}

// Records stores build records.
type Records interface {
	// Save writes r, creating or replacing the stored record, unless the
	// stored record's status ranks higher than r's or is final: then
	// ErrConflict and nothing changes (see build.Status.Rank).
	Save(ctx context.Context, r build.Record) error
	// Get returns one record; ErrNotFound if none.
	Get(ctx context.Context, id build.ID) (build.Record, error)
	// ListProject returns a project's records newest first (by QueuedAt, then
	// BuildID), at most limit, starting after cursor ("" = from the newest),
	// and the cursor of the next page ("" when there is none). limit <= 0
	// means 50.
	ListProject(ctx context.Context, team, project string, limit int, cursor string) ([]build.Record, string, error)
	// Running returns every record with status running.
	Running(ctx context.Context) ([]build.Record, error)
	// AverageDuration averages the durations of the project's last n
	// succeeded builds (newest by QueuedAt, then BuildID); it returns how
	// many it averaged (0: no figure).
	AverageDuration(ctx context.Context, team, project string, n int) (time.Duration, int, error)
	// Projects returns the distinct project keys ("team/project") that have
	// records, sorted.
	Projects(ctx context.Context) ([]string, error)
}

// Blobs stores logs and artifacts by object key.
type Blobs interface {
	// Put stores the content of r under key, replacing any earlier object;
	// readers never see a partly written object.
	Put(ctx context.Context, key string, r io.Reader) error
	// Open returns the object; ErrNotFound if there is none.
	Open(ctx context.Context, key string) (io.ReadCloser, error)
}
