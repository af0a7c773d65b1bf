package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
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
	"github.com/decap-ci/decap/internal/reap"
	"github.com/decap-ci/decap/internal/services"
)

// stack is one service's view of a backend, opened and instrumented by
// services.Open as cmd/ingest, cmd/dispatcher and cmd/reaper open theirs;
// its services are assembled by the services package, as theirs are. Two
// stacks on one embedded data directory are two SQLite connections that
// wake each other through the wake sockets, as two processes do. Unlike
// the processes, a stack forwards no build events (Set.StartEvents) unless
// its scenario starts that.
type stack struct {
	base *services.Base
	set  *backend.Set
	reg  *prometheus.Registry
	log  *slog.Logger
}

// openStack opens the backend kind ("embedded" or "aws") for service;
// calls, at most one, hears every call of its ports. The service's log
// goes where the real one's would, formatted the same, but to io.Discard.
func openStack(ctx context.Context, e *env, service, kind, dataDir string, calls ...metrics.Calls) (*stack, error) {
	var counted metrics.Calls
	switch len(calls) {
	case 0:
	case 1:
		counted = calls[0]
	default:
		return nil, errors.New("openStack: at most one counter of calls")
	}
	vars := map[string]string{
		"DECAP_BACKEND":               kind,
		"DECAP_DATA_DIR":              dataDir,
		"DECAP_BUILD_SCRIPTS":         e.scripts,
		"DECAP_MAX_RUNNING_BUILDS":    "0", // builds never end in most scenarios: no cap
		"DECAP_GITHUB_WEBHOOK_SECRET": webhookSecret,
		"DECAP_API_TOKEN":             apiToken,
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
	b, err := services.Open(ctx, cfg, log, time.Now, counted)
	if err != nil {
		return nil, err
	}
	if err := b.Set.Catalog.Refresh(ctx); err != nil {
		b.Close()
		return nil, fmt.Errorf("catalog: %w", err)
	}
	return &stack{base: b, set: b.Set, reg: b.Registry, log: log}, nil
}

func (s *stack) close() { s.base.Close() }

// ingestServer returns ingest's HTTP surface on s, as cmd/ingest assembles
// it (services.NewIngest).
func (s *stack) ingestServer() (*ingest.Server, error) { return services.NewIngest(s.base) }

// dispatcher returns a dispatcher on s, as cmd/dispatcher assembles it
// (services.NewDispatcher), launching through l; obs hear every decision
// too. Its Run samples for the metrics, as the real one's does.
func (s *stack) dispatcher(l services.Launcher, obs ...dispatch.Observer) (*services.Dispatcher, error) {
	return services.NewDispatcher(s.base, services.DispatcherOptions{Executor: l, Observers: obs})
}

// reaper returns a reaper on s, as cmd/reaper assembles it
// (services.NewReaper), on the executor ex.
func (s *stack) reaper(ex reap.Executor) (*services.Reaper, error) {
	return services.NewReaper(s.base, services.ReaperOptions{Executor: ex})
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

// launchTimes is a services.Launcher that hands the job to next and notes
// when that returned (the Pod create call of the kubernetes executor); with next nil,
// it launches on fake, where nothing runs until someone ends it.
type launchTimes struct {
	next services.Launcher
	fake *buildtest.FakeExecutor
	// keepJobs keeps every launched job for job.
	keepJobs bool

	mu   sync.Mutex
	at   map[build.ID]time.Time
	jobs map[build.ID]build.Job
	n    atomic.Int64
}

func newLaunchTimes(next services.Launcher) *launchTimes {
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

// Cancel stops the build id on next.
func (l *launchTimes) Cancel(ctx context.Context, id build.ID) error { return l.next.Cancel(ctx, id) }

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
