package ingest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/decap-ci/decap/internal/build"
)

// Who may do what, in one place:
//
//   - Mutations need the API token (Authorization: Bearer) or a UI session
//     with the X-Decap-CSRF header (requireToken), unless auth is off.
//   - Reads (every GET of /api/v1 and every UI page but the sign-in page)
//     need the same credential, without the CSRF header (requireRead,
//     Pages), unless auth is off or reads are public.
//   - /hooks/github has its own signature; /healthz, /readyz, /metrics,
//     the sign-in page, its session endpoints and the UI's static files are
//     public.
//   - A client that presents wrong credentials too often is refused for a
//     while (authThrottle); while auth is off or reads are public, a Host
//     that DNS rebinding could have sent is refused (checkHost).
//   - A mutation or sign-in a browser sends from a page of another origin
//     is refused whatever the auth (Server.crossSite): with auth off nothing else
//     would stop it, and a sign-in's wrong token would count against the
//     visitor's address.

// Sessions stores the UI's sessions (build.Sessions; see buildtest for the
// contract): Create fails with build.ErrConflict for a taken key, Get with
// build.ErrNotFound for an unknown or expired one.
type Sessions interface {
	Create(ctx context.Context, s build.Session) error
	Get(ctx context.Context, key string) (build.Session, error)
	Delete(ctx context.Context, key string) error
}

// Defaults of the failed-auth throttle (see authThrottle).
//
// 20 failures a minute leave room for a person's typos and a script's
// retries; a client past them waits 2 minutes, which slows guessing to
// about 14,000 tries a day per address (against 256-bit tokens and session
// IDs) while keeping short what a client behind the same NAT as an
// offender suffers.
const (
	DefaultAuthFailureLimit  = 20
	DefaultAuthFailureWindow = time.Minute
	DefaultAuthBlock         = 2 * time.Minute
	DefaultAuthClients       = 10000
)

// errBadCredential is a credential that was presented and is wrong (a
// token, a session): it counts against the client. A missing credential
// is errUnauthorized alone and does not count.
var errBadCredential = errors.New("bad credential")

// whereTheTokenIs tells a client that sent no token, or a wrong one, which
// token is meant and where a local run keeps it; never the token itself.
const whereTheTokenIs = "the token is the services' DECAP_API_TOKEN; make run keeps it in .decap/api-token"

// throttled refuses a client that failed to authenticate too often: 429
// with Retry-After.
func throttled(c echo.Context, wait time.Duration) error {
	c.Response().Header().Set("Retry-After", strconv.Itoa(retrySeconds(wait)))
	return echo.NewHTTPError(http.StatusTooManyRequests,
		fmt.Sprintf("too many failed authentication attempts from this address; try again in %d s", retrySeconds(wait)))
}

func retrySeconds(d time.Duration) int {
	return int((d + time.Second - 1) / time.Second)
}

// authenticate checks the credential of c's request and returns who it is
// (actorAPI or actorUI). An Authorization header, when present, is the
// only credential looked at; otherwise the session cookie. It answers
// errUnauthorized when there is none, an error wrapping errBadCredential
// (and counts the failure) when it is wrong, 429 while the client is
// blocked, and the store's error when sessions cannot be read.
// The token and the session ID never appear in what it returns or logs.
func (s *Server) authenticate(c echo.Context) (string, error) {
	req := c.Request()
	h := req.Header.Get(echo.HeaderAuthorization)
	ck, _ := req.Cookie(sessionCookie)
	if h == "" && (ck == nil || ck.Value == "") {
		return "", fmt.Errorf("%w: no credential: send the API token (Authorization: Bearer <token>; %s) or sign in at /ui/login", errUnauthorized, whereTheTokenIs)
	}
	client := clientKey(c)
	if wait := s.throttle.blocked(client); wait > 0 {
		return "", throttled(c, wait)
	}
	if h != "" {
		token, ok := strings.CutPrefix(h, "Bearer ")
		if !ok {
			s.throttle.failed(client, "api token")
			return "", fmt.Errorf("%w: %w: the Authorization header is not \"Bearer <API token>\"", errUnauthorized, errBadCredential)
		}
		if !s.validToken(token) {
			s.throttle.failed(client, "api token")
			return "", fmt.Errorf("%w: %w: the API token is wrong (%s)", errUnauthorized, errBadCredential, whereTheTokenIs)
		}
		return actorAPI, nil
	}
	ok, err := s.validSession(req.Context(), ck.Value)
	if err != nil {
		return "", err
	}
	if !ok {
		s.throttle.failed(client, "session")
		// The browser need not send it again.
		http.SetCookie(c.Response(), newSessionCookie(c, "", -1))
		return "", fmt.Errorf("%w: %w: the session is not valid any more (expired, signed out, or the API token changed); sign in again", errUnauthorized, errBadCredential)
	}
	return actorUI, nil
}

