// Package dispatch decides what happens to each build request taken off the
// queue: launch it, defer it (lock key busy, cap reached, backend trouble),
// or drop it with a recorded reason. It never blocks a consumer on a busy
// lock: deferral is a visibility change on the queue message, so the branch's
// later requests wait behind it in order while every other lock key goes on.
package dispatch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/decap-ci/decap/internal/build"
	"github.com/decap-ci/decap/internal/supersede"
)

// Queue is the work queue as the dispatcher consumes it. Receive long-polls;
// Delete and ChangeVisibility take the receipt of the delivery in hand and
// fail with build.ErrNotFound when it is stale; DeadLetter moves a message
// that can never be handled to the dead-letter queue and deletes it.
type Queue interface {
	Receive(ctx context.Context, max int, wait time.Duration) ([]build.Message, error)
	Delete(ctx context.Context, receipt string) error
	ChangeVisibility(ctx context.Context, receipt string, d time.Duration) error
	DeadLetter(ctx context.Context, m build.Message, reason string) error
}

// Catalog looks projects up. LookupAsOf returns the descriptor and the
// catalog commit it came from; build.ErrNotFound for an unknown project,
// build.ErrInvalid for one whose project.json is invalid. asOf is when the
// request was made: an answer that the project is unknown or invalid must
// come from a catalog read after that, so that a request made after the
// build-scripts repository was fixed is not dropped on an older copy (the
// services are separate processes, each with its own copy).
type Catalog interface {
	LookupAsOf(team, project string, asOf time.Time) (build.Descriptor, string, error)
}

// Locks takes a branch lock together with a slot of the concurrency cap
// (Acquire fails with build.ErrLocked or build.ErrCapReached), keeps it for
// the build's lifetime (Extend) and gives it back when launching fails
// (Release). Neither a re-acquire by the holder nor Extend ever shortens a
// lease; Extend fails with build.ErrNotFound when the lease is gone. Await
// leaves the receipt of a request deferred behind a lock on its lease, so
// that whoever releases it wakes the request (build.ErrNotFound: no lease).
type Locks interface {
	Acquire(ctx context.Context, l build.Lease, cap int) error
	Extend(ctx context.Context, key string, id build.ID, until time.Time) error
	Release(ctx context.Context, key string, id build.ID) (string, error)
	Await(ctx context.Context, key, waiter string) error
}

// Idempotency returns the build that owns a delivery: the caller's when its
// claim is the first.
type Idempotency interface {
	Claim(ctx context.Context, key string, id build.ID, ttl time.Duration) (build.ID, error)
}

// Records stores build records; Save fails with build.ErrConflict when the
// stored record is further along (e.g. already final). Unfinished and
// EndWaiting let a request supersede the older ones of its lock key
// (internal/supersede; see buildtest.Records).
type Records interface {
	Get(ctx context.Context, id build.ID) (build.Record, error)
	Save(ctx context.Context, r build.Record) error
	Unfinished(ctx context.Context, key string) ([]build.Record, error)
	EndWaiting(ctx context.Context, r build.Record) error
}

// Launcher starts a build. Launching a build that was already launched is
// not an error; an error wrapping build.ErrInvalid will never succeed, any
// other error may on a later try.
type Launcher interface {
	Launch(ctx context.Context, job build.Job) error
}

// Secrets reads the values of the secrets a build is granted
// (build.SecretsFor): those of names the project has; a name it lacks is
// absent from the map. The dispatcher is the only service that reads them.
type Secrets interface {
	Reveal(ctx context.Context, team, project string, names []string) (map[string][]byte, error)
}

// Canceller stops a launched build (its Pod or process); build.ErrNotFound
// means there is none to stop (already gone).
type Canceller interface {
	Cancel(ctx context.Context, id build.ID) error
}

// Observer hears what the dispatcher decides, for metrics. Its methods are
// called on the decision path, so they must be cheap, must not block, and
// must be safe for concurrent use.
type Observer interface {
	// Decided hears every decision, once: each one Decide returns, and
	// each one Handle makes about a message it could not parse.
	Decided(d Decision)
	// Paused hears the state of the dispatch gate whenever Run reads it.
	Paused(paused bool)
}

// nopObserver is the Observer of a Dispatcher given none.
type nopObserver struct{}

func (nopObserver) Decided(Decision) {}
func (nopObserver) Paused(bool)      {}

