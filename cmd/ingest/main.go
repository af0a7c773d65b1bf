// Command ingest is Decap's HTTP service: GitHub webhooks and API build
// requests in, build requests onto the queue; the JSON API, the status UI,
// health, readiness and Prometheus metrics (/metrics) out. It is configured
// by DECAP_* variables (see the README).
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
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
		fmt.Fprintln(os.Stderr, "ingest:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) > 0 {
		return errors.New("ingest takes no arguments; configure it with DECAP_* environment variables")
	}
	cfg, err := config.Load(getenv)
	if err != nil {
		return err
	}
	log := cfg.Logger(stderr, "ingest")
	warn(cfg, log)
	b, err := services.Open(ctx, cfg, log, time.Now, nil)
	if err != nil {
		return err
	}
	defer b.Close()
	defer b.Set.StartEvents(ctx, metrics.NewEvents(b.Registry))()
	b.StartCatalog(ctx)
	srv, err := services.NewIngest(b)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "ingest: serving the UI and API on http://%s/\n", cfg.IngestAddr)
	return health.ServeWith(ctx, cfg.IngestAddr, srv, log, health.Timeouts{
		Read: cfg.HTTP.ReadTimeout, Write: cfg.HTTP.WriteTimeout, Idle: cfg.HTTP.IdleTimeout,
	}, b.Set.BuildsRefused(log))
}

// warn logs the settings that let anyone in, or keep everyone out.
func warn(cfg config.Config, log *slog.Logger) {
	if cfg.InsecureSkipSignature {
		log.Warn("DECAP_INSECURE_SKIP_SIGNATURE is on: webhooks are accepted WITHOUT signature verification; anyone who can reach this port can queue builds")
	} else if len(cfg.WebhookSecret) == 0 {
		log.Warn("no webhook secret configured (DECAP_GITHUB_WEBHOOK_SECRET): every webhook will be rejected with 401")
	}
	if cfg.AuthDisabled {
		log.Warn("DECAP_AUTH=off: API mutations and reads need no token (requests must name this server by IP, localhost or DECAP_PUBLIC_URL's host)")
	} else if cfg.APIToken == "" {
		log.Warn("no API token configured (DECAP_API_TOKEN): API mutations and reads will be rejected with 401")
	} else if cfg.ReadPublic {
		log.Warn("DECAP_READ_AUTH=public: anyone who can reach this port can read builds, logs and artifacts (requests must name this server by IP, localhost or DECAP_PUBLIC_URL's host)")
	}
}
