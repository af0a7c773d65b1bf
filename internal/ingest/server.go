// Package ingest is Decap's only HTTP service: it verifies and normalizes
// GitHub webhooks and API build requests into build requests and publishes
// them, and serves the JSON API, health and readiness. It is stateless.
package ingest

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"

	"github.com/decap-ci/decap/internal/api"
	"github.com/decap-ci/decap/internal/build"
)

// Publisher puts build requests on the queue; an error means none of them
// may be assumed queued.
type Publisher interface {
	Publish(ctx context.Context, reqs ...build.Request) error
}

// Catalog is the build-scripts repository as ingest reads it. Lookup fails
// with build.ErrNotFound for an unknown project and build.ErrInvalid for an
// unbuildable one; Refresh rescans the repository.
type Catalog interface {
	Lookup(team, project string) (build.Descriptor, string, error)
	Projects() []build.Project
	// Skipped lists the entries skipped for their names, one line each.
	Skipped() []string
	Refresh(ctx context.Context) error
}

// Records reads build records, and writes the first, queued record of a
// request (see buildtest.Records for the contract); Unfinished and
// EndWaiting let an accepted request supersede the older ones of its lock
// key (internal/supersede).
type Records interface {
	Save(ctx context.Context, r build.Record) error
	Get(ctx context.Context, id build.ID) (build.Record, error)
	Unfinished(ctx context.Context, key string) ([]build.Record, error)
	EndWaiting(ctx context.Context, r build.Record) error
	ListProject(ctx context.Context, team, project string, limit int, cursor string) ([]build.Record, string, error)
	AverageDuration(ctx context.Context, team, project string, n int) (time.Duration, int, error)
	Projects(ctx context.Context) ([]string, error)
}

// Idempotency returns the build that owns a delivery: id when the claim is
// the first, the earlier build otherwise.
type Idempotency interface {
	Claim(ctx context.Context, key string, id build.ID, ttl time.Duration) (build.ID, error)
}

// Blobs opens stored logs and artifacts; build.ErrNotFound if absent.
type Blobs interface {
	Open(ctx context.Context, key string) (io.ReadCloser, error)
}

// LiveLogs opens the console log of a build that is still running, as far
// as it is written; build.ErrNotFound when the build is not running here.
type LiveLogs interface {
	OpenLiveLog(id build.ID) (io.ReadCloser, error)
}

// LogFollower is a LiveLogs that can also stream a running build's log as
// it is written (the kubernetes executor: the API server's pods/log with
// follow). FollowLiveLog's reader blocks until more is written and ends
// when the build's container does, or ctx does.
type LogFollower interface {
	FollowLiveLog(ctx context.Context, id build.ID) (io.ReadCloser, error)
}

// QueueInfo counts the queue's messages for GET /api/v1/queue.
type QueueInfo interface {
	Stats(ctx context.Context) (build.QueueStats, error)
}

// WaitingLister lists the requests not yet started: a page of the queued
// and deferred records, oldest first (by QueuedAt, then BuildID), and how
// many there are (build.Records.Waiting).
type WaitingLister interface {
	Waiting(ctx context.Context, offset, limit int) ([]build.Record, int, error)
}

// RunningLister lists the running builds' records (status running), in
// any order.
type RunningLister interface {
	Running(ctx context.Context) ([]build.Record, error)
}

// Locks lists the held branch locks (unexpired leases, ordered by key) and
// force-releases one whoever holds it; ForceRelease gives build.ErrNotFound
// when nobody holds an unexpired lease on the key.
type Locks interface {
	List(ctx context.Context) ([]build.Lease, error)
	ForceRelease(ctx context.Context, key string) error
}

// Gate reads and replaces the dispatch gate every dispatcher obeys; Get
// returns the open gate (the zero GateState) when it was never set.
type Gate interface {
	Get(ctx context.Context) (build.GateState, error)
	Set(ctx context.Context, g build.GateState) error
}

// Canceller stops a running build. On success the build's entrypoint ends
// it and reports it as cancelled, and the reaper records that; the caller
// does not write the record. build.ErrNotFound means no such build process
// runs any more: it ended by itself and the reaper records how.
type Canceller interface {
	Cancel(ctx context.Context, id build.ID) error
}

