package build

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"time"
)

// Message is one delivery of a queue message, as a queue adapter hands it to
// the dispatcher.
type Message struct {
	// ID is the queue's message ID, the same on every redelivery.
	ID string
	// Receipt identifies this delivery for Delete and ChangeVisibility; it is
	// stale once the message becomes visible again and is received anew.
	Receipt string
	// GroupID is the FIFO message group, one per lock key: the lock key
	// itself, except where the queue cannot take it as it is (on SQS a key
	// over 128 characters or not ASCII is a readable prefix and a SHA-256 of
	// the key, see awssqs). Tell groups apart by it; read the lock key from
	// the body.
	GroupID string
	Body    []byte
	// ReceiveCount counts deliveries, this one included (1 on the first).
	ReceiveCount int
	// SentAt is when the message was first enqueued.
	SentAt time.Time
}

// QueueStats describes a queue at one moment.
type QueueStats struct {
	// Visible messages wait to be received.
	Visible int `json:"visible"`
	// InFlight messages were received and are neither deleted nor visible
	// again: being decided, or deferred.
	InFlight int `json:"inFlight"`
	// DeadLettered messages sit in the dead-letter queue.
	DeadLettered int `json:"deadLettered"`
	// OldestAge is the age of the oldest message not yet deleted.
	OldestAge time.Duration `json:"oldestAgeNanos"`
}

// Depther is a queue that can count its messages for less than Stats
// costs by leaving its dead-letter queue unread (SQS: one
// GetQueueAttributes instead of two): Depth is Stats, with DeadLettered
// NotCounted when it was not read.
type Depther interface {
	Depth(ctx context.Context) (QueueStats, error)
}

// NotCounted is QueueStats.DeadLettered when Depth did not read it.
const NotCounted = -1

// DepthOf counts q's messages as cheaply as q can: q.Depth where q is a
// Depther, else q.Stats.
func DepthOf(ctx context.Context, q interface {
	Stats(ctx context.Context) (QueueStats, error)
}) (QueueStats, error) {
	if d, ok := q.(Depther); ok {
		return d.Depth(ctx)
	}
	return q.Stats(ctx)
}

// Lease is a held branch lock: at most one per lock key. Each held lease also
// occupies one slot of the cluster-wide concurrency cap.
type Lease struct {
	Key        string    `json:"lockKey"`
	BuildID    ID        `json:"buildId"`
	Owner      string    `json:"owner"`
	AcquiredAt time.Time `json:"acquiredAt"`
	ExpiresAt  time.Time `json:"expiresAt"`
}

// Job is everything an executor needs to start one build.
type Job struct {
	Request       Request
	Descriptor    Descriptor
	CatalogCommit string
	// Timeout is the build's deadline; zero means the descriptor's (see
	// BuildTimeout).
	Timeout time.Duration
	// Secrets are the values the build receives (SecretsFor, read by the
	// dispatcher), for the executor to hand to it as files: never written
	// into job.json, a Pod spec or a log.
	Secrets []Secret
}

// BuildTimeout is the job's deadline: Timeout, or the descriptor's.
func (j Job) BuildTimeout() time.Duration {
	if j.Timeout > 0 {
		return j.Timeout
	}
	return j.Descriptor.Timeout()
}

// Outcome is how a build ended, as an executor observed it.
type Outcome struct {
	BuildID    ID
	PodName    string
	Team       string
	Project    string
	Ref        string
	Status     Status // a final status
	ExitCode   *int
	Reason     string
	StartedAt  time.Time
	FinishedAt time.Time
	// LogKey and ArtifactsKey are set when the objects were stored.
	LogKey       string
	ArtifactsKey string
	// Infra names the infrastructure failure that ended the build, or is
	// empty when the build's own run decided its end (see InfraCause).
	Infra InfraCause
}

// LockKey returns the outcome's "team/project/ref".
func (o Outcome) LockKey() string { return LockKey(o.Team, o.Project, o.Ref) }

// Project is one entry of the catalog: a buildable project with its
// descriptor, or an unbuildable one with the error that makes it so.
type Project struct {
	Team       string      `json:"team"`
	Project    string      `json:"project"`
	Descriptor *Descriptor `json:"descriptor,omitempty"`
	Error      string      `json:"error,omitempty"`
}

// Key returns "team/project".
func (p Project) Key() string { return ProjectKey(p.Team, p.Project) }

// The storage ports. Each has a stateful in-memory fake and a contract suite
// in buildtest that the fake and every adapter (SQLite, AWS) pass; the
// logic packages declare the few methods they use themselves.

