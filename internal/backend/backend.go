// Package backend wires the storage Decap runs on, chosen by configuration
// (DECAP_BACKEND): the queue, locks, idempotency records, build records and
// blob store behind the small interfaces the services consume, plus the
// catalog and the executor. Nothing else in a service changes with the
// backend.
//
// The embedded default keeps everything under one data directory, so that
// separate ingest, dispatcher and reaper processes share one state:
//
//	decap.db      SQLite: queue, dead letters, locks, idempotency, records,
//	              the dispatch gate, the UI's sessions
//	wake/         sockets through which processes wake queue receivers
//	blobs/        logs/<id>/console.log.gz, artifacts/<id>/artifacts.tar.gz
//	run/          one directory per build being run by the local executor
//	              (DECAP_RUN_DIR; or under /var/lib/decap/run when the
//	              builds' own users could not reach it here: see
//	              localexec.RunDirFor)
//	catalog/      bare clones of git build-scripts repositories
//	secrets/      the builds' secrets, encrypted (localfs.Secrets), and
//	secrets.key   their key (DECAP_SECRETS_KEY_FILE may put it elsewhere)
package backend

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/aws/aws-sdk-go-v2/aws"

	"github.com/decap-ci/decap/internal/build"
	"github.com/decap-ci/decap/internal/catalog"
	"github.com/decap-ci/decap/internal/config"
	"github.com/decap-ci/decap/internal/events"
	"github.com/decap-ci/decap/internal/localexec"
	"github.com/decap-ci/decap/internal/localfs"
	"github.com/decap-ci/decap/internal/peercred"
	"github.com/decap-ci/decap/internal/sqlite"
)

// Set is one backend, opened.
type Set struct {
	Queue       build.Queue
	Locks       build.Locks
	Idempotency build.Idempotency
	Records     build.Records
	// Intake writes an accepted request's claims, record and message at
	// once where the store can (the embedded backend: one write); nil
	// where it cannot, and ingest makes the three calls (build.StepIntake).
	Intake build.Intake
	// Launches writes a launch's claim and its start in one write each
	// where the store can (the embedded backend); nil where it cannot,
	// and the dispatcher makes separate calls.
	Launches build.Launches
	// Ends writes a build's end (record, lock release, wake-up) in one
	// write where the store can (the embedded backend); nil where it
	// cannot, and the reaper makes separate calls.
	Ends  build.Ends
	Blobs build.Blobs
	// Gate is the dispatch gate: dispatchers honour it, ingest sets it.
	Gate build.Gate
	// Sessions are the UI's signed-in sessions (ingest only).
	Sessions build.Sessions
	// Pulls is what Decap knows of pull requests (ingest only).
	Pulls   build.PullRequests
	Catalog *catalog.Catalog
	// Executor is nil until OpenExecutor is called.
	Executor Executor
	// Outbox is where Records keeps the events of its changes until a
	// forwarder (RunEvents) publishes them to the stream; Events is the
	// stream as Decap's consumers read it (on aws its Tail reads an SQS
	// queue of the process's own, which Close deletes: awsevents).
	Outbox build.EventOutbox
	Events build.EventStream
	// Webhooks keeps the outgoing webhooks' subscriptions and
	// deliveries (StartWebhooks); nil where the backend has none yet.
	Webhooks build.Webhooks
	// eventsPub is the stream's publishing side (the SQLite stream, the
	// SNS topic), eventsTopic the topic the forwarder names.
	eventsPub   message.Publisher
	eventsTopic string

	cfg     config.Config
	log     *slog.Logger
	closers []func() error
	// blobsDir is where the local executor's builds upload when the blob
	// store is a directory; uploads is how they upload otherwise.
	blobsDir string
	uploads  func(ctx context.Context, id build.ID, ttl time.Duration) (map[string]string, error)
	// checkWrites, if set, tells whether the store can be written (the
	// embedded backend: reads go on while another process holds its
	// write lock).
	checkWrites func(context.Context) error
	// writeStats, if set, counts the embedded store's write
	// transactions (StoreWrites).
	writeStats func() sqlite.WriteStats
	// runDir is the local executor's directory of running builds
	// (config.Config.RunDir, or localexec.RunDirFor the data directory).
	runDir string
	// awsConfig is the AWS backend's configuration, for OpenSecrets.
	awsConfig *aws.Config
}

