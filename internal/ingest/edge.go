package ingest

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/decap-ci/decap/internal/build"
)

// The edge: what any request, authenticated or not, may cost ingest. The
// server's own timeouts (health.Timeouts) bound how long a request may take
// to arrive and its answer to be written; here, per route, how large a body
// may be, how many bytes of bodies are read at once (in all and per
// client), and how many log follows are held open. Every refusal is a 4xx,
// never logged as a failure (a flood of refusals must not become a flood
// of error lines), counted by EdgeObserver.Rejected.

// Limits bound the memory and connections requests can hold. Zero fields
// take their defaults.
type Limits struct {
	// SmallBodyBytes bounds the body of every route but GitHub's webhooks
	// (Config.MaxBodyBytes bounds those); default 64 KiB. Larger: 413.
	SmallBodyBytes int64
	// BodyBytes bounds the bytes of request bodies being read or held by
	// handlers at once, by all clients together (default 16 MiB), and
	// ClientBodyBytes those of one client (default 10 MiB, at least
	// Config.MaxBodyBytes). A body is charged its declared length (the
	// route's limit when it declares none), and at least 4 KiB. Beyond
	// either: 429 with Retry-After, before any of the body is read.
	BodyBytes, ClientBodyBytes int64
	// Followers bounds the log streams (GET .../log?follow=1) open at once
	// (default 256), and ClientFollowers those of one client (default 8);
	// the same limits bound the event streams (GET /api/v1/events), apart.
	// Beyond either: 429 with Retry-After.
	Followers, ClientFollowers int
	// FollowFor bounds one log stream or event stream (default 30 min): it
	// then ends, and the client reconnects for the rest (the UI does). A
	// build may stay queued for a day.
	FollowFor time.Duration
	// StreamWriteTimeout bounds the writing of each chunk of a streamed
	// answer (log follows, log and artifact downloads), which the server's
	// write timeout would otherwise cut off; default 60 s.
	StreamWriteTimeout time.Duration
	// TrustedProxies are the networks of the proxies (load balancers) in
	// front of ingest whose X-Forwarded-For is believed: a request's client
	// is then the nearest address in that header that is not theirs. Empty:
	// the client is the connection's peer, and X-Forwarded-For is ignored.
	TrustedProxies []netip.Prefix
}

// Defaults of Limits.
const (
	defaultSmallBodyBytes  = 64 << 10
	defaultBodyBytes       = 16 << 20
	defaultClientBodyBytes = 10 << 20
	defaultFollowers       = 256
	defaultClientFollowers = 8
	defaultFollowFor       = 30 * time.Minute
	defaultStreamWrite     = 60 * time.Second
)

// minBodyCharge is the least a body is charged: what a connection holds
// anyway (net/http's read buffer). It bounds how many bodies, and so how
// many clients, the body budget can hold at once.
const minBodyCharge = 4 << 10

// retryAfter is the Retry-After of a refusal, in seconds: the server's
// read timeout frees a slow body's budget within 30 s, most sooner.
const retryAfter = 5

// orDefaults returns l with its zero fields set; hookBytes is the webhook
// route's body limit, which one client must be able to send.
func (l Limits) orDefaults(hookBytes int64) Limits {
	if l.SmallBodyBytes <= 0 {
		l.SmallBodyBytes = defaultSmallBodyBytes
	}
	if l.ClientBodyBytes <= 0 {
		l.ClientBodyBytes = defaultClientBodyBytes
	}
	l.ClientBodyBytes = max(l.ClientBodyBytes, hookBytes, l.SmallBodyBytes)
	if l.BodyBytes <= 0 {
		l.BodyBytes = defaultBodyBytes
	}
	l.BodyBytes = max(l.BodyBytes, l.ClientBodyBytes)
	if l.Followers <= 0 {
		l.Followers = defaultFollowers
	}
	if l.ClientFollowers <= 0 {
		l.ClientFollowers = defaultClientFollowers
	}
	l.ClientFollowers = min(l.ClientFollowers, l.Followers)
	if l.FollowFor <= 0 {
		l.FollowFor = defaultFollowFor
	}
	if l.StreamWriteTimeout <= 0 {
		l.StreamWriteTimeout = defaultStreamWrite
	}
	return l
}