// Queue is a FIFO queue with SQS semantics: message groups, visibility
// timeouts, deduplication, receive counts and a dead-letter queue.
type Queue interface {
	// Publish enqueues requests with group = LockKey() and deduplication ID =
	// DedupID(). A request whose deduplication ID was published within the
	// dedup window (5 minutes) is accepted and dropped.
	Publish(ctx context.Context, reqs ...Request) error
	// Receive returns up to max messages, waiting up to wait for the first.
	// Within a group, messages come in publish order, and none is returned
	// while an earlier message of its group is in flight. Each returned
	// message is invisible for the queue's visibility timeout. A message
	// received more than the redrive limit is moved to the dead-letter queue
	// instead of being returned. A consumer must also cope with several
	// messages of one group in a batch (SQS FIFO returns them in order). When
	// ctx ends during the wait, the error wraps ctx.Err().
	Receive(ctx context.Context, max int, wait time.Duration) ([]Message, error)
	// Delete removes a received message. A stale receipt gives ErrNotFound.
	Delete(ctx context.Context, receipt string) error
	// ChangeVisibility makes a received message visible again after d (0 =
	// now). A stale receipt gives ErrNotFound.
	ChangeVisibility(ctx context.Context, receipt string, d time.Duration) error
	// DeadLetter moves a received message to the dead-letter queue with the
	// reason attached, and deletes it from the queue; ErrNotFound for a stale
	// receipt.
	DeadLetter(ctx context.Context, m Message, reason string) error
	// Stats counts messages; Visible includes messages waiting behind an
	// in-flight message of their group.
	Stats(ctx context.Context) (QueueStats, error)
}

// Locks holds branch locks, which are also the slots of the concurrency cap.
type Locks interface {
	// Acquire takes l.Key for l.BuildID until l.ExpiresAt, together with one
	// slot of cap (cap <= 0: no cap), or neither. It fails with ErrLocked when
	// another build holds an unexpired lease on the key, and with
	// ErrCapReached when cap unexpired leases exist. Acquiring a key that
	// l.BuildID already holds succeeds, keeps its slot, and keeps the later
	// of its expiry and l.ExpiresAt: a re-acquire never shortens a lease (two
	// replicas may decide one request, and the second must not cut the
	// running build's lease back to a launch lease).
	Acquire(ctx context.Context, l Lease, cap int) error
	// Extend moves the expiry of key, held by id, to until if that is later;
	// an earlier until leaves the lease as it is and is not an error, so
	// Extend never shortens a lease and any number of callers may renew one.
	// ErrNotFound when id does not hold an unexpired lease on key: an
	// expired lease never comes back to life, so its slot stays free.
	Extend(ctx context.Context, key string, id ID, until time.Time) error
	// Release drops key if id holds it, and returns the waiter Await
	// recorded on the lease ("" if none). Releasing a key that nobody
	// holds, or whose lease expired, is not an error; a key held by
	// another build gives ErrConflict and stays held.
	Release(ctx context.Context, key string, id ID) (waiter string, err error)
	// Await records waiter (the receipt of a queue message deferred behind
	// the lease) on key's unexpired lease, replacing an earlier one, for
	// Release to return: whoever releases the lock can then make the
	// deferred request visible at once rather than after its backoff.
	// ErrNotFound when nobody holds an unexpired lease on key.
	Await(ctx context.Context, key, waiter string) error
	// ForceRelease drops key whoever holds it; ErrNotFound if nobody holds an
	// unexpired lease on it.
	ForceRelease(ctx context.Context, key string) error
	// List returns unexpired leases, ordered by key.
	List(ctx context.Context) ([]Lease, error)
}

// Idempotency remembers which build owns a delivery or request.
type Idempotency interface {
	// Claim records that key belongs to id for ttl, unless an unexpired claim
	// exists. It returns the owner: id when the claim is new (or was id's
	// already; a repeated claim does not extend the ttl), the earlier build's
	// ID otherwise.
	Claim(ctx context.Context, key string, id ID, ttl time.Duration) (ID, error)
}

