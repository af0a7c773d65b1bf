// Command dispatcher consumes build requests: catalog lookup, managed-ref
// filter, once-only check, branch lock and concurrency slot, launch; or
// deferral, or a recorded drop. Several replicas may run. It serves
// /healthz, /readyz and /metrics on DECAP_DISPATCHER_ADDR.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/decap-ci/decap/internal/backend"
	"github.com/decap-ci/decap/internal/config"
	"github.com/decap-ci/decap/internal/dispatch"
	"github.com/decap-ci/decap/internal/harden"
	"github.com/decap-ci/decap/internal/health"
	"github.com/decap-ci/decap/internal/metrics"
)

func main() {
	harden.Process()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "dispatcher:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) > 0 {
		return errors.New("dispatcher takes no arguments; configure it with DECAP_* environment variables")
	}
	cfg, err := config.Load(getenv)
	if err != nil {
		return err
	}
	log := cfg.Logger(stderr, "dispatcher")
	reg := metrics.NewRegistry()
	b, err := backend.Open(ctx, cfg, log, time.Now)
	if err != nil {
		return err
	}
	defer b.Close()
	be := metrics.NewBackend(reg)
	b.Instrument(be)
	defer b.StartEvents(ctx, metrics.NewEvents(reg))()
	if err := b.Catalog.Refresh(ctx); err != nil {
		log.Error("first catalog refresh failed; will retry", "err", err)
	}
	go b.Catalog.Run(ctx, cfg.CatalogRefresh)
	ex, err := b.OpenExecutor(time.Now)
	if err != nil {
		return err
	}
	secrets, err := b.OpenSecrets()
	if err != nil {
		return err
	}

	host, _ := os.Hostname()
	maxRetries := cfg.MaxInfraRetries
	if maxRetries == 0 {
		maxRetries = -1 // dispatch.Config's "none"; its 0 is "no cap"
	}
	m := metrics.NewDispatch(reg, cfg.Cap)
	d := dispatch.New(dispatch.Config{
		Owner: fmt.Sprintf("%s/%d", host, os.Getpid()), Cap: cfg.Cap,
		Workers: cfg.DispatchWorkers, MaxDeferAge: cfg.MaxDeferAge, MaxInfraRetries: maxRetries,
	}, dispatch.Deps{
		Queue: b.Queue, Catalog: backend.FreshCatalog(b.Catalog, 2*time.Second), Locks: b.Locks,
		Idempotency: b.Idempotency, Records: b.Records, Launches: b.Launches, Launcher: be.Launcher(ex), Secrets: secrets, Canceller: ex, Gate: b.Gate,
		Observer: m, Logger: log, Now: time.Now,
	})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		m.Sample(ctx, b.Queue, b.Locks, metrics.SampleEvery, log)
	}()
	errc := make(chan error, 1)
	go func() {
		errc <- health.Serve(ctx, cfg.DispatcherAddr, health.Handler(metrics.Handler(reg),
			health.Check{Name: "database", Check: b.Ping},
			health.Check{Name: "catalog", Check: backend.CatalogLoaded(b.Catalog)},
		), log, b.BuildsRefused(log))
	}()
	fmt.Fprintf(stdout, "dispatcher: consuming the queue (at most %d running builds)\n", cfg.Cap)
	runErr := d.Run(ctx)
	err = errors.Join(runErr, <-errc)
	<-sampled
	return err
}