// RefInfo is one branch or tag of a repository and the commit it points at,
// {"name", "sha"}. It is build's type, so that a repository manager adapter
// (internal/github) satisfies Refs without importing ingest.
type RefInfo = build.RefInfo

// Refs lists a project's branches and tags from its repository manager
// (GitHub). It fails with build.ErrNotFound when the repository does not
// exist there and with an error wrapping build.ErrUnavailable when the
// manager cannot answer now (unreachable, rate limited); any other error
// is a failure of the manager.
type Refs interface {
	Refs(ctx context.Context, team, project string) (branches, tags []RefInfo, err error)
}

// Notifier tells another system (GitHub commit statuses) about builds. It
// is called in the background after the answer is decided, so it never
// delays a webhook; its errors are logged.
type Notifier interface {
	BuildQueued(ctx context.Context, rec build.Record) error
	BuildEnded(ctx context.Context, rec build.Record) error
	// PullRequestWaiting hears of a pull request whose head waits for
	// approval (build.ReasonWaitingForApproval).
	PullRequestWaiting(ctx context.Context, p build.PullRequestState) error
}

// notify calls fn on the Notifier in the background, bounded in time.
func (s *Server) notify(rec build.Record, fn func(Notifier, context.Context, build.Record) error) {
	if s.deps.Notifier == nil {
		return
	}
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := fn(s.deps.Notifier, ctx, rec); err != nil {
			s.recordLog(rec).Warn("notify about build", "err", err)
		}
	}()
}

// Observer hears what ingest does, for metrics. Its methods are called on
// the request path, so they must be cheap, must not block, and must be safe
// for concurrent use. Every label it is given comes from a small fixed set.
type Observer interface {
	EdgeObserver
	// WebhookHandled hears of every POST /hooks/github: its event ("push",
	// "pull_request", "issue_comment", "ping", "other" or "none") and
	// outcome (one of the Outcome* constants).
	WebhookHandled(event, outcome string)
	// Published hears how long one publish to the queue took, whether it
	// succeeded or not.
	Published(took time.Duration)
	// BuildQueued hears of each new build request queued (not of a
	// redelivery answered with an earlier build).
	BuildQueued(trigger build.Trigger)
	// Superseded hears how many waiting requests an accepted request
	// ended superseded, and how many running builds it asked to stop.
	Superseded(waiting, running int)
	// RequestServed hears of every HTTP request when its answer is decided:
	// its method (GET, POST, ..., or "other"), its route pattern ("/api/v1/builds/:id";
	// "unmatched" when no route matched) and its status code.
	RequestServed(method, route string, code int)
}

// Outcomes of a webhook, as WebhookHandled hears them.
const (
	OutcomeQueued       = "queued"       // a build request was queued
	OutcomeIgnored      = "ignored"      // valid, but builds nothing (ping, other events, deletions, unmanaged refs, unknown projects)
	OutcomeDuplicate    = "duplicate"    // a redelivery, answered with its first build
	OutcomeWaiting      = "waiting"      // a pull request's head waits for approval
	OutcomeClosed       = "closed"       // a pull request was closed: its builds are cancelled
	OutcomeUnauthorized = "unauthorized" // missing or bad signature
	OutcomeInvalid      = "invalid"      // a malformed request: 4xx
	OutcomeError        = "error"        // ingest or a backend failed: 5xx
)

type nopObserver struct{}

func (nopObserver) WebhookHandled(string, string)     {}
func (nopObserver) Published(time.Duration)           {}
func (nopObserver) BuildQueued(build.Trigger)         {}
func (nopObserver) Superseded(int, int)               {}
func (nopObserver) RequestServed(string, string, int) {}

// recordLog returns the server's logger with the build's ID, lock key and,
// when known, delivery ID attached.
func (s *Server) recordLog(rec build.Record) *slog.Logger {
	log := s.log.With("build_id", rec.BuildID, "lock_key", rec.LockKey())
	if rec.DeliveryID != "" {
		log = log.With("delivery_id", rec.DeliveryID)
	}
	return log
}

// Check is one readiness check: a backend that must be reachable.
type Check struct {
	Name  string
	Check func(ctx context.Context) error
}