// Open opens the backend cfg.Backend names, and the catalog of
// cfg.BuildScripts (not yet scanned: call Catalog.Refresh or Catalog.Run).
func Open(ctx context.Context, cfg config.Config, logger *slog.Logger, now func() time.Time) (*Set, error) {
	cat, err := catalog.New(catalog.Config{
		Source: cfg.BuildScripts, CacheDir: filepath.Join(cfg.DataDir, "catalog"),
		Logger: logger.With("component", "catalog"), Now: now,
	})
	if err != nil {
		// A setting no refresh repairs (a mistyped directory): stop here,
		// naming the variable, instead of running without a catalog.
		return nil, fmt.Errorf("configuration: DECAP_BUILD_SCRIPTS: %s (a directory of <team>/<project>/, or a git repository: see the README)",
			strings.TrimPrefix(err.Error(), build.ErrInvalid.Error()+": "))
	}
	runDir, inside := cfg.RunDir, false
	if runDir == "" {
		runDir, inside = localexec.RunDirFor(cfg.DataDir)
	}
	if err := restrictDataDir(cfg.DataDir, cfg.Executor == "local" && localexec.Isolates() && inside); err != nil {
		return nil, err
	}
	s := &Set{Catalog: cat, cfg: cfg, log: logger, runDir: runDir}
	switch cfg.Backend {
	case "embedded":
		err = s.openEmbedded(ctx, now)
	case "aws":
		err = s.openAWS(ctx, now)
	default:
		err = fmt.Errorf("%w: backend %q is not known", build.ErrInvalid, cfg.Backend)
	}
	if err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// restrictDataDir creates the data directory, or takes back what an older
// version left open in it, so that no other user (a build, above all) may
// read or change what is in it: the directory is 0700, or 0711 when local
// builds run under users of their own (searchable, so that they reach
// run/, their own directories in it; not listable); its subdirectories
// blobs/, catalog/ (git clones, whose URLs may carry a token) and wake/
// are 0700; every regular file directly in it (decap.db and its -wal and
// -shm, and the secrets scripts/run-local.sh generates there: api-token,
// github-webhook-secret) is 0600. run/ is the local executor's to set up.
func restrictDataDir(dir string, searchable bool) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create data directory: %w", err)
	}
	// catalog/ is created lazily; create it now, closed.
	if err := os.MkdirAll(filepath.Join(dir, "catalog"), 0o700); err != nil {
		return fmt.Errorf("create catalog directory: %w", err)
	}
	mode := os.FileMode(0o700)
	if searchable {
		mode = 0o711
	}
	if filepath.Dir(dir) != dir { // never the file system's root
		if err := os.Chmod(dir, mode); err != nil {
			return fmt.Errorf("data directory: %w", err)
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("data directory: %w", err)
	}
	for _, ent := range entries {
		var perm os.FileMode
		switch name := ent.Name(); {
		case ent.Type().IsRegular():
			perm = 0o600
		case ent.IsDir() && (name == "blobs" || name == "catalog" || name == "wake" || name == "secrets"):
			perm = 0o700
		default:
			continue
		}
		p := filepath.Join(dir, ent.Name())
		info, err := os.Lstat(p)
		if err != nil || info.Mode().Perm()&0o077 == 0 {
			continue
		}
		if err := os.Chmod(p, perm); err != nil {
			return fmt.Errorf("data directory: %w", err)
		}
	}
	return nil
}

func (s *Set) openEmbedded(ctx context.Context, now func() time.Time) error {
	db, err := sqlite.Open(filepath.Join(s.cfg.DataDir, "decap.db"), sqlite.Options{Now: now})
	if err != nil {
		return err
	}
	s.closers = append(s.closers, db.Close)
	s.blobsDir = filepath.Join(s.cfg.DataDir, "blobs")
	blobs, err := localfs.NewBlobs(s.blobsDir)
	if err != nil {
		return err
	}
	queue := sqlite.NewQueue(db, sqlite.QueueOptions{})
	s.Queue = queue
	records := sqlite.NewRecords(db)
	claims := sqlite.NewIdempotency(db)
	locks := sqlite.NewLocks(db)
	s.Locks, s.Idempotency, s.Records, s.Blobs = locks, claims, records, blobs
	if s.Intake, err = sqlite.NewIntake(queue, claims, records); err != nil {
		return err
	}
	if s.Launches, err = sqlite.NewLaunches(locks, records, queue); err != nil {
		return err
	}
	if s.Ends, err = sqlite.NewEnds(locks, records, queue); err != nil {
		return err
	}
	// The stream lives in the records' database: each record change writes
	// its event straight into it, in the change's transaction, after what
	// the outbox held is moved in. The forwarder stays for a process of an
	// older Decap that shares the file and still writes to the outbox.
	if err := build.ValidateEventSource(s.cfg.PublicURL); err != nil {
		return fmt.Errorf("configuration: DECAP_PUBLIC_URL: %w", err)
	}
	stream := sqlite.NewStream(db, sqlite.StreamOptions{})
	left, err := stream.TakeRecordEvents(ctx, s.cfg.PublicURL)
	if err != nil {
		return err
	}
	if len(left) > 0 {
		s.log.Error("build events left in the outbox: their records do not decode, and the forwarder stops at them",
			"events", left)
	}
	s.Outbox, s.Events, s.eventsPub, s.eventsTopic = records.Outbox(), stream, stream, EventsTopic
	s.Gate = sqlite.NewGate(db)
	s.Sessions = sqlite.NewSessions(db)
	s.Webhooks = sqlite.NewWebhooks(db)
	s.Pulls = sqlite.NewPullRequests(db)
	s.checkWrites = db.CheckWrites
	s.writeStats = db.WriteStats
	return nil
}