// requireRead guards reads: with auth on and reads not public, a request
// needs the API token or a session. No CSRF header is needed: a read
// changes nothing, and the session cookie is SameSite=Strict.
func (s *Server) requireRead(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		if s.cfg.AuthDisabled || s.cfg.ReadPublic {
			return next(c)
		}
		who, err := s.authenticate(c)
		if err != nil {
			return err
		}
		c.Set(actorKey, who)
		return next(c)
	}
}

// Pages guards the UI's pages as requireRead guards the API's reads, but
// sends a reader without a valid session to the sign-in page (302 to
// /ui/login?next=<this page>) instead of answering 401. Where reads are
// public it lets everyone through, and only notes a valid session (for
// SignedIn) without counting a stale one against the client.
func (s *Server) Pages(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		if s.cfg.AuthDisabled {
			return next(c)
		}
		if s.cfg.ReadPublic {
			if ck, err := c.Request().Cookie(sessionCookie); err == nil && ck.Value != "" {
				ok, err := s.validSession(c.Request().Context(), ck.Value)
				if err == nil && ok {
					c.Set(actorKey, actorUI)
				}
			}
			return next(c)
		}
		who, err := s.authenticate(c)
		if errors.Is(err, errUnauthorized) {
			return c.Redirect(http.StatusFound, "/ui/login?next="+url.QueryEscape(c.Request().URL.RequestURI()))
		}
		if err != nil {
			return err
		}
		c.Set(actorKey, who)
		return next(c)
	}
}

// SignedIn reports whether Pages found a valid session on c's request.
func (s *Server) SignedIn(c echo.Context) bool {
	who, _ := c.Get(actorKey).(string)
	return who == actorUI
}

// authThrottle counts failed authentications per client. A client with
// limit failures within window is refused (429 with Retry-After) for
// block, whatever it presents, valid credentials included: if a valid
// credential got through, a blocked client could go on guessing and tell
// a right guess by the answer. It remembers at most max clients: when
// full, clients whose window and block are over are forgotten first, then
// one that is not blocked, then any one (makeRoom). It logs a warning at most once per window per client, with the
// counts since the last line, and once when it blocks a client; never a
// credential.
type authThrottle struct {
	limit  int
	window time.Duration
	block  time.Duration
	max    int
	now    func() time.Time
	log    *slog.Logger

	mu      sync.Mutex
	clients map[string]*authClient
	// fullLogged is when a full table was last logged, sweptAt when it
	// was last swept (makeRoom).
	fullLogged, sweptAt time.Time
}

type authClient struct {
	windowStart  time.Time
	failures     int // in the current window
	blockedUntil time.Time
	loggedAt     time.Time
	// unlogged failures and refused requests since the last log line.
	unlogged, refused int
}

func newAuthThrottle(limit int, window, block time.Duration, max int, now func() time.Time, log *slog.Logger) *authThrottle {
	return &authThrottle{limit: limit, window: window, block: block, max: max, now: now, log: log,
		clients: map[string]*authClient{}}
}

// blocked returns how long client must still wait, 0 when it may try.
func (t *authThrottle) blocked(client string) time.Duration {
	t.mu.Lock()
	defer t.mu.Unlock()
	cl, ok := t.clients[client]
	if !ok {
		return 0
	}
	now := t.now()
	wait := cl.blockedUntil.Sub(now)
	if wait <= 0 {
		return 0
	}
	cl.refused++
	if now.Sub(cl.loggedAt) >= t.window {
		t.log.Warn("authentication attempts refused: client throttled", "client", client,
			"refused", cl.refused, "failures", cl.unlogged, "retry_after_s", retrySeconds(wait))
		cl.loggedAt, cl.refused, cl.unlogged = now, 0, 0
	}
	return wait
}

// failed counts a failed authentication of client; what names the
// credential ("api token", "session").
func (t *authThrottle) failed(client, what string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	cl, ok := t.clients[client]
	if !ok {
		t.makeRoom(now)
		cl = &authClient{windowStart: now}
		t.clients[client] = cl
	}
	if now.Sub(cl.windowStart) >= t.window {
		cl.windowStart, cl.failures = now, 0
	}
	cl.failures++
	cl.unlogged++
	if cl.failures >= t.limit {
		cl.blockedUntil = now.Add(t.block)
		cl.windowStart, cl.failures = now, 0
		t.log.Warn("authentication failures: client throttled", "client", client, "credential", what,
			"failures", cl.unlogged, "refused", cl.refused, "window", t.window, "blocked_for", t.block)
		cl.loggedAt, cl.unlogged, cl.refused = now, 0, 0
		return
	}
	if now.Sub(cl.loggedAt) >= t.window {
		t.log.Warn("authentication failed", "client", client, "credential", what,
			"failures", cl.unlogged, "refused", cl.refused)
		cl.loggedAt, cl.unlogged, cl.refused = now, 0, 0
	}
}