// Config configures the HTTP surface.
type Config struct {
	// WebhookSecret verifies X-Hub-Signature-256. Empty with
	// InsecureSkipSignature false rejects every webhook.
	WebhookSecret []byte
	// InsecureSkipSignature accepts unsigned webhooks (local trials only).
	InsecureSkipSignature bool
	// APIToken guards mutations (Authorization: Bearer ..., or the UI's
	// session cookie with X-Decap-CSRF: 1). Empty with AuthDisabled false
	// rejects every mutation.
	APIToken string
	// AuthDisabled lets mutations and reads through without a token (local
	// use only; the Host check then guards against DNS rebinding).
	AuthDisabled bool
	// ReadPublic lets reads (GET of /api/v1 and the UI's pages) through
	// without a credential (DECAP_READ_AUTH=public); mutations still need
	// one. The Host check then guards against DNS rebinding.
	ReadPublic bool
	// NoPodNames says the executor runs no Pods (the local executor, whose
	// records name a process directory "build-<id>"): build answers then
	// leave podName out.
	NoPodNames bool
	// PublicBadges lets anyone read the status badges, /badge/...
	// (DECAP_BADGES=public); otherwise a badge is a read like any other.
	PublicBadges bool
	// SessionTTL is how long a UI session lasts (default DefaultSessionTTL).
	SessionTTL time.Duration
	// PublicURL is where people reach ingest (DECAP_PUBLIC_URL); its host
	// passes the Host check.
	PublicURL string
	// AuthFailureLimit failed authentications of one client within
	// AuthFailureWindow block it for AuthBlock; AuthClients bounds the
	// clients remembered (defaults: the DefaultAuth* constants).
	AuthFailureLimit  int
	AuthFailureWindow time.Duration
	AuthBlock         time.Duration
	AuthClients       int
	// MaxBodyBytes bounds the body of GitHub's webhooks, POST /hooks/github
	// and /hooks/buildscripts (default 5 MiB; GitHub caps payloads at 25 MB,
	// and a push's payload lists at most 20 commits); larger gets 413.
	// Limits bounds every other route's body.
	MaxBodyBytes int64
	// Limits bound what requests can hold: bodies read at once, log
	// follows (see Limits).
	Limits Limits
	// FollowPoll is how often a followed log is checked for more (default 250ms).
	FollowPoll time.Duration
}

// Deps are the Server's collaborators. LiveLogs and the control-plane
// collaborators below it may be nil: their endpoints then answer 501 Not
// Implemented (a running build cannot be cancelled without a Canceller).
type Deps struct {
	Publisher   Publisher
	Idempotency Idempotency
	// Intake, when set, writes an accepted request's claims, record and
	// message at once (the embedded store: one write); without it ingest
	// makes them as separate calls to Idempotency, Records and Publisher
	// (build.StepIntake).
	Intake   build.Intake
	Catalog  Catalog
	Records  Records
	Blobs    Blobs
	LiveLogs LiveLogs

	Queue     QueueInfo
	Waiting   WaitingLister
	Running   RunningLister
	Locks     Locks
	Gate      Gate
	Canceller Canceller
	Refs      Refs
	// Notifier, when set, hears of builds queued and of builds cancelled
	// before they started (commit statuses on GitHub).
	Notifier Notifier
	// Events is the build-event stream GET /api/v1/events tails; without
	// it (a backend with no stream yet) that answers 501.
	Events EventTail
	// Pulls stores what Decap knows of pull requests; without it
	// pull_request and issue_comment events build nothing.
	Pulls PullRequests
	// Secrets stores the projects' secrets for builds; without it the
	// secrets routes answer 501.
	Secrets SecretStore
	// Webhooks keeps the outgoing webhooks and WebhookURLs checks their
	// URLs; without both the subscriptions routes answer 501.
	Webhooks    WebhookStore
	WebhookURLs WebhookURLs
	// Sessions stores the UI's sessions; without it nobody can sign in
	// (POST /api/v1/session answers 501) and only the token authenticates.
	Sessions Sessions

	// Observer hears webhooks, publishes and requests; nil hears nothing.
	Observer Observer
	// Metrics, when set, is served at GET /metrics.
	Metrics http.Handler

	Ready  []Check
	Logger *slog.Logger
	Now    func() time.Time
}