// StoreWrites returns the counts of this open's write transactions on
// the embedded store (sqlite.DB.WriteStats); ok is false on a backend
// without them (aws).
func (s *Set) StoreWrites() (stats sqlite.WriteStats, ok bool) {
	if s.writeStats == nil {
		return sqlite.WriteStats{}, false
	}
	return s.writeStats(), true
}

// EventsTopic is the build-event stream's topic on the embedded backend
// (its stream is a single topic); on aws the forwarder names the topic by
// awsevents.Topic.
const EventsTopic = "build-events"

// RunEvents forwards the events of the record changes from the outbox to
// the event stream until ctx ends (events.Forwarder): every service that
// writes records runs it, and a write wakes its own process's forwarder
// at once; the others' sweeps pick up what a process that died left (on
// aws, a forwarder looks at the outbox index once per sweep, and often for
// a few seconds after its own process wrote: awsdynamo). It returns at
// once where the backend has no build events.
func (s *Set) RunEvents(ctx context.Context, obs events.Observer) error {
	if s.Outbox == nil || s.eventsPub == nil {
		s.log.Info("build events are not published on this backend", "backend", s.cfg.Backend)
		return nil
	}
	f, err := events.NewForwarder(s.Outbox, s.eventsPub, events.ForwarderConfig{
		Topic: s.eventsTopic, Source: s.cfg.PublicURL, Observer: obs, Logger: s.log,
	})
	if err != nil {
		return err
	}
	return f.Run(ctx)
}

// StartEvents runs RunEvents in the background, logging a failure to
// start it, and returns a function that stops it and waits for it: call
// that before Close.
func (s *Set) StartEvents(ctx context.Context, obs events.Observer) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := s.RunEvents(ctx, obs); err != nil {
			s.log.Error("build events are not forwarded", "err", err)
		}
	}()
	return func() {
		cancel()
		<-done
	}
}

// OpenSecrets opens the store of the builds' secrets: Secrets Manager on
// the aws backend, an encrypted directory of the data directory on the
// embedded one (its key made on first use; see localfs.NewSecrets). Only
// the services that handle secrets open it: ingest writes them, the
// dispatcher reads the values it hands to builds; the reaper never does.
func (s *Set) OpenSecrets() (build.Secrets, error) {
	if s.awsConfig != nil {
		return s.openAWSSecrets()
	}
	return localfs.NewSecrets(filepath.Join(s.cfg.DataDir, "secrets"), s.cfg.SecretsKeyFile, nil)
}

// Instrumenter wraps the backend's ports, for instance to count their
// failures (internal/metrics.Backend). Each method returns a port that
// behaves exactly as the one it is given.
type Instrumenter interface {
	Queue(build.Queue) build.Queue
	Locks(build.Locks) build.Locks
	Idempotency(build.Idempotency) build.Idempotency
	Records(build.Records) build.Records
	Blobs(build.Blobs) build.Blobs
	Gate(build.Gate) build.Gate
	Intake(build.Intake) build.Intake
	Launches(build.Launches) build.Launches
	Ends(build.Ends) build.Ends
}

// Instrument replaces the set's ports with what in makes of them. Call it
// right after Open, before the ports are handed out.
func (s *Set) Instrument(in Instrumenter) {
	s.Queue, s.Locks, s.Idempotency = in.Queue(s.Queue), in.Locks(s.Locks), in.Idempotency(s.Idempotency)
	s.Records, s.Blobs, s.Gate = in.Records(s.Records), in.Blobs(s.Blobs), in.Gate(s.Gate)
	if s.Intake != nil {
		s.Intake = in.Intake(s.Intake)
	}
	if s.Launches != nil {
		s.Launches = in.Launches(s.Launches)
	}
	if s.Ends != nil {
		s.Ends = in.Ends(s.Ends)
	}
}