// Config tunes a Dispatcher. Zero values take the defaults named.
type Config struct {
	// Owner names this replica in lock items.
	Owner string
	// Cap bounds running builds across all replicas; <= 0 means no cap.
	Cap int
	// Workers bounds decisions in flight in this replica (default 32).
	Workers int
	// BatchSize is the most messages one Receive asks for (default 10).
	BatchSize int
	// Receives bounds the receives in flight while the queue keeps a
	// batch waiting (see Run; default 4, at most Workers/BatchSize, at
	// least 1). An idle dispatcher makes one.
	Receives int
	// WaitTime is the long-poll wait of one Receive (default 20s).
	WaitTime time.Duration
	// LaunchLease is the lock lease while launching: how long a lock stays
	// stuck if this replica dies between lock and launch (default 2m).
	LaunchLease time.Duration
	// RunGrace is added to a build's timeout for the lease of a running
	// build (default 10m); the reaper releases the lock before that.
	RunGrace time.Duration
	// BackoffBase and BackoffMax bound the deferral delay of a young request
	// (defaults 1s, 30s). An older request waits longer, about 1/32 of its
	// age and at most 15 minutes, so that a day of deferral costs ~200
	// receives, well inside SQS's largest redrive maxReceiveCount (1000).
	BackoffBase, BackoffMax time.Duration
	// VisibilityTimeout is the queue's; a decision that takes longer than
	// half of it extends the message's visibility (default 30s).
	VisibilityTimeout time.Duration
	// MaxDeferAge is how long a request may wait for its lock or a slot
	// before it is recorded as expired (default 24h).
	MaxDeferAge time.Duration
	// IdempotencyTTL is how long a delivery is remembered (default
	// build.IdempotencyTTL).
	IdempotencyTTL time.Duration
	// GateInterval is how long Run trusts a read of the dispatch gate, and
	// how often a paused Run reads it again (default 2s).
	GateInterval time.Duration
	// MaxInfraRetries caps the retries.infra a project's builds get (the
	// operator's DECAP_MAX_INFRA_RETRIES): 0 means build.MaxInfraRetries,
	// < 0 no retries at all. A build keeps what it was launched with
	// (Record.InfraRetries).
	MaxInfraRetries int
}

func (c Config) withDefaults() Config {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	if c.Workers <= 0 {
		c.Workers = 32
	}
	if c.BatchSize <= 0 || c.BatchSize > 10 {
		c.BatchSize = 10
	}
	if c.Receives <= 0 {
		c.Receives = 4
	}
	c.Receives = max(1, min(c.Receives, c.Workers/c.BatchSize))
	if c.Owner == "" {
		c.Owner = "dispatcher"
	}
	def(&c.WaitTime, 20*time.Second)
	def(&c.LaunchLease, 2*time.Minute)
	def(&c.RunGrace, 10*time.Minute)
	def(&c.BackoffBase, time.Second)
	def(&c.BackoffMax, 30*time.Second)
	def(&c.VisibilityTimeout, 30*time.Second)
	def(&c.MaxDeferAge, 24*time.Hour)
	def(&c.IdempotencyTTL, build.IdempotencyTTL)
	def(&c.GateInterval, 2*time.Second)
	switch {
	case c.MaxInfraRetries == 0, c.MaxInfraRetries > build.MaxInfraRetries:
		c.MaxInfraRetries = build.MaxInfraRetries
	case c.MaxInfraRetries < 0:
		c.MaxInfraRetries = 0
	}
	return c
}

// Dispatcher consumes build requests. Several may run against one queue.
type Dispatcher struct {
	cfg      Config
	queue    Queue
	catalog  Catalog
	locks    Locks
	idem     Idempotency
	records  Records
	launcher Launcher
	launches build.Launches
	secrets  Secrets
	cancel   Canceller
	gate     Gate
	obs      Observer
	log      *slog.Logger
	now      func() time.Time
}

// Deps are the Dispatcher's collaborators.
type Deps struct {
	Queue       Queue
	Catalog     Catalog
	Locks       Locks
	Idempotency Idempotency
	Records     Records
	Launcher    Launcher
	// Launches, if not nil, writes a launch's claim and its start in one
	// write each (the embedded store's); nil: separate calls to Locks,
	// Records and the queue.
	Launches build.Launches
	// Secrets holds the values of the projects' secrets; nil gives no
	// build any (the record says why).
	Secrets Secrets
	// Canceller stops a build that was cancelled while it was launched
	// (the canceller found no process yet); nil leaves such a build to run
	// to its end under its cancelled record.
	Canceller Canceller
	// Gate pauses and resumes Run; nil means always open.
	Gate Gate
	// Observer hears decisions and the gate's state; nil hears nothing.
	Observer Observer
	Logger   *slog.Logger
	Now      func() time.Time
}

// New returns a Dispatcher.
func New(cfg Config, d Deps) *Dispatcher {
	if d.Now == nil {
		d.Now = time.Now
	}
	if d.Logger == nil {
		d.Logger = slog.New(slog.DiscardHandler)
	}
	if d.Observer == nil {
		d.Observer = nopObserver{}
	}
	return &Dispatcher{
		cfg: cfg.withDefaults(), queue: d.Queue, catalog: d.Catalog, locks: d.Locks,
		idem: d.Idempotency, records: d.Records, launcher: d.Launcher, launches: d.Launches, secrets: d.Secrets, cancel: d.Canceller,
		gate: d.Gate, obs: d.Observer, log: d.Logger, now: d.Now,
	}
}

