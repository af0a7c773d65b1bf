// Command reaper ends builds: when a build's process (or Pod) ends it writes
// the final record, releases the branch lock and slot, and removes what is
// left. On start it reconciles every build that ended while it was down. It
// serves /healthz, /readyz and /metrics on DECAP_REAPER_ADDR.
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
	"github.com/decap-ci/decap/internal/github"
	"github.com/decap-ci/decap/internal/harden"
	"github.com/decap-ci/decap/internal/health"
	"github.com/decap-ci/decap/internal/metrics"
	"github.com/decap-ci/decap/internal/reap"
)

// reconcileEvery is how often builds recorded as running are checked for a
// vanished process, and the leases of live ones renewed.
const reconcileEvery = time.Minute

// renewFor is how long past each reconciliation a live build's lease lasts
// at least: many reconciliations, so a few failed ones lose no lease.
const renewFor = 15 * reconcileEvery

// cancelSweepEvery is how often, on the kubernetes executor, the reaper
// looks for running builds someone asked to cancel: the delay of a cancel.
const cancelSweepEvery = 2 * time.Second

func main() {
	harden.Process()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "reaper:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) > 0 {
		return errors.New("reaper takes no arguments; configure it with DECAP_* environment variables")
	}
	cfg, err := config.Load(getenv)
	if err != nil {
		return err
	}
	log := cfg.Logger(stderr, "reaper")
	reg := metrics.NewRegistry()
	b, err := backend.Open(ctx, cfg, log, time.Now)
	if err != nil {
		return err
	}
	defer b.Close()
	be := metrics.NewBackend(reg)
	b.Instrument(be)
	ex, err := b.OpenExecutor(time.Now)
	if err != nil {
		return err
	}
	r := reap.New(b.Records, b.Locks, be.Remover(ex), log, time.Now).ObserveWith(metrics.NewReap(reg)).RenewFor(renewFor).WakeWith(b.Queue)
	if cfg.GitHubToken != "" {
		statuses, err := github.NewStatuses(github.Config{BaseURL: cfg.GitHubAPIURL, Token: cfg.GitHubToken, PublicURL: cfg.PublicURL}, 0)
		if err != nil {
			return fmt.Errorf("github: %w", err)
		}
		r.NotifyTo(statuses)
	}

	errc := make(chan error, 1)
	go func() {
		errc <- health.Serve(ctx, cfg.ReaperAddr, health.Handler(metrics.Handler(reg), health.Check{Name: "database", Check: b.Ping}), log)
	}()
	go func() {
		t := time.NewTicker(reconcileEvery)
		defer t.Stop()
		for {
			if err := r.Reconcile(ctx); err != nil && ctx.Err() == nil {
				log.Error("reconcile running builds", "err", err)
			}
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	if cfg.Executor == "kubernetes" {
		// Ingest asks for cancels in the build records (it may not delete
		// Pods); stop those builds.
		go func() {
			t := time.NewTicker(cancelSweepEvery)
			defer t.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-t.C:
				}
				if err := r.SweepCancels(ctx, ex); err != nil && ctx.Err() == nil {
					log.Error("stop cancelled builds", "err", err)
				}
			}
		}()
	}
	fmt.Fprintln(stdout, "reaper: watching builds")
	watchErr := ex.Watch(ctx, r.Handle)
	if errors.Is(watchErr, context.Canceled) {
		watchErr = nil
	}
	return errors.Join(watchErr, <-errc)
}