// Executor runs builds: local processes (internal/localexec) or build Pods
// (internal/kube), as DECAP_EXECUTOR says.
type Executor interface {
	// Launch starts a build; launching one already launched is no error.
	Launch(ctx context.Context, job build.Job) error
	// Cancel stops a running build; build.ErrNotFound when none runs.
	Cancel(ctx context.Context, id build.ID) error
	// Remove deletes what is left of an ended, recorded build.
	Remove(ctx context.Context, id build.ID) error
	// Present lists the builds that have a process or Pod.
	Present(ctx context.Context) ([]build.ID, error)
	// Watch calls handle with every build's end until ctx is done.
	Watch(ctx context.Context, handle func(context.Context, build.Outcome) error) error
	// OpenLiveLog reads a running build's console log so far.
	OpenLiveLog(id build.ID) (io.ReadCloser, error)
}

// OpenExecutor opens the executor cfg.Executor names. The local one runs
// cfg.Entrypoint, or decap-entrypoint next to this program's executable;
// the kubernetes one needs the aws backend (build Pods upload through
// presigned URLs) and a git build-scripts repository.
func (s *Set) OpenExecutor(now func() time.Time) (Executor, error) {
	if s.cfg.Executor == "kubernetes" {
		return s.openKube(now)
	}
	path := s.cfg.Entrypoint
	if path == "" {
		self, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("find decap-entrypoint: %w", err)
		}
		path = filepath.Join(filepath.Dir(self), "decap-entrypoint")
	}
	if s.runDir != filepath.Join(s.cfg.DataDir, "run") {
		s.log.Info("builds run outside the data directory, which their users cannot reach", "run_dir", s.runDir)
	}
	ex, err := localexec.New(localexec.Config{
		RunDir: s.runDir, BlobsDir: s.blobsDir, Uploads: s.uploads,
		EntrypointPath: path, Scripts: s.Catalog, PollInterval: s.cfg.ReapInterval,
		Isolation: localexec.Isolation(s.cfg.BuildIsolation),
		BuildUIDs: localexec.UIDRange{First: s.cfg.BuildUIDFirst, Last: s.cfg.BuildUIDLast},
		Logger:    s.log.With("component", "executor"), Now: now,
	})
	if _, serr := os.Stat(path); err != nil && serr != nil {
		return nil, fmt.Errorf("local executor (set DECAP_ENTRYPOINT to the decap-entrypoint binary; `make build` makes bin/decap-entrypoint): %w", err)
	} else if err != nil {
		return nil, fmt.Errorf("local executor: %w", err)
	}
	s.Executor = ex
	return ex, nil
}

// BuildsRefused returns a guard for the services' listeners that drops
// every connection from a local build: when local builds run under users
// of their own, a connection whose client socket belongs to a build uid
// is closed before anything of it is read, so a build has no network path
// to the services, not even over loopback (DESIGN.md "Trust"). Refusals
// are logged, at most once a minute with a count. It returns nil (no
// guard) when builds do not run here under users of their own.
func (s *Set) BuildsRefused(log *slog.Logger) func(net.Listener) net.Listener {
	if s.cfg.Executor != "local" || !localexec.Isolates() {
		return nil
	}
	uids := localexec.UIDRange{First: s.cfg.BuildUIDFirst, Last: s.cfg.BuildUIDLast}
	if uids == (localexec.UIDRange{}) {
		uids = localexec.UIDRange{First: localexec.DefaultFirstBuildUID, Last: localexec.DefaultLastBuildUID}
	}
	f := peercred.NewFilter(uids.Contains)
	var mu sync.Mutex
	var last time.Time
	var quiet int
	refused := func(err error) {
		mu.Lock()
		defer mu.Unlock()
		if now := time.Now(); now.Sub(last) >= time.Minute {
			log.Warn("connection from a build refused", "err", err, "refused_since_last_line", quiet)
			last, quiet = now, 0
			return
		}
		quiet++
	}
	return func(ln net.Listener) net.Listener { return f.Listener(ln, refused) }
}

// Ping checks that the queue and the record store answer, and that the
// embedded store can be written; it is the readiness check.
func (s *Set) Ping(ctx context.Context) error {
	if _, err := s.Queue.Stats(ctx); err != nil {
		return fmt.Errorf("queue: %w", err)
	}
	// Any ID will do: not found is an answer.
	if _, err := s.Records.Get(ctx, build.ID("00000000-0000-7000-8000-000000000000")); err != nil && !errors.Is(err, build.ErrNotFound) {
		return fmt.Errorf("build records: %w", err)
	}
	if s.checkWrites != nil {
		return s.checkWrites(ctx)
	}
	return nil
}