// EdgeObserver hears what the edge refuses and holds. Its methods are
// called on the request path: they must be cheap, must not block, and must
// be safe for concurrent use.
type EdgeObserver interface {
	// Rejected hears of a request refused or cut off to protect the
	// server; reason is one of the Reject* constants.
	Rejected(reason string)
	// Followers hears the number of open log follows change by delta.
	Followers(delta int)
	// FollowPolled hears of one read of a followed build's record, which
	// all of the build's followers share.
	FollowPolled()
	// EventClients hears the number of open event streams (GET
	// /api/v1/events) change by delta.
	EventClients(delta int)
}

// Reasons of a refusal, as EdgeObserver.Rejected hears them.
const (
	RejectBodyTooLarge   = "body_too_large"   // 413: over the route's limit
	RejectBodyTimeout    = "body_timeout"     // 408: the body did not arrive within the read timeout
	RejectBodyClient     = "body_client"      // 429: the client's share of the body budget is taken
	RejectBodyServer     = "body_server"      // 429: the whole body budget is taken
	RejectFollowerClient = "followers_client" // 429: the client holds its share of log follows
	RejectFollowerServer = "followers_server" // 429: every log follow is taken
	RejectEventsClient   = "events_client"    // 429: the client holds its share of event streams
	RejectEventsServer   = "events_server"    // 429: every event stream is taken
	RejectUnsigned       = "unsigned"         // 401 before the body is read: no X-Hub-Signature-256
)

// RejectReasons returns every reason, for metrics to start at zero.
func RejectReasons() []string {
	return []string{RejectBodyTooLarge, RejectBodyTimeout, RejectBodyClient, RejectBodyServer,
		RejectFollowerClient, RejectFollowerServer, RejectEventsClient, RejectEventsServer, RejectUnsigned}
}

func (nopObserver) Rejected(string)  {}
func (nopObserver) Followers(int)    {}
func (nopObserver) FollowPolled()    {}
func (nopObserver) EventClients(int) {}

// edge holds the server's shared budgets.
type edge struct {
	limits    Limits
	bodies    *limiter
	followers *limiter
	follows   *followHub
	// eventStreams bounds the event streams as followers does log
	// follows, with the same limits; events is their shared tail.
	eventStreams *limiter
	events       *eventHub
}

func newEdge(l Limits, records Records, poll time.Duration, obs EdgeObserver, tail EventTail) edge {
	return edge{
		limits:       l,
		bodies:       newLimiter(l.BodyBytes, l.ClientBodyBytes),
		followers:    newLimiter(int64(l.Followers), int64(l.ClientFollowers)),
		follows:      newFollowHub(records, poll, obs),
		eventStreams: newLimiter(int64(l.Followers), int64(l.ClientFollowers)),
		events:       newEventHub(tail),
	}
}

// ipExtractor returns how echo finds a request's client address: the
// connection's peer, or with trusted proxies the nearest address in
// X-Forwarded-For that is not one of theirs (echo trusts loopback and
// private networks by default; here only what is configured).
func ipExtractor(trusted []netip.Prefix) echo.IPExtractor {
	if len(trusted) == 0 {
		return echo.ExtractIPDirect()
	}
	opts := []echo.TrustOption{echo.TrustLoopback(false), echo.TrustLinkLocal(false), echo.TrustPrivateNet(false)}
	return echo.ExtractIPFromXFFHeader(append(opts, trustRanges(trusted)...)...)
}

