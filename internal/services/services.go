// Package services assembles Decap's three services, ingest, the dispatcher
// and the reaper, from an opened backend: the one wiring that cmd/ingest,
// cmd/dispatcher and cmd/reaper run and that bench/ measures, so that what
// is measured is what ships. A caller substitutes only what it names in
// the options (the bench: the executor, observers of its own, a counter of
// the backend's calls); everything else comes from the configuration.
//
// What a process does around a service stays with its main: reading the
// configuration, the health server, signals, and the background work tied
// to the backend's lifetime (Set.StartEvents, Set.StartWebhooks, which
// must stop before Close).
package services

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/decap-ci/decap/internal/backend"
	"github.com/decap-ci/decap/internal/config"
	"github.com/decap-ci/decap/internal/dispatch"
	"github.com/decap-ci/decap/internal/github"
	"github.com/decap-ci/decap/internal/ingest"
	"github.com/decap-ci/decap/internal/metrics"
	"github.com/decap-ci/decap/internal/reap"
	"github.com/decap-ci/decap/internal/sqlite"
	"github.com/decap-ci/decap/internal/ui"
)

// Base is what every service is assembled from: its configuration, its
// backend, opened and instrumented, the metrics registry and the backend's
// failure counters on it, a logger and a clock.
type Base struct {
	Config   config.Config
	Set      *backend.Set
	Registry *prometheus.Registry
	// Backend counts the failures of the ports (and, given calls to Open,
	// tells every call); the executor a service opens is wrapped by it too.
	Backend *metrics.Backend
	Logger  *slog.Logger
	Now     func() time.Time
}

// Open opens the backend cfg names with a fresh metrics registry and
// instruments its ports with the registry's failure counters; calls, if
// not nil, hears every call of a port too (metrics.NewCountingBackend).
// The catalog is not scanned yet: see StartCatalog. Close the Base when
// done.
func Open(ctx context.Context, cfg config.Config, logger *slog.Logger, now func() time.Time, calls metrics.Calls) (*Base, error) {
	reg := metrics.NewRegistry()
	set, err := backend.Open(ctx, cfg, logger, now)
	if err != nil {
		return nil, err
	}
	be := metrics.NewCountingBackend(reg, calls)
	set.Instrument(be)
	if _, ok := set.StoreWrites(); ok {
		metrics.NewStoreWrites(reg, func() sqlite.WriteStats { st, _ := set.StoreWrites(); return st })
	}
	return &Base{Config: cfg, Set: set, Registry: reg, Backend: be, Logger: logger, Now: now}, nil
}

// Close releases what Open opened.
func (b *Base) Close() error { return b.Set.Close() }

// StartCatalog reads the build-scripts repository once, logging a failure
// (the periodic refresh retries), and refreshes it every
// DECAP_CATALOG_REFRESH in the background until ctx ends.
func (b *Base) StartCatalog(ctx context.Context) {
	if err := b.Set.Catalog.Refresh(ctx); err != nil {
		b.Logger.Error("first catalog refresh failed; will retry", "err", err)
	}
	go b.Set.Catalog.Run(ctx, b.Config.CatalogRefresh)
}