// Action is what became of a request.
type Action int

// Actions.
const (
	// Launched: the build was started (or found started); delete the message.
	Launched Action = iota + 1
	// Deferred: try again after Delay; the message stays on the queue.
	Deferred
	// Dropped: nothing to build, and the record says why; delete the message.
	Dropped
)

func (a Action) String() string {
	switch a {
	case Launched:
		return "launched"
	case Deferred:
		return "deferred"
	case Dropped:
		return "dropped"
	}
	return fmt.Sprintf("Action(%d)", int(a))
}

// Cause is why a decision went the way it did, from a small fixed set: a
// label for metrics and dashboards, where Reason is a sentence for people.
type Cause string

// Causes.
const (
	// Launched.
	CauseStarted        Cause = "started"         // started now
	CauseAlreadyRunning Cause = "already_running" // started by an earlier delivery
	// Deferred.
	CauseLocked       Cause = "locked"        // another build of the lock key runs
	CauseCap          Cause = "cap"           // the concurrency cap is reached
	CauseBackendError Cause = "backend_error" // a store failed; retried
	// Deferred (retried) or dropped (will never succeed).
	CauseLaunchFailed Cause = "launch_failed"
	// Dropped.
	CauseUnmanaged      Cause = "unmanaged"       // a push of a ref managedRefRegex does not match, or a pull request the project does not build
	CauseUnknownProject Cause = "unknown_project" // not in the build-scripts repository
	CauseInvalidProject Cause = "invalid_project" // its project.json is invalid
	CauseDuplicate      Cause = "duplicate"       // its delivery was built already
	CauseExpired        Cause = "expired"         // deferred longer than MaxDeferAge
	CauseAlreadyEnded   Cause = "already_ended"   // its record is final (ended, cancelled)
	CauseSuperseded     Cause = "superseded"      // a newer request of its lock key superseded it
	CauseMalformed      Cause = "malformed"       // the body cannot be parsed: dead-lettered
)

// Decision is the outcome of Decide.
type Decision struct {
	Action  Action
	BuildID build.ID
	Delay   time.Duration
	Reason  string
	Cause   Cause
	// Waited is, for a build started now (CauseStarted), the time from its
	// request to its launch: queueing, deferrals and the decision itself.
	Waited time.Duration
	// Unlocked is set for a build started now that could not keep its
	// lock and slot (another build took them while it launched, or the
	// store kept failing): it runs outside the lock and the cap, or its
	// lease may run out early. Decide logs it as an error.
	Unlocked bool
	// SupersededWaiting and SupersededRunning count what the decision
	// superseded: waiting requests it ended (a request of another
	// producer, which the dispatcher accepts, ends the older ones of its
	// key, or itself when a newer one waits), running builds it asked to
	// stop (those, or a build started now that a newer request supersedes
	// at once).
	SupersededWaiting, SupersededRunning int

	// settled is set when the decision deleted the message it came in
	// already (Launches.Started): Handle has nothing left to settle.
	settled bool
}

// Decide takes one request through catalog lookup, the managed-ref filter,
// the once-only check, lock and slot, and launch. m is the delivery it came
// in (its ID names requests that bring no build ID; its receive count drives
// the backoff). Decide writes the build record at every step, so whatever it
// decides is visible; it touches the queue not at all.
func (d *Dispatcher) Decide(ctx context.Context, req build.Request, m build.Message) Decision {
	return d.decideObserved(ctx, req, m, false)
}

// decideObserved is Decide; with settle, a launch may delete m itself in
// the write that records the start (Decision.settled).
func (d *Dispatcher) decideObserved(ctx context.Context, req build.Request, m build.Message, settle bool) Decision {
	var sup supersede.Result
	dec := d.decide(ctx, req, m, settle, &sup)
	dec.SupersededWaiting, dec.SupersededRunning = len(sup.Superseded), len(sup.Stopping)
	d.obs.Decided(dec)
	return dec
}

