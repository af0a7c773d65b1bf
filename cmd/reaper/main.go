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
	b, err := services.Open(ctx, cfg, log, time.Now, nil)
	if err != nil {
		return err
	}
	defer b.Close()
	defer b.Set.StartEvents(ctx, metrics.NewEvents(b.Registry))()
	// Outgoing webhooks are delivered here (the consumer group webhooks):
	// the reaper always runs, is on no request path and takes no
	// unauthenticated traffic. Stopped before the store closes.
	defer b.Set.StartWebhooks(ctx, metrics.NewWebhooks(b.Registry))()
	r, err := services.NewReaper(b, services.ReaperOptions{})
	if err != nil {
		return err
	}

	// Whichever of the two ends first ends the other.
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	errc := make(chan error, 1)
	go func() {
		errc <- health.Serve(ctx, cfg.ReaperAddr, health.Handler(metrics.Handler(b.Registry), health.Check{Name: "database", Check: b.Set.Ping}), log, b.Set.BuildsRefused(log))
		stop()
	}()
	fmt.Fprintln(stdout, "reaper: watching builds")
	err = r.Run(ctx)
	stop()
	return errors.Join(err, <-errc)
}
