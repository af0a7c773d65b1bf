package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/decap-ci/decap/internal/backend"
	"github.com/decap-ci/decap/internal/build"
	"github.com/decap-ci/decap/internal/buildtest"
	"github.com/decap-ci/decap/internal/config"
	"github.com/decap-ci/decap/internal/dispatch"
	"github.com/decap-ci/decap/internal/ingest"
	"github.com/decap-ci/decap/internal/metrics"
)

// stack is one service's view of a backend, opened and instrumented as
// cmd/ingest, cmd/dispatcher and cmd/reaper open theirs. Two stacks on one
// embedded data directory are two SQLite connections that wake each other
// through the wake sockets, as two processes do.
type stack struct {
	cfg config.Config
	set *backend.Set
	reg *prometheus.Registry
	be  *metrics.Backend
	log *slog.Logger
}

// openStack opens the backend kind ("embedded" or "aws") for service. The
// service's log goes where the real one's would, formatted the same, but
// to io.Discard.
func openStack(ctx context.Context, e *env, service, kind, dataDir string, in ...backend.Instrumenter) (*stack, error) {
	vars := map[string]string{
		"DECAP_BACKEND":            kind,
		"DECAP_DATA_DIR":           dataDir,
		"DECAP_BUILD_SCRIPTS":      e.scripts,
		"DECAP_MAX_RUNNING_BUILDS": "0", // builds never end in most scenarios: no cap
	}
	if kind == "aws" {
		w, err := e.world(ctx)
		if err != nil {
			return nil, err
		}
		if w == nil {
			return nil, errors.New("no AWS endpoint: set AWS_ENDPOINT_URL (scripts/with-moto.sh)")
		}
		vars["DECAP_PREFIX"] = w.prefix
	}
	cfg, err := config.Load(func(k string) string { return vars[k] })
	if err != nil {
		return nil, err
	}
	log := cfg.Logger(io.Discard, service)
	reg := metrics.NewRegistry()
	set, err := backend.Open(ctx, cfg, log, time.Now)
	if err != nil {
		return nil, err
	}
	be := metrics.NewBackend(reg)
	set.Instrument(be)
	for _, i := range in {
		set.Instrument(i)
	}
	if err := set.Catalog.Refresh(ctx); err != nil {
		set.Close()
		return nil, fmt.Errorf("catalog: %w", err)
	}
	return &stack{cfg: cfg, set: set, reg: reg, be: be, log: log}, nil
}

func (s *stack) close() { s.set.Close() }

// ingestServer returns ingest's HTTP surface on s, wired as cmd/ingest
// wires it (without the executor, GitHub and the UI, which webhooks do not
// touch).
func (s *stack) ingestServer() *ingest.Server {
	b := s.set
	return ingest.New(ingest.Config{WebhookSecret: []byte(webhookSecret), APIToken: apiToken}, ingest.Deps{
		Publisher: b.Queue, Idempotency: b.Idempotency, Intake: b.Intake, Catalog: b.Catalog, Records: b.Records, Blobs: b.Blobs,
		Queue: b.Queue, Waiting: b.Records, Locks: b.Locks, Gate: b.Gate,
		Observer: metrics.NewIngest(s.reg), Metrics: metrics.Handler(s.reg),
		Ready:  []ingest.Check{{Name: "database", Check: b.Ping}, {Name: "catalog", Check: backend.CatalogLoaded(b.Catalog)}},
		Logger: s.log, Now: time.Now,
	})
}

// dispatcher returns a dispatcher on s, wired as cmd/dispatcher wires it,
// launching through l. obs, if not nil, hears every decision too.
func (s *stack) dispatcher(l dispatch.Launcher, obs dispatch.Observer) (*dispatch.Dispatcher, *metrics.Dispatch) {
	b := s.set
	m := metrics.NewDispatch(s.reg, s.cfg.Cap)
	var o dispatch.Observer = m
	if obs != nil {
		o = observers{m, obs}
	}
	d := dispatch.New(dispatch.Config{
		Owner: fmt.Sprintf("bench/%d", os.Getpid()), Cap: s.cfg.Cap,
		Workers: s.cfg.DispatchWorkers, MaxDeferAge: s.cfg.MaxDeferAge,
	}, dispatch.Deps{
		Queue: b.Queue, Catalog: backend.FreshCatalog(b.Catalog, 2*time.Second), Locks: b.Locks,
		Idempotency: b.Idempotency, Records: b.Records, Launches: b.Launches, Launcher: s.be.Launcher(l), Gate: b.Gate,
		Observer: o, Logger: s.log, Now: time.Now,
	})
	return d, m
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

// decisions counts decisions by action and cause.
type decisions struct {
	launched, deferred, dropped atomic.Int64
	mu                          sync.Mutex
	causes                      map[dispatch.Cause]int
}

func (c *decisions) Decided(d dispatch.Decision) {
	switch d.Action {
	case dispatch.Launched:
		c.launched.Add(1)
	case dispatch.Deferred:
		c.deferred.Add(1)
	case dispatch.Dropped:
		c.dropped.Add(1)
	}
	c.mu.Lock()
	if c.causes == nil {
		c.causes = map[dispatch.Cause]int{}
	}
	c.causes[d.Cause]++
	c.mu.Unlock()
}

func (c *decisions) Paused(bool) {}

func (c *decisions) total() int64 { return c.launched.Load() + c.deferred.Load() + c.dropped.Load() }

func (c *decisions) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return fmt.Sprintf("%d launched, %d deferred, %d dropped (by cause: %v)", c.launched.Load(), c.deferred.Load(), c.dropped.Load(), c.causes)
}

// launchTimes is a Launcher that hands the job to next and notes when that
// returned (the Pod create call of the kubernetes executor); with next nil,
// it launches on fake, where nothing runs until someone ends it.
type launchTimes struct {
	next dispatch.Launcher
	fake *buildtest.FakeExecutor
	// keepJobs keeps every launched job for job.
	keepJobs bool

	mu   sync.Mutex
	at   map[build.ID]time.Time
	jobs map[build.ID]build.Job
	n    atomic.Int64
}

func newLaunchTimes(next dispatch.Launcher) *launchTimes {
	l := &launchTimes{next: next, at: map[build.ID]time.Time{}, jobs: map[build.ID]build.Job{}}
	if next == nil {
		l.fake = buildtest.NewExecutor(time.Now)
		l.next = l.fake
	}
	return l
}

func (l *launchTimes) Launch(ctx context.Context, job build.Job) error {
	if err := l.next.Launch(ctx, job); err != nil {
		return err
	}
	now := time.Now()
	l.mu.Lock()
	if _, ok := l.at[job.Request.BuildID]; !ok {
		l.at[job.Request.BuildID] = now
		l.n.Add(1)
		if l.keepJobs {
			l.jobs[job.Request.BuildID] = job
		}
	}
	l.mu.Unlock()
	return nil
}

// job returns the launched job of build id, if keepJobs kept it.
func (l *launchTimes) job(id build.ID) (build.Job, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	j, ok := l.jobs[id]
	return j, ok
}

func (l *launchTimes) get(id build.ID) (time.Time, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	t, ok := l.at[id]
	return t, ok
}

// serve serves h on a fresh loopback port until ctx ends; it returns the
// base URL.
func serve(ctx context.Context, h http.Handler) (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
	}()
	return "http://" + ln.Addr().String(), nil
}