// Close releases what Open opened.
func (s *Set) Close() error {
	var errs []error
	for i := len(s.closers) - 1; i >= 0; i-- {
		errs = append(errs, s.closers[i]())
	}
	return errors.Join(errs...)
}

// CatalogLoaded is a readiness check: the catalog has loaded a commit.
func CatalogLoaded(c *catalog.Catalog) func(context.Context) error {
	return func(context.Context) error {
		if c.Commit() == "" {
			if err := c.LastError(); err != nil {
				return fmt.Errorf("build-scripts repository not loaded yet: %w", err)
			}
			return errors.New("build-scripts repository not loaded yet")
		}
		return nil
	}
}

// FreshCatalog wraps the dispatcher's catalog so that it does not drop a
// request on a copy older than the request: see Fresh.LookupAsOf. Refreshes
// it starts are minAge apart at least.
func FreshCatalog(c *catalog.Catalog, minAge time.Duration) *Fresh {
	return &Fresh{c: c, minAge: minAge, now: time.Now}
}

// Fresh is the catalog FreshCatalog returns.
type Fresh struct {
	c      *catalog.Catalog
	minAge time.Duration
	now    func() time.Time
	mu     sync.Mutex
}

// clockSkew is how far apart the clocks of the machine that stamped a
// request and of the dispatcher may be: a catalog read less than this
// after a request was made may still be older than the request.
const clockSkew = time.Second

// LookupAsOf looks the project up. When the answer is that it is unknown or
// not buildable and the catalog was read before asOf (the request's time,
// give or take clockSkew), it reads the build-scripts repository again and
// answers from that: POST /hooks/buildscripts refreshes only the ingest that
// receives it, and a project added or fixed there must not be dropped by a
// dispatcher that still holds the copy of its last periodic refresh. The
// refresh waits, if need be, until minAge has passed since the last one, so
// a stream of requests for a broken project costs at most one read of the
// repository per minAge; requests made before the last read cost none. A
// change to a project that is still buildable reaches the dispatcher at its
// next periodic refresh.
func (f *Fresh) LookupAsOf(team, project string, asOf time.Time) (build.Descriptor, string, error) {
	d, commit, err := f.c.Lookup(team, project)
	if !errors.Is(err, build.ErrNotFound) && !errors.Is(err, build.ErrInvalid) {
		return d, commit, err
	}
	if now := f.now(); asOf.After(now) {
		asOf = now // a producer's clock (or a hostile message) ahead of ours
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	last := f.c.RefreshedAt()
	if !last.Before(asOf.Add(clockSkew)) {
		return f.c.Lookup(team, project) // read after the request (maybe while we waited for mu)
	}
	if wait := f.minAge - f.now().Sub(last); wait > 0 {
		time.Sleep(wait)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if rerr := f.c.Refresh(ctx); rerr != nil {
		return d, commit, err
	}
	return f.c.Lookup(team, project)
}

// CancelRequests cancels running builds by asking the reaper to: Cancel
// marks the build's record (Record.RequestCancel) and the reaper, which may
// delete build Pods and signal local builds, stops the build
// (reap.Reaper.SweepCancels). It is ingest's Canceller whatever the
// executor: ingest may only read build Pods, and one path for both
// executors keeps a cancel's outcome the same.
type CancelRequests struct {
	Records build.Records
	Now     func() time.Time
}

// Cancel asks for the running build id to be stopped; build.ErrNotFound
// when it is not running (any more).
func (c CancelRequests) Cancel(ctx context.Context, id build.ID) error {
	rec, err := c.Records.Get(ctx, id)
	if err != nil {
		return err
	}
	if rec.Status != build.StatusRunning {
		return fmt.Errorf("%w: build %s is %s", build.ErrNotFound, id, rec.Status)
	}
	if !rec.CancelRequestedAt.IsZero() {
		return nil // asked already
	}
	if err := rec.RequestCancel(c.Now().UTC()); err != nil {
		return err
	}
	if err := c.Records.Save(ctx, rec); errors.Is(err, build.ErrConflict) {
		return fmt.Errorf("%w: build %s ended meanwhile", build.ErrNotFound, id)
	} else if err != nil {
		return fmt.Errorf("record the cancel of %s: %w", id, err)
	}
	return nil
}