// decide is decideObserved; it adds what the request superseded to sup.
func (d *Dispatcher) decide(ctx context.Context, req build.Request, m build.Message, settle bool, sup *supersede.Result) Decision {
	now := d.now()
	log := d.log.With("lock_key", req.LockKey())
	if req.DeliveryID != "" {
		log = log.With("delivery_id", req.DeliveryID)
	}
	if req.BuildID != "" {
		log = log.With("build_id", req.BuildID)
	}

	// Once only. A request without a build ID (another producer) is named by
	// its delivery ID or its queue message ID, and adopts the build that owns
	// that name, so its redeliveries do not build twice either.
	key, ownID := req.IdempotencyKey(), req.BuildID
	if ownID == "" {
		ownID = build.NewID(now)
		if key == "" {
			key = "message:" + m.ID
		}
	}
	owner, err := d.idem.Claim(ctx, key, ownID, d.cfg.IdempotencyTTL)
	if err != nil {
		return d.retry(log, m, fmt.Errorf("claim %s: %w", key, err))
	}
	if req.BuildID != "" && owner != req.BuildID {
		rec := build.RecordFor(req)
		if err := rec.Drop(build.StatusSkipped, fmt.Sprintf("duplicate delivery: already built as %s", owner), now); err != nil {
			return d.retry(log, m, err)
		}
		if err := d.save(ctx, rec); err != nil {
			return d.retry(log, m, err)
		}
		log.Info("request dropped", "status", rec.Status, "reason", rec.Reason)
		return Decision{Action: Dropped, BuildID: req.BuildID, Reason: rec.Reason, Cause: CauseDuplicate}
	}
	if req.BuildID == "" {
		log = log.With("build_id", owner)
	}
	req.BuildID = owner

	rec, err := d.records.Get(ctx, req.BuildID)
	created := false // this dispatcher accepts the request: supersede for it
	switch {
	case errors.Is(err, build.ErrNotFound):
		rec = build.RecordFor(req)
		if err := d.save(ctx, rec); err != nil {
			return d.retry(log, m, err)
		}
		created = true
	case err != nil:
		return d.retry(log, m, fmt.Errorf("get record: %w", err))
	case rec.Status.Final():
		return ended(rec)
	case rec.Status == build.StatusRunning:
		// Launched by a replica that died before deleting the message.
		return Decision{Action: Launched, BuildID: req.BuildID, Reason: "already running", Cause: CauseAlreadyRunning}
	}

	desc, commit, err := d.catalog.LookupAsOf(req.Team, req.Project, req.RequestedAt)
	switch {
	case errors.Is(err, build.ErrNotFound):
		return d.drop(ctx, log, m, rec, build.StatusSkipped, CauseUnknownProject, "project "+req.ProjectKey()+" is not in the build-scripts repository")
	case errors.Is(err, build.ErrInvalid):
		// Never built, like an unknown project: skipped (errored is a
		// build's own end). The catalog's error names the project and why.
		return d.drop(ctx, log, m, rec, build.StatusSkipped, CauseInvalidProject, strings.TrimPrefix(err.Error(), build.ErrInvalid.Error()+": "))
	case err != nil:
		return d.retry(log, m, fmt.Errorf("look up %s: %w", req.ProjectKey(), err))
	}
	if req.Trigger == build.TriggerPush && !desc.Manages(req.Ref) {
		return d.drop(ctx, log, m, rec, build.StatusSkipped, CauseUnmanaged,
			fmt.Sprintf("ref %q does not match managedRefRegex %q", req.Ref, desc.ManagedRefRegex))
	}
	if why := pullNotBuilt(req, desc); why != "" {
		return d.drop(ctx, log, m, rec, build.StatusSkipped, CauseUnmanaged, why)
	}
	policy := desc.SupersedeFor(req.Ref)
	if created {
		// A request of another producer, which nobody recorded before:
		// this is where it is accepted, so it supersedes the older ones
		// of its key (a newer one may supersede it).
		res, err := supersede.Older(ctx, d.records, rec, policy, now)
		if err != nil {
			log.Warn("supersede older requests", "err", err)
		}
		*sup = res
		for _, id := range sup.Stopping {
			log.Info("running build superseded; the reaper stops it", "superseded", id)
		}
		for _, id := range sup.Superseded {
			if id != req.BuildID {
				log.Info("request superseded", "superseded", id)
				continue
			}
			cur, err := d.records.Get(ctx, req.BuildID)
			if err != nil {
				return d.retry(log, m, fmt.Errorf("get record: %w", err))
			}
			log.Info("request superseded on arrival by a newer one", "superseded_by", cur.SupersededBy)
			return ended(cur)
		}
	}

	lease := build.Lease{Key: req.LockKey(), BuildID: req.BuildID, Owner: d.cfg.Owner, AcquiredAt: now, ExpiresAt: now.Add(d.cfg.LaunchLease)}
	grant := build.SecretsFor(req, desc)
	claimed := false
	if d.launches != nil && len(grant.Names) == 0 {
		// A build granted no secrets has none to read between the lock
		// and the claim: both in one write, from the record read above.
		// Anything but a refused lock goes on with the separate calls
		// below, which read the record again.
		cur := rec
		err := cur.Launching(now, desc.InfraRetries(d.cfg.MaxInfraRetries), policy.Any())
		if err == nil {
			err = cur.GrantSecrets([]string{}, grant.Withheld)
		}
		if err == nil {
			err = d.launches.Claim(ctx, lease, d.cfg.Cap, cur)
		}
		switch {
		case err == nil:
			rec, claimed = cur, true
		case errors.Is(err, build.ErrLocked), errors.Is(err, build.ErrCapReached):
			return d.refused(ctx, log, m, req, rec, now, err)
		}
	}
	var secrets []build.Secret
	if !claimed {
		var dec Decision
		var ok bool
		if rec, secrets, dec, ok = d.claim(ctx, log, m, req, rec, lease, grant, desc, policy, now); !ok {
			return dec
		}
	}

	job := build.Job{Request: req, Descriptor: desc, CatalogCommit: commit, Timeout: desc.Timeout(), Secrets: secrets}
	if err := d.launcher.Launch(ctx, job); err != nil {
		if _, rerr := d.locks.Release(ctx, req.LockKey(), req.BuildID); rerr != nil {
			log.Warn("release lock after failed launch", "err", rerr)
		}
		if errors.Is(err, build.ErrInvalid) {
			return d.drop(ctx, log, m, rec, build.StatusErrored, CauseLaunchFailed, "launch: "+err.Error())
		}
		dec := d.retry(log, m, fmt.Errorf("launch: %w", err))
		dec.Cause = CauseLaunchFailed
		return dec
	}

	started := d.now()
	locked, settled, err := d.recordStart(ctx, log, req, m, &rec, started, started.Add(job.Timeout+d.cfg.RunGrace), commit, settle)
	switch {
	case errors.Is(err, build.ErrConflict):
		// The record moved on while the build launched: the reaper recorded
		// its end, or it was cancelled, maybe before there was anything to
		// stop.
		if dec, ok := d.stopCancelled(ctx, log, req.BuildID); ok {
			return dec
		}
	case err != nil:
		// The record still says queued; the reaper writes the final one.
		log.Warn("record running build", "err", err)
	default:
		// A newer request accepted while this one launched found it
		// being launched and left it to this dispatcher.
		switch by, err := supersede.Started(ctx, d.records, rec, policy, d.now()); {
		case err != nil:
			log.Warn("look for newer requests", "err", err)
		case by != "":
			sup.Stopping = append(sup.Stopping, req.BuildID)
			log.Info("build superseded as it started; the reaper stops it", "superseded_by", by)
		}
	}
	waited := started.Sub(rec.QueuedAt)
	if rec.QueuedAt.IsZero() || waited < 0 {
		waited = 0
	}
	names := make([]string, len(secrets))
	for i, s := range secrets {
		names[i] = s.Name
	}
	log.Info("build launched", "commit", commit, "waited", waited, "secrets", names)
	return Decision{Action: Launched, BuildID: req.BuildID, Cause: CauseStarted, Waited: waited, Unlocked: !locked, settled: settled}
}