// Server serves ingest's routes.
type Server struct {
	cfg  Config
	deps Deps
	obs  Observer
	log  *slog.Logger
	now  func() time.Time
	echo *echo.Echo
	edge edge
	// throttle counts failed authentications per client; publicHost is
	// the host of Config.PublicURL (checkHost).
	throttle   *authThrottle
	publicHost string
	// crossSite tells a browser's request sent by a page of another
	// origin (Sec-Fetch-Site, or Origin against Host); other clients send
	// neither header and pass.
	crossSite *http.CrossOriginProtection
	// tails holds a token per log tail being read (streamTail).
	tails chan struct{}
	// badges remembers projects' badges briefly (badge).
	badges badgeCache
	// ready is the last readiness answer (readyz).
	ready struct {
		sync.Mutex
		at     time.Time
		failed map[string]string
	}
}

// errUnauthorized marks a missing or wrong signature or token: 401.
var errUnauthorized = errors.New("unauthorized")

// publicError is an error answer whose status and message are decided where
// it happens (an upstream's failure), while its cause is only logged.
type publicError struct {
	status int
	msg    string
	cause  error
}

func (e *publicError) Error() string { return e.msg + ": " + e.cause.Error() }
func (e *publicError) Unwrap() error { return e.cause }

// New returns a Server with every route registered.
func New(cfg Config, deps Deps) *Server {
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = 5 << 20
	}
	if cfg.FollowPoll <= 0 {
		cfg.FollowPoll = 250 * time.Millisecond
	}
	if deps.Logger == nil {
		deps.Logger = slog.New(slog.DiscardHandler)
	}
	if deps.Now == nil {
		deps.Now = time.Now
	}
	if deps.Observer == nil {
		deps.Observer = nopObserver{}
	}
	if deps.Intake == nil {
		deps.Intake = build.StepIntake{Idempotency: deps.Idempotency, Records: deps.Records, Queue: deps.Publisher}
	}
	cfg.Limits = cfg.Limits.orDefaults(cfg.MaxBodyBytes)
	cfg = cfg.withAuthDefaults()
	s := &Server{cfg: cfg, deps: deps, obs: deps.Observer, log: deps.Logger, now: deps.Now,
		edge: newEdge(cfg.Limits, deps.Records, cfg.FollowPoll, deps.Observer, deps.Events)}
	s.throttle = newAuthThrottle(cfg.AuthFailureLimit, cfg.AuthFailureWindow, cfg.AuthBlock, cfg.AuthClients, deps.Now, deps.Logger)
	s.publicHost = publicHostOf(cfg.PublicURL)
	s.crossSite = http.NewCrossOriginProtection()
	s.tails = make(chan struct{}, maxLogTails)
	s.badges = badgeCache{entries: map[string]badgeEntry{}}
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.IPExtractor = ipExtractor(cfg.Limits.TrustedProxies)
	e.SchemeExtractor = schemeExtractor(cfg.Limits.TrustedProxies)
	e.HTTPErrorHandler = s.handleError
	e.Use(middleware.RequestID())
	e.Use(s.observeRequests)
	e.Use(middleware.Recover())
	// limitBody first: a request refused after it, before its body is
	// read, is answered at once (the Host check's 403 too).
	e.Use(s.limitBody)
	e.Use(s.checkHost)
	e.Use(middleware.RequestLoggerWithConfig(middleware.RequestLoggerConfig{
		LogStatus: true, LogURIPath: true, LogMethod: true, LogLatency: true, LogRequestID: true,
		// The error handler answers first, so the line shows the status
		// actually sent, not 200.
		HandleError: true,
		LogValuesFunc: func(c echo.Context, v middleware.RequestLoggerValues) error {
			s.log.Debug("request", "method", v.Method, "path", v.URIPath, "status", v.Status,
				"latency", v.Latency, "request_id", v.RequestID)
			return nil
		},
	}))

	e.POST("/hooks/github", s.githubHook)
	e.POST("/hooks/buildscripts", s.refreshCatalog)
	api := e.Group("/api/v1")
	// Every read needs requireRead, every mutation requireToken; the
	// session endpoints are how a person gets a credential.
	api.GET("/teams", s.teams, s.requireRead)
	api.GET("/projects", s.projects, s.requireRead)
	api.GET("/projects/:team/:project/builds", s.projectBuilds, s.requireRead)
	api.POST("/projects/:team/:project/builds", s.requestBuild, s.requireToken)
	api.GET("/projects/:team/:project/refs", s.projectRefs, s.requireRead)
	api.GET("/projects/:team/:project/pulls", s.projectPulls, s.requireRead)
	s.registerSecretRoutes(api)
	s.registerSubscriptionRoutes(api)
	api.GET("/builds", s.listBuilds, s.requireRead)
	api.GET("/builds/:id", s.getBuild, s.requireRead)
	api.DELETE("/builds/:id", s.cancelBuild, s.requireToken)
	api.POST("/builds/:id/rebuild", s.rebuildBuild, s.requireToken)
	api.GET("/builds/:id/log", s.buildLog, s.requireRead, untrustedContent)
	api.GET("/builds/:id/artifacts", s.buildArtifacts, s.requireRead, untrustedContent)
	api.HEAD("/builds/:id/artifacts", s.buildArtifacts, s.requireRead, untrustedContent)
	api.GET("/queue", s.queue, s.requireRead)
	api.GET("/locks", s.locks, s.requireRead)
	api.GET("/locks/:team/:project/*", s.lock, s.requireRead)
	api.DELETE("/locks/:team/:project/*", s.releaseLock, s.requireToken)
	api.GET("/dispatch", s.dispatchGate, s.requireRead)
	api.GET("/events", s.buildEvents, s.requireRead)
	api.POST("/dispatch/pause", s.pauseDispatch, s.requireToken)
	api.POST("/dispatch/resume", s.resumeDispatch, s.requireToken)
	api.POST("/session", s.createSession)
	api.DELETE("/session", s.deleteSession)
	e.GET("/badge/*", s.badge, s.requireBadge)
	e.GET("/healthz", func(c echo.Context) error { return c.JSON(http.StatusOK, map[string]string{"status": "ok"}) })
	e.GET("/readyz", s.readyz)
	if deps.Metrics != nil {
		e.GET("/metrics", echo.WrapHandler(deps.Metrics))
	}
	s.echo = e
	return s
}