// sweepEvery bounds how often a full table is read through for clients
// whose window and block are over: a sweep reads every client under the
// lock every authentication takes, so a flood of new addresses must not
// pay one per failure.
const sweepEvery = time.Second

// evictLook is how many clients makeRoom looks at for one that is not
// blocked before it forgets a blocked one.
const evictLook = 16

// makeRoom forgets clients until one more fits: every client whose window
// and block are over (at most one sweep a sweepEvery), else one that is
// not blocked, else any one.
func (t *authThrottle) makeRoom(now time.Time) {
	if len(t.clients) < t.max {
		return
	}
	if now.Sub(t.sweptAt) >= sweepEvery || now.Before(t.sweptAt) {
		t.sweptAt = now
		for k, cl := range t.clients {
			if !cl.blockedUntil.After(now) && now.Sub(cl.windowStart) >= t.window {
				delete(t.clients, k)
			}
		}
		if len(t.clients) < t.max {
			return
		}
	}
	if now.Sub(t.fullLogged) >= t.window {
		t.log.Warn("failed-authentication table full: forgetting clients that are still counted", "clients", len(t.clients))
		t.fullLogged = now
	}
	victim, looked := "", 0
	for k, cl := range t.clients {
		if victim == "" || !cl.blockedUntil.After(now) {
			victim = k
		}
		if looked++; !cl.blockedUntil.After(now) || looked >= evictLook {
			break
		}
	}
	delete(t.clients, victim)
}

// checkHost refuses, while auth is off or reads are public, a request
// whose Host a DNS rebinding attack could have sent: a page of another
// site, whose name the attacker points at this server's address, makes the
// visitor's browser send its requests here under that name. Allowed are
// IP literals (a rebinding needs a name), "localhost" and names under
// .localhost (browsers resolve them to loopback themselves), and the host
// of DECAP_PUBLIC_URL. /healthz and /readyz stay open to every Host.
func (s *Server) checkHost(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		if !s.cfg.AuthDisabled && !s.cfg.ReadPublic {
			return next(c)
		}
		switch c.Request().URL.Path {
		case "/healthz", "/readyz":
			return next(c)
		}
		if !s.hostAllowed(c.Request().Host) {
			return echo.NewHTTPError(http.StatusForbidden,
				"Host "+strconv.Quote(truncate(c.Request().Host, 100))+" is refused while auth is off or reads are public "+
					"(protection against DNS rebinding); use an IP address, localhost, or the host of DECAP_PUBLIC_URL")
		}
		return next(c)
	}
}

// hostAllowed reports whether a Host header names this server in a way
// DNS rebinding cannot forge (see checkHost).
func (s *Server) hostAllowed(hostport string) bool {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.ToLower(strings.Trim(host, "[]")), ".")
	if host == "" {
		return false
	}
	if _, err := netip.ParseAddr(host); err == nil {
		return true
	}
	if host == "localhost" || strings.HasSuffix(host, ".localhost") {
		return true
	}
	return s.publicHost != "" && host == s.publicHost
}

// publicHostOf returns the lowercase host name of a public URL, "" when it
// has none.
func publicHostOf(publicURL string) string {
	u, err := url.Parse(publicURL)
	if err != nil {
		return ""
	}
	return strings.TrimSuffix(strings.ToLower(u.Hostname()), ".")
}

// withAuthDefaults fills in the zero settings of sessions and the
// failed-auth throttle.
func (cfg Config) withAuthDefaults() Config {
	if cfg.SessionTTL <= 0 {
		cfg.SessionTTL = DefaultSessionTTL
	}
	if cfg.AuthFailureLimit <= 0 {
		cfg.AuthFailureLimit = DefaultAuthFailureLimit
	}
	if cfg.AuthFailureWindow <= 0 {
		cfg.AuthFailureWindow = DefaultAuthFailureWindow
	}
	if cfg.AuthBlock <= 0 {
		cfg.AuthBlock = DefaultAuthBlock
	}
	if cfg.AuthClients <= 0 {
		cfg.AuthClients = DefaultAuthClients
	}
	return cfg
}

// untrustedContent marks an answer whose body a build wrote (its log, its
// artifacts) so that a browser never runs it: no type sniffing, and a
// sandbox without scripts, plugins, or same-origin access should it be
// rendered anyway; other sites may not embed it.
func untrustedContent(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		h := c.Response().Header()
		h.Set(echo.HeaderXContentTypeOptions, "nosniff")
		h.Set(echo.HeaderContentSecurityPolicy, "sandbox; default-src 'none'")
		h.Set("Cross-Origin-Resource-Policy", "same-origin")
		return next(c)
	}
}