// schemeExtractor returns how echo tells a request that came over TLS
// (the session cookie's Secure): TLS on the connection, or X-Forwarded-Proto
// from a loopback or private-network peer, as echo's default, or from one
// of the trusted proxies, which may be on public addresses (a CDN).
func schemeExtractor(trusted []netip.Prefix) echo.SchemeExtractor {
	return echo.ExtractSchemeFromHeaders(trustRanges(trusted)...)
}

// trustRanges returns echo's options that trust the networks of trusted.
func trustRanges(trusted []netip.Prefix) []echo.TrustOption {
	var opts []echo.TrustOption
	for _, p := range trusted {
		p = p.Masked()
		opts = append(opts, echo.TrustIPRange(&net.IPNet{
			IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen()),
		}))
	}
	return opts
}

// clientKey names the client of a request for the per-client limits: its
// IPv4 address, or the /64 network of its IPv6 address (a host is usually
// given a whole /64, so its single addresses cost it nothing); "unknown"
// when there is no address to read.
func clientKey(c echo.Context) string {
	a, err := netip.ParseAddr(c.RealIP())
	if err != nil {
		return "unknown"
	}
	a = a.Unmap().WithZone("")
	if a.Is4() {
		return a.String()
	}
	p, _ := a.Prefix(64)
	return p.String()
}

// limiter shares a capacity among clients: at most total units held at
// once, by all clients together, and at most perClient by one. Its map
// holds only the clients that hold units now, so it has at most as many
// entries as units can be held at once: a flood from many addresses
// cannot grow it past the budget it is refused by.
type limiter struct {
	total, perClient int64

	mu       sync.Mutex
	held     int64
	byClient map[string]int64
}

// Why a limiter refuses.
var (
	errClientShare = errors.New("the client holds its share")
	errAllTaken    = errors.New("the whole capacity is held")
)

func newLimiter(total, perClient int64) *limiter {
	return &limiter{total: total, perClient: perClient, byClient: map[string]int64{}}
}

// acquire takes n units for client, or refuses with errClientShare or
// errAllTaken. release gives them back; calling it again does nothing.
func (l *limiter) acquire(client string, n int64) (release func(), err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.byClient[client]+n > l.perClient {
		return nil, errClientShare
	}
	if l.held+n > l.total {
		return nil, errAllTaken
	}
	l.held += n
	l.byClient[client] += n
	var once sync.Once
	return func() { once.Do(func() { l.release(client, n) }) }, nil
}

func (l *limiter) release(client string, n int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.held -= n
	if l.byClient[client] -= n; l.byClient[client] <= 0 {
		delete(l.byClient, client)
	}
}

// inUse returns the units held and the clients holding them.
func (l *limiter) inUse() (held int64, clients int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.held, len(l.byClient)
}

// tooMany is the answer to a request a limiter refused: 429 with
// Retry-After, whether the client's share or the whole capacity is taken
// (a 5xx would count as a failure of the server, in its logs and its
// error rate, for what is a flood of requests).
func (s *Server) tooMany(c echo.Context, err error, what, clientReason, serverReason string) error {
	c.Response().Header().Set("Retry-After", strconv.Itoa(retryAfter))
	if errors.Is(err, errClientShare) {
		s.obs.Rejected(clientReason)
		return echo.NewHTTPError(http.StatusTooManyRequests,
			fmt.Sprintf("too many %s from your address at once; retry in %d s", what, retryAfter))
	}
	s.obs.Rejected(serverReason)
	return echo.NewHTTPError(http.StatusTooManyRequests,
		fmt.Sprintf("the server holds as many %s as it can; retry in %d s", what, retryAfter))
}

// Keys of what limitBody hands readBody in the echo context.
const (
	bodyLimitKey   = "decap.body_limit"
	bodyReleaseKey = "decap.body_release"
)