// NewIngest returns ingest's HTTP server on b, with the status UI on its
// routes. It opens the executor only to show running builds' logs (without
// one they answer 404, and it logs why); opens the builds' secrets store,
// which ingest writes and lists but never reads; and posts commit statuses
// only with a GitHub token.
func NewIngest(b *Base) (*ingest.Server, error) {
	cfg, log, set := b.Config, b.Logger, b.Set
	// A nil interface, not a typed nil, when there is no executor.
	var live ingest.LiveLogs
	if _, err := set.OpenExecutor(b.Now); err != nil {
		log.Warn("live logs of running builds are unavailable", "err", err)
	} else {
		live = set.Executor
	}
	// Ingest stops no build itself, whatever the executor: it records the
	// cancel, and the reaper stops the build.
	canceller := backend.CancelRequests{Records: set.Records, Now: b.Now}
	gh := github.Config{BaseURL: cfg.GitHubAPIURL, Token: cfg.GitHubToken, PublicURL: cfg.PublicURL}
	refs, err := github.NewRefs(gh, 0, b.Now)
	if err != nil {
		return nil, fmt.Errorf("github: %w", err)
	}
	// Commit statuses, only with a token. Where the backend has a
	// build-event stream the reaper posts the builds' statuses from it,
	// and ingest only those of pull requests waiting for approval (no
	// build's event); where it has none, ingest posts the queued and
	// cancelled builds' statuses itself, in the background.
	var statuses ingest.Notifier
	if cfg.GitHubToken != "" {
		st, err := github.NewStatuses(gh, 0)
		if err != nil {
			return nil, fmt.Errorf("github: %w", err)
		}
		statuses = st
		if set.Events != nil {
			statuses = github.WaitingOnly{Statuses: st}
		}
	}
	secrets, err := set.OpenSecrets()
	if err != nil {
		return nil, err
	}
	srv := ingest.New(ingest.Config{
		WebhookSecret: cfg.WebhookSecret, InsecureSkipSignature: cfg.InsecureSkipSignature,
		APIToken: cfg.APIToken, AuthDisabled: cfg.AuthDisabled,
		ReadPublic: cfg.ReadPublic, PublicBadges: cfg.PublicBadges, NoPodNames: cfg.Executor != "kubernetes", SessionTTL: cfg.SessionTTL, PublicURL: cfg.PublicURL,
		MaxBodyBytes: cfg.HTTP.WebhookMaxBody,
		Limits: ingest.Limits{
			BodyBytes: cfg.HTTP.BodyBudget, ClientBodyBytes: cfg.HTTP.ClientBodyBudget,
			Followers: cfg.HTTP.MaxFollowers, ClientFollowers: cfg.HTTP.ClientFollowers,
			FollowFor: cfg.HTTP.FollowMaxDuration, StreamWriteTimeout: cfg.HTTP.WriteTimeout,
			TrustedProxies: cfg.HTTP.TrustedProxies,
		},
	}, ingest.Deps{
		Publisher: set.Queue, Idempotency: set.Idempotency, Intake: set.Intake, Catalog: set.Catalog, Records: set.Records, Blobs: set.Blobs, LiveLogs: live,
		Queue: set.Queue, Waiting: set.Records, Running: set.Records, Locks: set.Locks, Gate: set.Gate, Canceller: canceller,
		Refs: refs, Notifier: statuses, Sessions: set.Sessions, Secrets: secrets, Pulls: set.Pulls, Events: set.Events,
		Webhooks: set.Webhooks, WebhookURLs: set.WebhookPolicy(),
		Observer: metrics.NewIngest(b.Registry), Metrics: metrics.Handler(b.Registry),
		Ready: []ingest.Check{
			{Name: "database", Check: set.Ping},
			{Name: "catalog", Check: backend.CatalogLoaded(set.Catalog)},
		},
		Logger: log, Now: b.Now,
	})
	ui.New(ui.Config{AuthDisabled: cfg.AuthDisabled}, ui.Deps{
		Records: set.Records, Catalog: set.Catalog, Queue: set.Queue, Locks: set.Locks, Gate: set.Gate, Pulls: set.Pulls, Auth: srv,
		Webhooks: set.Webhooks, Logger: log.With("component", "ui"), Now: b.Now,
	}).Register(srv.Echo())
	return srv, nil
}

// Launcher is the executor as the dispatcher uses it: it launches builds,
// and stops a build that was cancelled while it was launched.
type Launcher interface {
	dispatch.Launcher
	dispatch.Canceller
}

// DispatcherOptions are what a caller of NewDispatcher may substitute.
type DispatcherOptions struct {
	// Executor launches the builds; nil opens the one the configuration
	// names (Set.OpenExecutor). Its launches are counted by b.Backend
	// either way.
	Executor Launcher
	// Observers hear every decision and the gate's state, beside the
	// metrics.
	Observers []dispatch.Observer
}

// Dispatcher is the dispatcher as cmd/dispatcher runs it: the decisions
// and, for the metrics, the sampling of the queue's depth and the locks.
type Dispatcher struct {
	*dispatch.Dispatcher
	// Metrics are the dispatcher's metrics on b.Registry.
	Metrics *metrics.Dispatch
	set     *backend.Set
	log     *slog.Logger
}

// NewDispatcher returns the dispatcher on b. Its lock owner is this host
// and process; it reads the values of the secrets builds are granted.
func NewDispatcher(b *Base, o DispatcherOptions) (*Dispatcher, error) {
	cfg, set := b.Config, b.Set
	ex, err := executor(b, o.Executor)
	if err != nil {
		return nil, err
	}
	secrets, err := set.OpenSecrets()
	if err != nil {
		return nil, err
	}
	host, _ := os.Hostname()
	maxRetries := cfg.MaxInfraRetries
	if maxRetries == 0 {
		maxRetries = -1 // dispatch.Config's "none"; its 0 is "no cap"
	}
	m := metrics.NewDispatch(b.Registry, cfg.Cap)
	var obs dispatch.Observer = m
	if len(o.Observers) > 0 {
		obs = observers(append([]dispatch.Observer{m}, o.Observers...))
	}
	d := dispatch.New(dispatch.Config{
		Owner: fmt.Sprintf("%s/%d", host, os.Getpid()), Cap: cfg.Cap,
		Workers: cfg.DispatchWorkers, MaxDeferAge: cfg.MaxDeferAge, MaxInfraRetries: maxRetries,
	}, dispatch.Deps{
		Queue: set.Queue, Catalog: backend.FreshCatalog(set.Catalog, 2*time.Second), Locks: set.Locks,
		Idempotency: set.Idempotency, Records: set.Records, Launches: set.Launches, Launcher: b.Backend.Launcher(ex), Secrets: secrets, Canceller: ex, Gate: set.Gate,
		Observer: obs, Logger: b.Logger, Now: b.Now,
	})
	return &Dispatcher{Dispatcher: d, Metrics: m, set: set, log: b.Logger}, nil
}