// refused is the decision on a request whose lock or slot was refused
// (err: build.ErrLocked or build.ErrCapReached): deferred, or expired.
func (d *Dispatcher) refused(ctx context.Context, log *slog.Logger, m build.Message, req build.Request, rec build.Record, now time.Time, err error) Decision {
	// Only a request that could not start expires: one that got its
	// lock may have been launched already by a replica that died
	// before recording it, and its launch is idempotent.
	if age := now.Sub(req.RequestedAt); age > d.cfg.MaxDeferAge {
		return d.drop(ctx, log, m, rec, build.StatusExpired, CauseExpired,
			fmt.Sprintf("waited %s, longer than %s", age.Round(time.Second), d.cfg.MaxDeferAge))
	}
	if errors.Is(err, build.ErrLocked) {
		return d.deferBy(ctx, log, m, rec, CauseLocked, "another build of "+req.LockKey()+" is running")
	}
	return d.deferBy(ctx, log, m, rec, CauseCap, fmt.Sprintf("concurrency cap of %d running builds reached", d.cfg.Cap))
}

// claim takes the lock and a slot for req, reads the secrets it is
// granted, and claims the request for the launch, in separate calls. ok
// is false when the request is not to be launched now; dec says why.
func (d *Dispatcher) claim(ctx context.Context, log *slog.Logger, m build.Message, req build.Request, rec build.Record, lease build.Lease, grant build.SecretGrant, desc build.Descriptor, policy build.SupersedePolicy, now time.Time) (claimed build.Record, secrets []build.Secret, dec Decision, ok bool) {
	switch err := d.locks.Acquire(ctx, lease, d.cfg.Cap); {
	case errors.Is(err, build.ErrLocked), errors.Is(err, build.ErrCapReached):
		return rec, nil, d.refused(ctx, log, m, req, rec, now, err), false
	case err != nil:
		return rec, nil, d.retry(log, m, fmt.Errorf("acquire lock %s: %w", req.LockKey(), err)), false
	}

	// The build's secrets, read before the claim so that the claim records
	// which ones it gets. A store that does not answer defers the request:
	// a build is never started without secrets it was granted.
	secrets, withheld, err := d.revealSecrets(ctx, req, grant)
	if err != nil {
		return rec, nil, d.unlockAndRetry(ctx, log, m, req, err), false
	}
	names := make([]string, len(secrets))
	for i, s := range secrets {
		names[i] = s.Name
	}

	// Read the record again under the lock: a replica that launched this
	// build and died before recording it leaves it queued, and the reaper
	// may have ended it since the read above. The reaper records the end
	// before it releases the lock, so this read sees it.
	//
	// Then claim the request for this launch (Record.Launching): from the
	// claim on, a newer request no longer ends it as a waiting one
	// (Records.EndWaiting refuses), and a request that was superseded or
	// cancelled before the claim is not launched (Save refuses the claim
	// over a final record). So a superseded request never runs.
	for claims := 0; ; claims++ {
		cur, err := d.records.Get(ctx, req.BuildID)
		switch {
		case errors.Is(err, build.ErrNotFound):
			cur = rec
		case err != nil:
			return rec, nil, d.unlockAndRetry(ctx, log, m, req, fmt.Errorf("get record: %w", err)), false
		case cur.Status.Final():
			if _, rerr := d.locks.Release(ctx, req.LockKey(), req.BuildID); rerr != nil && !errors.Is(rerr, build.ErrConflict) {
				log.Warn("release lock of an ended build", "err", rerr)
			}
			return rec, nil, ended(cur), false
		case cur.Status == build.StatusRunning:
			// Launched by another replica meanwhile. If its lease had run out,
			// the Acquire above took the lock anew with the launch lease: give
			// the running build its running lease back (Extend never shortens).
			started := cur.StartedAt
			if started.IsZero() {
				started = now
			}
			if err := d.locks.Extend(ctx, req.LockKey(), req.BuildID, started.Add(desc.Timeout()+d.cfg.RunGrace)); err != nil {
				log.Warn("extend lock lease of a running build", "err", err)
			}
			return rec, nil, Decision{Action: Launched, BuildID: req.BuildID, Reason: "already running", Cause: CauseAlreadyRunning}, false
		}
		if err := cur.Launching(now, desc.InfraRetries(d.cfg.MaxInfraRetries), policy.Any()); err != nil {
			return rec, nil, d.unlockAndRetry(ctx, log, m, req, err), false
		}
		if err := cur.GrantSecrets(names, withheld); err != nil {
			return rec, nil, d.unlockAndRetry(ctx, log, m, req, err), false
		}
		err = d.records.Save(ctx, cur)
		if err == nil {
			rec = cur
			break
		}
		if !errors.Is(err, build.ErrConflict) || claims > 0 {
			return rec, nil, d.unlockAndRetry(ctx, log, m, req, fmt.Errorf("claim the launch: %w", err)), false
		}
		// It ended or started meanwhile: read it again.
	}

	return rec, secrets, Decision{}, true
}