// Records stores build records.
type Records interface {
	// Save writes r, creating or replacing the stored record, unless the
	// stored record's status ranks higher than r's or is final: then
	// ErrConflict and nothing changes (see Status.Rank).
	//
	// The store owns Record.Number: a Save that creates the record gives it
	// the project's next number, and a Save that replaces one keeps the
	// stored number; r.Number is ignored either way. Numbers are unique per
	// project across every process sharing the store; a failed or racing
	// create may leave a gap.
	//
	// A replace never takes a launch claim away: when r has no LaunchingAt,
	// the stored LaunchingAt, InfraRetries and Supersedable stay
	// (Record.KeepClaim), so a writer that read the request before a
	// dispatcher claimed it cannot open it to EndWaiting again.
	Save(ctx context.Context, r Record) error
	// Get returns one record; ErrNotFound if none.
	Get(ctx context.Context, id ID) (Record, error)
	// ListProject returns a project's records newest first (by QueuedAt, then
	// BuildID), at most limit, starting after cursor ("" = from the newest),
	// and the cursor of the next page ("" when there is none). limit <= 0
	// means 50.
	ListProject(ctx context.Context, team, project string, limit int, cursor string) ([]Record, string, error)
	// Running returns every record with status running.
	Running(ctx context.Context) ([]Record, error)
	// Waiting returns the records with status queued or deferred, oldest
	// first (by QueuedAt, then BuildID): the requests not yet started. It
	// skips the first offset of them and returns at most limit (limit <= 0:
	// all the rest), with how many there are in all; a view of ten
	// thousand waiting requests reads one page of them. A negative offset
	// gives ErrInvalid.
	Waiting(ctx context.Context, offset, limit int) ([]Record, int, error)
	// Unfinished returns the records of lock key key ("team/project/ref")
	// that are queued, deferred or running, oldest first (by QueuedAt,
	// then BuildID; see Record.Older): what a newer request of the key
	// may supersede. It reads an index of the key, never every waiting
	// record. A malformed key gives ErrInvalid.
	Unfinished(ctx context.Context, key string) ([]Record, error)
	// EndWaiting writes r, which must be final (ErrInvalid otherwise), only
	// if the stored record is still queued or deferred and no dispatcher
	// has begun to launch it (its LaunchingAt is zero): a compare-and-swap
	// on the stored status, so that a request a dispatcher starts is never
	// also ended as waiting (Record.Supersede), however the two race.
	// ErrConflict, and nothing changes, when the stored record is running,
	// final or being launched; ErrNotFound when there is none. The store's
	// own fields (Record.Number) keep their stored values.
	EndWaiting(ctx context.Context, r Record) error
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

// GateState is the dispatch gate: while it is closed (Paused), dispatchers
// take nothing off the queue; requests wait there, nothing is lost.
type GateState struct {
	Paused bool      `json:"paused"`
	Reason string    `json:"reason,omitempty"`
	By     string    `json:"by,omitempty"`
	Since  time.Time `json:"since,omitzero"`
}

// Gate stores the dispatch gate, shared by every dispatcher replica.
type Gate interface {
	// Get returns the gate; open (the zero GateState) if never set.
	Get(ctx context.Context) (GateState, error)
	// Set replaces the gate.
	Set(ctx context.Context, g GateState) error
}

// Session is a signed-in UI session as it is stored. The browser holds the
// session's random ID; the store keeps only its SHA-256 (Key, see
// SessionKey), so whoever reads the store cannot use a session.
type Session struct {
	// Key is SessionKey of the session's ID.
	Key string
	// Binding ties the session to the credential it was made with (ingest
	// stores an HMAC of the API token under the key): the session is valid
	// only while the binding still matches, so rotating the credential
	// ends every session made with the old one.
	Binding   string
	CreatedAt time.Time
	// ExpiresAt ends the session: it is expired once ExpiresAt <= now.
	ExpiresAt time.Time
}

// SessionKey returns the key a session with this ID is stored under: the
// lowercase hex SHA-256 of id.
func SessionKey(id string) string {
	sum := sha256.Sum256([]byte(id))
	return hex.EncodeToString(sum[:])
}

// ValidateSession checks what every Sessions store requires: a Key as
// SessionKey makes it and an expiry after the creation. ErrInvalid otherwise.
func ValidateSession(s Session) error {
	if !IsSessionKey(s.Key) {
		return fmt.Errorf("%w: session key must be 64 lowercase hex digits", ErrInvalid)
	}
	if s.CreatedAt.IsZero() || !s.ExpiresAt.After(s.CreatedAt) {
		return fmt.Errorf("%w: session must expire after it is created", ErrInvalid)
	}
	return nil
}

// IsSessionKey reports whether k has the form of a SessionKey.
func IsSessionKey(k string) bool {
	if len(k) != 2*sha256.Size {
		return false
	}
	for i := 0; i < len(k); i++ {
		if !(k[i] >= '0' && k[i] <= '9' || k[i] >= 'a' && k[i] <= 'f') {
			return false
		}
	}
	return true
}

// Sessions stores the UI's signed-in sessions, shared by every ingest
// replica. Expiry is measured by the store's clock.
type Sessions interface {
	// Create stores s. ErrInvalid when ValidateSession refuses it;
	// ErrConflict when an unexpired session with s.Key exists (it stays as
	// it is). An expired session with the key is replaced.
	Create(ctx context.Context, s Session) error
	// Get returns the session stored under key; ErrNotFound when there is
	// none, when it has expired (whether or not the store has removed it
	// yet), or when key is not a session key at all.
	Get(ctx context.Context, key string) (Session, error)
	// Delete removes the session under key. Deleting a session that does
	// not exist (or a malformed key) is not an error.
	Delete(ctx context.Context, key string) error
}
