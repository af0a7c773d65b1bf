// Command reaper ends builds: when a build's process (or Pod) ends it writes
// the final record, releases the branch lock and slot, queues the next
// attempt of a build that an infrastructure failure ended (its retries, up
// to the project's retries.infra), and removes what is left. On start it
// reconciles every build that ended while it was down; it stops the builds
// someone asked to cancel or a newer request superseded. It serves
// /healthz, /readyz and /metrics on DECAP_REAPER_ADDR.
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
	defer b.StartEvents(ctx, metrics.NewEvents(reg))()
	// Outgoing webhooks are delivered here (the consumer group webhooks):
	// the reaper always runs, is on no request path and takes no
	// unauthenticated traffic. Stopped before the store closes.
	defer b.StartWebhooks(ctx, metrics.NewWebhooks(reg))()
	ex, err := b.OpenExecutor(time.Now)
	if err != nil {
		return err
	}
	// Commit statuses, only with a token: from the build-event stream,
	// where the backend has one (the consumer group github-statuses, run
	// here: the reaper is the one service that always runs and is on no
	// request path); posted inline as builds end where it has none, and
	// ingest then posts the queued ones.
	var statuses reap.Notifier
	var statusEvents *github.StatusEvents
	if cfg.GitHubToken != "" {
		st, err := github.NewStatuses(github.Config{BaseURL: cfg.GitHubAPIURL, Token: cfg.GitHubToken, PublicURL: cfg.PublicURL}, 0)
		if err != nil {
			return fmt.Errorf("github: %w", err)
		}
		if b.Events != nil {
			statusEvents = github.NewStatusEvents(st, log.With("component", "github-statuses"), time.Now, 0)
		} else {
			statuses = st
		}
	}
	r := reap.New(reap.Config{CancelInterval: cfg.CancelInterval}, reap.Deps{
		Records: b.Records, Locks: b.Locks, Executor: be.Reaped(ex), Waker: b.Queue, Ends: b.Ends, Publisher: b.Queue, Notifier: statuses,
		Observer: metrics.NewReap(reg), Logger: log, Now: time.Now,
	})

	// Whichever of the two ends first ends the other.
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	if statusEvents != nil {
		done := make(chan struct{})
		go func() {
			defer close(done)
			statusEvents.Run(ctx, b.Events)
		}()
		defer func() { stop(); <-done }() // before the store closes
	}
	errc := make(chan error, 1)
	go func() {
		errc <- health.Serve(ctx, cfg.ReaperAddr, health.Handler(metrics.Handler(reg), health.Check{Name: "database", Check: b.Ping}), log, b.BuildsRefused(log))
		stop()
	}()
	fmt.Fprintln(stdout, "reaper: watching builds")
	err = r.Run(ctx)
	stop()
	return errors.Join(err, <-errc)
}
