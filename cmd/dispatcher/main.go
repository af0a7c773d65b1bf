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
	"github.com/decap-ci/decap/internal/harden"
	"github.com/decap-ci/decap/internal/health"
	"github.com/decap-ci/decap/internal/metrics"
	"github.com/decap-ci/decap/internal/services"
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
	b, err := services.Open(ctx, cfg, log, time.Now, nil)
	if err != nil {
		return err
	}
	defer b.Close()
	defer b.Set.StartEvents(ctx, metrics.NewEvents(b.Registry))()
	b.StartCatalog(ctx)
	d, err := services.NewDispatcher(b, services.DispatcherOptions{})
	if err != nil {
		return err
	}
	errc := make(chan error, 1)
	go func() {
		errc <- health.Serve(ctx, cfg.DispatcherAddr, health.Handler(metrics.Handler(b.Registry),
			health.Check{Name: "database", Check: b.Set.Ping},
			health.Check{Name: "catalog", Check: backend.CatalogLoaded(b.Set.Catalog)},
		), log, b.Set.BuildsRefused(log))
	}()
	fmt.Fprintf(stdout, "dispatcher: consuming the queue (at most %d running builds)\n", cfg.Cap)
	runErr := d.Run(ctx)
	return errors.Join(runErr, <-errc)
}