// bodyLimit returns the body limit of c's route: large for GitHub's
// webhooks (pushes to projects and to the build-scripts repository, whose
// payloads list commits and files), small for everything else.
func (s *Server) bodyLimit(c echo.Context) int64 {
	switch c.Path() {
	case "/hooks/github", "/hooks/buildscripts":
		return s.cfg.MaxBodyBytes
	case secretsRoute:
		return build.MaxSecretSize // a secret's value, as it is
	}
	return s.edge.limits.SmallBodyBytes
}

// limitBody answers 413 at once for a declared length over the route's
// limit, cuts off bodies that grow past it, and gives back the body budget
// readBody took once the request is answered.
func (s *Server) limitBody(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		req := c.Request()
		limit := s.bodyLimit(c)
		if req.ContentLength > limit {
			s.obs.Rejected(RejectBodyTooLarge)
			return echo.NewHTTPError(http.StatusRequestEntityTooLarge,
				fmt.Sprintf("request body is larger than %d bytes", limit))
		}
		req.Body = http.MaxBytesReader(c.Response(), req.Body, limit)
		c.Set(bodyLimitKey, limit)
		if req.ContentLength != 0 {
			// Until readBody has the body, an answer closes the
			// connection: otherwise net/http reads, and waits for, up to
			// 256 KiB of a body the handler refused before it answers.
			c.Response().Header().Set(echo.HeaderConnection, "close")
		}
		defer func() {
			// Also when the handler panics: a budget kept would be kept
			// for ever. A release given back already does nothing.
			if release, ok := c.Get(bodyReleaseKey).(func()); ok {
				release()
			}
		}()
		err := next(c)
		if release, ok := c.Get(bodyReleaseKey).(func()); ok {
			// The answer is written while the body is still counted.
			if err != nil {
				c.Error(err)
				err = nil
			}
			release()
		}
		return err
	}
}

// readBody reads the whole (limited) body into memory the body budget
// grants it first: 429 when it does not, 413 when the body overruns its
// limit, 408 when it does not arrive within the server's read timeout.
func (s *Server) readBody(c echo.Context) ([]byte, error) {
	req := c.Request()
	limit, ok := c.Get(bodyLimitKey).(int64)
	if !ok {
		limit = s.bodyLimit(c)
	}
	if req.ContentLength == 0 {
		return nil, nil
	}
	n := req.ContentLength
	if n < 0 {
		n = limit // chunked: it may take up to the limit
	}
	release, err := s.edge.bodies.acquire(clientKey(c), max(n, minBodyCharge))
	if err != nil {
		return nil, s.tooMany(c, err, "request bodies", RejectBodyClient, RejectBodyServer)
	}
	var body []byte
	if req.ContentLength > 0 {
		// The declared length, read into a buffer of that size: no
		// garbage from growing one.
		body = make([]byte, n)
		_, err = io.ReadFull(req.Body, body)
	} else {
		body, err = io.ReadAll(req.Body)
	}
	if prev, ok := c.Get(bodyReleaseKey).(func()); ok {
		this := release // a handler that reads twice holds both until it is answered
		release = func() {
			prev()
			this()
		}
	}
	c.Set(bodyReleaseKey, release)
	if err != nil {
		var tooLarge *http.MaxBytesError
		switch {
		case errors.As(err, &tooLarge):
			s.obs.Rejected(RejectBodyTooLarge)
			return nil, echo.NewHTTPError(http.StatusRequestEntityTooLarge,
				fmt.Sprintf("request body is larger than %d bytes", limit))
		case errors.Is(err, os.ErrDeadlineExceeded):
			s.obs.Rejected(RejectBodyTimeout)
			c.Response().Header().Set(echo.HeaderConnection, "close")
			return nil, echo.NewHTTPError(http.StatusRequestTimeout, "the request body did not arrive in time")
		}
		return nil, echo.NewHTTPError(http.StatusBadRequest, "read request body: "+err.Error())
	}
	c.Response().Header().Del(echo.HeaderConnection) // read: the connection may serve another request
	return body, nil
}