// recordStart gives a launched build its running lease (until) and its
// running record (rec, started as it is saved), and with settle deletes
// the message m it came in: in one write where the store can
// (Launches.Started; settled tells whether it deleted m), else, or when
// that write fails, in separate calls. locked tells whether the build
// holds its lock (keepLease); err is the running record's.
func (d *Dispatcher) recordStart(ctx context.Context, log *slog.Logger, req build.Request, m build.Message, rec *build.Record, started, until time.Time, commit string, settle bool) (locked, settled bool, err error) {
	if d.launches != nil {
		receipt := m.Receipt
		if !settle {
			receipt = "" // deletes nothing
		}
		r := *rec
		if err := r.Start(started, req.BuildID.PodName(), commit); err == nil {
			if settled, err = d.launches.Started(ctx, req.LockKey(), until, r, receipt); err == nil {
				*rec = r
				return true, settled, nil
			}
		}
		// The lease gone, the record moved on, or the store failing: the
		// separate calls find out which, and act on it.
	}
	locked = d.keepLease(ctx, log, req, until)
	err = rec.Start(started, req.BuildID.PodName(), commit)
	if err == nil {
		err = d.records.Save(ctx, *rec)
	}
	return locked, false, err
}

// revealSecrets reads the values of the granted secrets, sorted by name,
// and says why the build gets fewer than it wants (or none): the grant's
// reason, or the names the project has not set.
func (d *Dispatcher) revealSecrets(ctx context.Context, req build.Request, g build.SecretGrant) ([]build.Secret, string, error) {
	if len(g.Names) == 0 {
		return nil, g.Withheld, nil
	}
	if d.secrets == nil {
		return nil, "this dispatcher has no secret store", nil
	}
	values, err := d.secrets.Reveal(ctx, req.Team, req.Project, g.Names)
	if err != nil {
		return nil, "", fmt.Errorf("read the secrets of %s: %w", req.ProjectKey(), err)
	}
	var out []build.Secret
	var missing []string
	for _, name := range g.Names {
		if v, ok := values[name]; ok {
			out = append(out, build.Secret{Name: name, Value: v})
		} else {
			missing = append(missing, name)
		}
	}
	withheld := ""
	if len(missing) > 0 {
		withheld = fmt.Sprintf("not set for %s: %s", req.ProjectKey(), strings.Join(missing, ", "))
	}
	return out, withheld, nil
}