// observeRequests tells the Observer of every request once its answer is
// decided. An error is handed to the error handler here rather than after
// the middleware chain, so that its status is known; the chain then
// returns nil.
func (s *Server) observeRequests(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		if err := next(c); err != nil {
			c.Error(err)
		}
		route := c.Path()
		if route == "" {
			route = "unmatched"
		}
		s.obs.RequestServed(methodLabel(c.Request().Method), route, c.Response().Status)
		return nil
	}
}

// methodLabel bounds a request's method to the standard ones.
func methodLabel(m string) string {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodOptions:
		return m
	}
	return "other"
}

// Echo returns the server's echo instance, for mounting more routes (the
// status UI) behind the same middleware.
func (s *Server) Echo() *echo.Echo { return s.echo }

// ServeHTTP serves a request through the echo router and error handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.echo.ServeHTTP(w, r) }

// Who made a mutation, as recorded in reasons and the gate's By.
const (
	actorKey = "decap.actor"
	actorAPI = "api" // Authorization: Bearer, or auth off
	actorUI  = "ui"  // the session cookie
)

// csrfHeader must be "1" on every mutation authenticated by the session
// cookie. A cross-site form or a simple request cannot set a header, so the
// header proves the request came from a script of the UI's own origin.
const csrfHeader = "X-Decap-CSRF"