// Run decides until ctx ends or the dispatcher stops, sampling the queue
// and the locks for the metrics meanwhile; it returns when both have
// stopped.
func (d *Dispatcher) Run(ctx context.Context) error {
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		d.Metrics.Sample(ctx, d.set.Queue, d.set.Locks, metrics.SampleEvery, d.log)
	}()
	err := d.Dispatcher.Run(ctx)
	stop()
	<-sampled
	return err
}

// The executors Set.OpenExecutor opens serve both services.
var (
	_ Launcher      = backend.Executor(nil)
	_ reap.Executor = backend.Executor(nil)
)

// executor returns sub, the caller's substitute, or, when that is nil, the
// executor the configuration names (Set.OpenExecutor), as the service
// uses it (E, which backend.Executor implements).
func executor[E comparable](b *Base, sub E) (E, error) {
	var none E
	if sub != none {
		return sub, nil
	}
	ex, err := b.Set.OpenExecutor(b.Now)
	if err != nil {
		return none, err
	}
	return any(ex).(E), nil
}

// observers tells several observers.
type observers []dispatch.Observer

func (os observers) Decided(d dispatch.Decision) {
	for _, o := range os {
		o.Decided(d)
	}
}

func (os observers) Paused(p bool) {
	for _, o := range os {
		o.Paused(p)
	}
}

// ReaperOptions are what a caller of NewReaper may substitute.
type ReaperOptions struct {
	// Executor is what the reaper watches, stops and removes builds on;
	// nil opens the one the configuration names (Set.OpenExecutor). Its
	// calls are counted by b.Backend either way.
	Executor reap.Executor
}

// Reaper is the reaper as cmd/reaper runs it: the ending of builds and,
// where the backend has a build-event stream and a GitHub token is set,
// the posting of commit statuses from that stream.
type Reaper struct {
	*reap.Reaper
	statusEvents *github.StatusEvents
	set          *backend.Set
}

// NewReaper returns the reaper on b. With a GitHub token it posts commit
// statuses: from the build-event stream where the backend has one (the
// consumer group github-statuses: the reaper is the one service that
// always runs and is on no request path), inline as builds end where it
// has none (ingest then posts the queued ones).
func NewReaper(b *Base, o ReaperOptions) (*Reaper, error) {
	cfg, set := b.Config, b.Set
	ex, err := executor(b, o.Executor)
	if err != nil {
		return nil, err
	}
	var statuses reap.Notifier
	var statusEvents *github.StatusEvents
	if cfg.GitHubToken != "" {
		st, err := github.NewStatuses(github.Config{BaseURL: cfg.GitHubAPIURL, Token: cfg.GitHubToken, PublicURL: cfg.PublicURL}, 0)
		if err != nil {
			return nil, fmt.Errorf("github: %w", err)
		}
		if set.Events != nil {
			statusEvents = github.NewStatusEvents(st, b.Logger.With("component", "github-statuses"), b.Now, 0)
		} else {
			statuses = st
		}
	}
	r := reap.New(reap.Config{CancelInterval: cfg.CancelInterval}, reap.Deps{
		Records: set.Records, Locks: set.Locks, Ends: set.Ends, Executor: b.Backend.Reaped(ex), Waker: set.Queue, Publisher: set.Queue, Notifier: statuses,
		Observer: metrics.NewReap(b.Registry), Logger: b.Logger, Now: b.Now,
	})
	return &Reaper{Reaper: r, statusEvents: statusEvents, set: set}, nil
}

// Run ends builds until ctx ends or the reaper stops, posting commit
// statuses from the build-event stream meanwhile where NewReaper set that
// up; it returns when both have stopped.
func (r *Reaper) Run(ctx context.Context) error {
	if r.statusEvents == nil {
		return r.Reaper.Run(ctx)
	}
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.statusEvents.Run(ctx, r.set.Events)
	}()
	err := r.Reaper.Run(ctx)
	stop()
	<-done
	return err
}