// ended is the decision on a request whose record is final: dropped,
// superseded or already ended.
func ended(rec build.Record) Decision {
	if rec.Status == build.StatusSuperseded {
		return Decision{Action: Dropped, BuildID: rec.BuildID, Reason: rec.Reason, Cause: CauseSuperseded}
	}
	return Decision{Action: Dropped, BuildID: rec.BuildID, Reason: "already " + string(rec.Status), Cause: CauseAlreadyEnded}
}

// unlockAndRetry releases the lock taken for req and defers it after err.
func (d *Dispatcher) unlockAndRetry(ctx context.Context, log *slog.Logger, m build.Message, req build.Request, err error) Decision {
	if _, rerr := d.locks.Release(ctx, req.LockKey(), req.BuildID); rerr != nil && !errors.Is(rerr, build.ErrConflict) {
		log.Warn("release lock after a failed step", "err", rerr)
	}
	return d.retry(log, m, err)
}

// Keeping the lease of a launched build: Extend is tried keepAttempts
// times, pausing keepBackoff, doubled each time, in between.
const (
	keepAttempts = 4
	keepBackoff  = 50 * time.Millisecond
)

// keepLease gives a launched build its running lease, until until. Extend
// is retried after errors. When the launch lease is gone (a launch slower
// than LaunchLease), it takes the lock and a slot again for the build, with
// the running lease, unless the build ended meanwhile. It reports whether
// the build holds its lock; when it does not (another build took the key or
// the last slot meanwhile, or the store keeps failing), it logs the error
// here: the build runs outside the lock and the cap.
func (d *Dispatcher) keepLease(ctx context.Context, log *slog.Logger, req build.Request, until time.Time) bool {
	key, id := req.LockKey(), req.BuildID
	var err error
	for attempt := range keepAttempts {
		if attempt > 0 {
			t := time.NewTimer(keepBackoff << (attempt - 1))
			select {
			case <-ctx.Done():
				t.Stop()
				err = fmt.Errorf("%w (after: %w)", ctx.Err(), err)
			case <-t.C:
			}
			if ctx.Err() != nil {
				break
			}
		}
		err = d.locks.Extend(ctx, key, id, until)
		if err == nil {
			return true
		}
		if !errors.Is(err, build.ErrNotFound) {
			continue
		}
		// The reaper records a build's end before it releases the lock,
		// so a build found ended needs no lock, and one found not ended
		// after the Acquire will have it released by the reaper.
		if d.ended(ctx, id) {
			return true
		}
		lease := build.Lease{Key: key, BuildID: id, Owner: d.cfg.Owner, AcquiredAt: d.now(), ExpiresAt: until}
		err = d.locks.Acquire(ctx, lease, d.cfg.Cap)
		switch {
		case err == nil:
			if d.ended(ctx, id) {
				if _, err := d.locks.Release(ctx, key, id); err != nil {
					log.Warn("release lock of a build that ended while it launched", "err", err)
				}
				return true
			}
			log.Warn("launch outlasted the launch lease; lock and slot taken again", "launch_lease", d.cfg.LaunchLease)
			return true
		case errors.Is(err, build.ErrLocked), errors.Is(err, build.ErrCapReached):
			log.Error("build runs without its lock and slot: its launch lease ran out during the launch and was taken", "err", err)
			return false
		}
	}
	log.Error("build runs without a running lease: keeping its lock failed", "err", err)
	return false
}

// ended reports whether id's record is final; false when it cannot be read.
func (d *Dispatcher) ended(ctx context.Context, id build.ID) bool {
	rec, err := d.records.Get(ctx, id)
	return err == nil && rec.Status.Final()
}