// requireToken guards mutations with the API token, given either as
// Authorization: Bearer or as a UI session (see authenticate); a
// session-authenticated request must also carry X-Decap-CSRF: 1. It
// records who made the mutation (actorAPI or actorUI) for the handler.
// A browser's request sent by a page of another origin is refused first,
// whatever the auth: with auth off nothing else would stop any web page
// from POSTing to http://127.0.0.1:8080 (a simple request needs no
// preflight, and the Host check lets IP addresses through).
func (s *Server) requireToken(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		if err := s.crossSite.Check(c.Request()); err != nil {
			return echo.NewHTTPError(http.StatusForbidden, "a change sent by another site's page is refused")
		}
		if s.cfg.AuthDisabled {
			c.Set(actorKey, actorAPI)
			return next(c)
		}
		who, err := s.authenticate(c)
		if err != nil {
			return err
		}
		if who == actorUI && c.Request().Header.Get(csrfHeader) != "1" {
			return echo.NewHTTPError(http.StatusForbidden, "missing "+csrfHeader+" header (a request authenticated by the session cookie must send "+csrfHeader+": 1)")
		}
		c.Set(actorKey, who)
		return next(c)
	}
}

// validToken compares token with the API token in constant time. No token
// is valid when none is configured.
func (s *Server) validToken(token string) bool {
	return s.cfg.APIToken != "" && subtle.ConstantTimeCompare([]byte(token), []byte(s.cfg.APIToken)) == 1
}

// actor returns who made the mutation in c: actorAPI or actorUI.
func actor(c echo.Context) string {
	if a, ok := c.Get(actorKey).(string); ok {
		return a
	}
	return actorAPI
}

// handleError decides every error answer's status, in one place.
func (s *Server) handleError(err error, c echo.Context) {
	if c.Response().Committed {
		return
	}
	status, msg := http.StatusInternalServerError, "internal error"
	var he *echo.HTTPError
	var pe *publicError
	switch {
	case errors.As(err, &pe):
		status, msg = pe.status, pe.msg
	case errors.As(err, &he):
		status = he.Code
		msg = fmt.Sprint(he.Message)
		if he.Internal != nil {
			msg += ": " + he.Internal.Error()
		}
	case errors.Is(err, errUnauthorized):
		status, msg = http.StatusUnauthorized, err.Error()
	case errors.Is(err, build.ErrNotFound):
		status, msg = http.StatusNotFound, err.Error()
	case errors.Is(err, build.ErrInvalid):
		status, msg = http.StatusBadRequest, err.Error()
	case errors.Is(err, build.ErrConflict):
		status, msg = http.StatusConflict, err.Error()
	case errors.Is(err, build.ErrUnavailable), errors.Is(err, context.DeadlineExceeded):
		status, msg = http.StatusServiceUnavailable, "backend unavailable, try again"
	}
	if status >= 500 {
		s.log.Error("request failed", "method", c.Request().Method, "path", c.Path(), "status", status,
			"request_id", c.Response().Header().Get(echo.HeaderXRequestID), "err", err)
	}
	if c.Request().Method == http.MethodHead {
		_ = c.NoContent(status)
		return
	}
	_ = c.JSON(status, api.Error{Error: msg, Detail: map[string]any{"status": status}})
}

// readyAge is how long a readiness answer is reused: /readyz is public,
// and its checks call the backends (the queue's counts, a record read,
// SQLite's write lock), so a flood of probes must not become a flood of
// backend calls. Probes come every few seconds; a service starting up is
// seen ready at most this late.
const readyAge = 250 * time.Millisecond

func (s *Server) readyz(c echo.Context) error {
	failed := s.readiness(c.Request().Context())
	if len(failed) > 0 {
		return c.JSON(http.StatusServiceUnavailable, api.Error{Error: "not ready", Detail: failed})
	}
	return c.JSON(http.StatusOK, api.Status{Status: "ready"})
}

// readiness runs the readiness checks, or returns what they found less
// than readyAge ago; concurrent callers wait for one run. It returns the
// failed checks' errors by name.
func (s *Server) readiness(ctx context.Context) map[string]string {
	s.ready.Lock()
	defer s.ready.Unlock()
	if now := s.now(); !s.ready.at.IsZero() && now.Sub(s.ready.at) < readyAge && now.Sub(s.ready.at) >= 0 {
		return s.ready.failed
	}
	// Not the caller's context: a prober that hangs up must not make the
	// checks fail for everyone whom this answer serves.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	failed := map[string]string{}
	for _, ch := range s.deps.Ready {
		if err := ch.Check(ctx); err != nil {
			failed[ch.Name] = err.Error()
		}
	}
	s.ready.at, s.ready.failed = s.now(), failed
	return failed
}
