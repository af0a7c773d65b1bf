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
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/decap-ci/decap/internal/backend"
	"github.com/decap-ci/decap/internal/config"
	"github.com/decap-ci/decap/internal/github"
	"github.com/decap-ci/decap/internal/harden"
	"github.com/decap-ci/decap/internal/health"
	"github.com/decap-ci/decap/internal/ingest"
	"github.com/decap-ci/decap/internal/metrics"
	"github.com/decap-ci/decap/internal/ui"
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

	reg := metrics.NewRegistry()
	b, err := backend.Open(ctx, cfg, log, time.Now)
	if err != nil {
		return err
	}
	defer b.Close()
	b.Instrument(metrics.NewBackend(reg))
	defer b.StartEvents(ctx, metrics.NewEvents(reg))()
	if err := b.Catalog.Refresh(ctx); err != nil {
		log.Error("first catalog refresh failed; will retry", "err", err)
	}
	go b.Catalog.Run(ctx, cfg.CatalogRefresh)

	// The executor shows running builds' logs. Without it (a nil
	// interface, not a typed nil) they answer 404.
	var live ingest.LiveLogs
	if _, err := b.OpenExecutor(time.Now); err != nil {
		log.Warn("live logs of running builds are unavailable", "err", err)
	} else {
		live = b.Executor
	}
	// Ingest stops no build itself, whatever the executor: it records the
	// cancel, and the reaper stops the build.
	canceller := backend.CancelRequests{Records: b.Records, Now: time.Now}
	gh := github.Config{BaseURL: cfg.GitHubAPIURL, Token: cfg.GitHubToken, PublicURL: cfg.PublicURL}
	refs, err := github.NewRefs(gh, 0, time.Now)
	if err != nil {
		return fmt.Errorf("github: %w", err)
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
			return fmt.Errorf("github: %w", err)
		}
		statuses = st
		if b.Events != nil {
			statuses = github.WaitingOnly{Statuses: st}
		}
	}
	// Ingest writes and lists the builds' secrets; it never reads a value.
	secrets, err := b.OpenSecrets()
	if err != nil {
		return err
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
		Publisher: b.Queue, Idempotency: b.Idempotency, Intake: b.Intake, Catalog: b.Catalog, Records: b.Records, Blobs: b.Blobs, LiveLogs: live,
		Queue: b.Queue, Waiting: b.Records, Running: b.Records, Locks: b.Locks, Gate: b.Gate, Canceller: canceller,
		Refs: refs, Notifier: statuses, Sessions: b.Sessions, Secrets: secrets, Pulls: b.Pulls, Events: b.Events,
		Webhooks: b.Webhooks, WebhookURLs: b.WebhookPolicy(),
		Observer: metrics.NewIngest(reg), Metrics: metrics.Handler(reg),
		Ready: []ingest.Check{
			{Name: "database", Check: b.Ping},
			{Name: "catalog", Check: backend.CatalogLoaded(b.Catalog)},
		},
		Logger: log, Now: time.Now,
	})
	ui.New(ui.Config{AuthDisabled: cfg.AuthDisabled}, ui.Deps{
		Records: b.Records, Catalog: b.Catalog, Queue: b.Queue, Locks: b.Locks, Gate: b.Gate, Pulls: b.Pulls, Auth: srv,
		Webhooks: b.Webhooks, Logger: log.With("component", "ui"), Now: time.Now,
	}).Register(srv.Echo())
	fmt.Fprintf(stdout, "ingest: serving the UI and API on http://%s/\n", cfg.IngestAddr)
	return health.ServeWith(ctx, cfg.IngestAddr, srv, log, health.Timeouts{
		Read: cfg.HTTP.ReadTimeout, Write: cfg.HTTP.WriteTimeout, Idle: cfg.HTTP.IdleTimeout,
	}, b.BuildsRefused(log))
}