// stopCancelled reads the record of a launched build whose running record
// could not be written. If the build was cancelled meanwhile, it stops the
// build (its lock stays until the reaper sees the end) and returns the
// decision; ok is false otherwise.
func (d *Dispatcher) stopCancelled(ctx context.Context, log *slog.Logger, id build.ID) (dec Decision, ok bool) {
	cur, err := d.records.Get(ctx, id)
	if err != nil {
		log.Warn("read record of a launched build", "err", err)
		return Decision{}, false
	}
	if cur.Status != build.StatusCancelled && cur.Status != build.StatusSuperseded {
		return Decision{}, false // ended already: the reaper has it
	}
	switch {
	case d.cancel == nil:
		log.Error("build " + string(cur.Status) + " while it launched, and nothing can stop it: it runs to its end")
	default:
		if err := d.cancel.Cancel(ctx, id); err != nil && !errors.Is(err, build.ErrNotFound) {
			log.Error("stop build "+string(cur.Status)+" while it launched", "err", err)
		} else {
			log.Info("build " + string(cur.Status) + " while it launched; stopped")
		}
	}
	return Decision{Action: Dropped, BuildID: id, Reason: string(cur.Status) + " while it launched", Cause: CauseAlreadyEnded}, true
}

// save writes rec; a conflict (the record moved on meanwhile) is not an error.
func (d *Dispatcher) save(ctx context.Context, rec build.Record) error {
	if err := d.records.Save(ctx, rec); err != nil && !errors.Is(err, build.ErrConflict) {
		return fmt.Errorf("save record %s: %w", rec.BuildID, err)
	}
	return nil
}

func (d *Dispatcher) drop(ctx context.Context, log *slog.Logger, m build.Message, rec build.Record, status build.Status, cause Cause, reason string) Decision {
	if err := rec.Drop(status, reason, d.now()); err != nil {
		return d.retry(log, m, err)
	}
	if err := d.save(ctx, rec); err != nil {
		return d.retry(log, m, err)
	}
	log.Info("request dropped", "status", status, "reason", reason)
	return Decision{Action: Dropped, BuildID: rec.BuildID, Reason: reason, Cause: cause}
}

func (d *Dispatcher) deferBy(ctx context.Context, log *slog.Logger, m build.Message, rec build.Record, cause Cause, reason string) Decision {
	now := d.now()
	delay := d.backoff(m.ReceiveCount, now.Sub(rec.QueuedAt))
	err := rec.Defer(now, now.Add(delay), reason)
	if err == nil {
		err = d.save(ctx, rec)
	}
	if err != nil {
		log.Warn("record deferral", "err", err)
	}
	return Decision{Action: Deferred, BuildID: rec.BuildID, Delay: delay, Reason: reason, Cause: cause}
}

// retry defers a request after a backend error; the error is logged here,
// where it is handled.
func (d *Dispatcher) retry(log *slog.Logger, m build.Message, err error) Decision {
	log.Error("dispatch failed, will retry", "err", err)
	var age time.Duration
	if !m.SentAt.IsZero() {
		age = d.now().Sub(m.SentAt)
	}
	return Decision{Action: Deferred, Delay: d.backoff(m.ReceiveCount, age), Reason: err.Error(), Cause: CauseBackendError}
}

// maxBackoff bounds any deferral; SQS allows visibility up to 12 hours.
const maxBackoff = 15 * time.Minute

// backoff grows exponentially with the receive count up to BackoffMax, then
// with the request's age (age/32, at most maxBackoff), with ±20% jitter so
// deferred requests of many keys do not wake in lockstep.
func (d *Dispatcher) backoff(receiveCount int, age time.Duration) time.Duration {
	n := max(receiveCount-1, 0)
	delay := d.cfg.BackoffMax
	if n < 30 {
		delay = min(d.cfg.BackoffBase<<n, d.cfg.BackoffMax)
	}
	delay = min(max(delay, age/32), maxBackoff)
	jitter := 0.8 + 0.4*rand.Float64()
	return time.Duration(float64(delay) * jitter)
}

// pullNotBuilt says why a pull request's request is not built by the
// project as its descriptor is now, or "": it builds no pull requests
// (any more), not into this base branch, or not this untrusted one (forks
// "never", or "approval" and nobody approved it). Ingest decided the same
// when it accepted the request; the catalog may have changed since, and
// another producer's request was never decided.
func pullNotBuilt(req build.Request, desc build.Descriptor) string {
	if req.RefType != build.Pull || req.PullRequest == nil {
		return ""
	}
	p := req.PullRequest
	switch {
	case desc.PullRequests == nil:
		return "project " + req.ProjectKey() + " does not build pull requests (its project.json has no pullRequests)"
	case !desc.BuildsPullRequestsInto(p.BaseRef):
		return fmt.Sprintf("base branch %q does not match pullRequests.baseRefRegex %q", p.BaseRef, desc.PullRequests.BaseRefRegex)
	case p.Trusted:
		return ""
	case desc.ForkPolicy() == build.ForksNever:
		return "an untrusted pull request, and the project's pullRequests.forks is never"
	case desc.ForkPolicy() == build.ForksApproval && p.ApprovedBy == "":
		return "an untrusted pull request nobody approved, and the project's pullRequests.forks is approval"
	}
	return ""
}
