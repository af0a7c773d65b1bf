// Package webhooks delivers build events to outgoing webhooks (DESIGN.md
// "Build events", invariant 7; issue 14). A Deliverer consumes the event
// stream as the durable consumer group "webhooks": for each event it
// stores one pending delivery per matching subscription (build.Webhooks)
// and returns, so a slow or dead endpoint never holds the stream, and
// builds never wait for webhooks. A worker per subscription then POSTs
// that subscription's deliveries one at a time, in order (a build's
// events arrive in order), retrying each with a backoff, and
// dead-letters one after its last attempt with the reason. A delivery's
// claim in the store keeps two deliverers (two processes) from sending it
// at once, and lapses when a deliverer dies, so its successor sends it.
//
// A request carries the event in CloudEvents JSON structured mode
// (build.EncodeEvent) and the headers X-Decap-Event (its type),
// X-Decap-Delivery (its ID, the same on every attempt: receivers drop
// repeats by it) and X-Decap-Signature-256: "sha256=" and the hex
// HMAC-SHA256 of the body keyed by the subscription's secret (Sign).
package webhooks

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
	"unicode"

	"github.com/decap-ci/decap/internal/build"
)

// Group is the deliverer's consumer group on the event stream.
const Group = "webhooks"

// Headers of a delivery.
const (
	HeaderSignature = "X-Decap-Signature-256"
	HeaderEvent     = "X-Decap-Event"
	HeaderDelivery  = "X-Decap-Delivery"
)

// Defaults of Config.
const (
	DefaultAttempts   = 5
	DefaultRetryBase  = 8 * time.Second
	DefaultTimeout    = 10 * time.Second
	DefaultMaxPending = 10000
	DefaultRecheck    = 30 * time.Second
	// maxRetryWait caps one wait between attempts.
	maxRetryWait = 10 * time.Minute
	// maxBodyRead bounds what is read of an answer (and discarded, so
	// the connection may be used again); maxReasonBody what of it a
	// failure's reason quotes.
	maxBodyRead   = 64 << 10
	maxReasonBody = 120
)

// Sign returns the X-Decap-Signature-256 value of body under secret:
// "sha256=" and the hex HMAC-SHA256.
func Sign(secret string, body []byte) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

// Verify reports whether signature is body's Sign under secret, compared
// in constant time (what a receiver does).
func Verify(secret string, body []byte, signature string) bool {
	return hmac.Equal([]byte(Sign(secret, body)), []byte(signature))
}

// Config configures a Deliverer. Zero fields take the defaults.
type Config struct {
	// Attempts is how many times a delivery is tried before it is
	// dead-lettered (default 5).
	Attempts int
	// RetryBase is the wait after the first failed attempt, doubling
	// after each (with up to a fifth more at random): 8, 16, 32, 64 s by
	// default, about two minutes from the first attempt to the fifth.
	RetryBase time.Duration
	// Timeout bounds one attempt: connection, request and answer
	// (default 10 s).
	Timeout time.Duration
	// MaxPending bounds a subscription's pending deliveries; past it new
	// ones are dead-lettered ("queue full"), so a dead endpoint costs
	// bounded storage (default 10000).
	MaxPending int
	// Recheck is how often the subscriptions are listed again (new and
	// deleted ones; default 30 s) and how long an idle worker sleeps
	// without a wake-up.
	Recheck time.Duration
	// Policy says where deliveries may connect.
	Policy Policy
}

func (c *Config) defaults() {
	if c.Attempts <= 0 {
		c.Attempts = DefaultAttempts
	}
	if c.RetryBase <= 0 {
		c.RetryBase = DefaultRetryBase
	}
	if c.Timeout <= 0 {
		c.Timeout = DefaultTimeout
	}
	if c.MaxPending <= 0 {
		c.MaxPending = DefaultMaxPending
	}
	if c.Recheck <= 0 {
		c.Recheck = DefaultRecheck
	}
}

// Observer hears each attempt's outcome: "delivered", "retried" (failed,
// to be tried again) or "dead_lettered".
type Observer interface {
	WebhookDelivery(result string)
}

// Outcomes an Observer hears.
const (
	ResultDelivered    = "delivered"
	ResultRetried      = "retried"
	ResultDeadLettered = "dead_lettered"
)

// Deps are a Deliverer's collaborators.
type Deps struct {
	Events build.EventStream
	Store  build.Webhooks
	// Observer may be nil.
	Observer Observer
	Logger   *slog.Logger
	Now      func() time.Time
	// Transport, when set, replaces the policy's transport (tests that
	// reach a receiver the policy would refuse set Config.Policy.Allow
	// instead; this is for wrapping).
	Transport http.RoundTripper
}

// Deliverer delivers build events to the subscriptions' URLs.
type Deliverer struct {
	cfg    Config
	deps   Deps
	log    *slog.Logger
	client *http.Client

	mu      sync.Mutex
	workers map[string]*worker
	// runCtx is Run's: workers live as long as it, not as long as the
	// context of the event handler that started one.
	runCtx context.Context
}

type worker struct {
	sub    build.Subscription
	wake   chan struct{}
	cancel context.CancelFunc
	done   chan struct{}
}

// New returns a Deliverer.
func New(cfg Config, deps Deps) (*Deliverer, error) {
	if deps.Events == nil || deps.Store == nil {
		return nil, fmt.Errorf("%w: webhooks need an event stream and a store", build.ErrInvalid)
	}
	cfg.defaults()
	if deps.Logger == nil {
		deps.Logger = slog.Default()
	}
	if deps.Now == nil {
		deps.Now = time.Now
	}
	rt := deps.Transport
	if rt == nil {
		rt = &http.Transport{
			Proxy:                  nil, // never through a proxy: the policy checks the address dialled
			DialContext:            cfg.Policy.DialContext,
			ForceAttemptHTTP2:      true,
			TLSHandshakeTimeout:    cfg.Timeout,
			ResponseHeaderTimeout:  cfg.Timeout,
			MaxIdleConnsPerHost:    2,
			IdleConnTimeout:        90 * time.Second,
			MaxResponseHeaderBytes: 64 << 10,
		}
	}
	client := &http.Client{
		Transport: rt,
		Timeout:   cfg.Timeout,
		// A redirect is an answer like any other (not 2xx): following
		// it would reach a URL nobody checked.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return &Deliverer{cfg: cfg, deps: deps, log: deps.Logger.With("component", "webhooks"), client: client,
		workers: map[string]*worker{}}, nil
}

// Run consumes the event stream and delivers until ctx ends; then it
// stops its workers and returns an error wrapping ctx.Err().
func (d *Deliverer) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer func() {
		cancel()
		d.stopAll()
	}()
	d.mu.Lock()
	d.runCtx = ctx
	d.mu.Unlock()
	go d.reconcileLoop(ctx)
	return d.deps.Events.Consume(ctx, Group, d.handle)
}

// handle stores the event's deliveries and wakes their workers. It makes
// no network call: an error is the store's, and the stream retries.
func (d *Deliverer) handle(ctx context.Context, e build.Event) error {
	subs, err := d.deps.Store.Subscriptions(ctx)
	if err != nil {
		return fmt.Errorf("webhooks of event %s: %w", e.ID, err)
	}
	var ds []build.Delivery
	var body []byte
	for _, s := range subs {
		if !s.Matches(e) {
			continue
		}
		if body == nil {
			if body, err = build.EncodeEvent(e); err != nil {
				d.log.Error("drop an event that cannot be encoded", "event_id", e.ID, "err", err)
				return nil
			}
		}
		ds = append(ds, build.Delivery{Subscription: s.ID, EventID: e.ID, EventType: e.Type, BuildID: e.Subject, Body: body})
	}
	if len(ds) == 0 {
		return nil
	}
	if err := d.deps.Store.Enqueue(ctx, d.cfg.MaxPending, ds...); err != nil {
		return fmt.Errorf("enqueue webhooks of event %s: %w", e.ID, err)
	}
	for _, s := range subs {
		if s.Matches(e) {
			d.wake(s)
		}
	}
	return nil
}

// wake wakes sub's worker, starting it if there is none.
func (d *Deliverer) wake(sub build.Subscription) {
	d.mu.Lock()
	defer d.mu.Unlock()
	w, ok := d.workers[sub.ID]
	if !ok {
		if d.runCtx == nil || d.runCtx.Err() != nil {
			return
		}
		w = d.startLocked(d.runCtx, sub)
	}
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

func (d *Deliverer) startLocked(ctx context.Context, sub build.Subscription) *worker {
	wctx, cancel := context.WithCancel(ctx)
	w := &worker{sub: sub, wake: make(chan struct{}, 1), cancel: cancel, done: make(chan struct{})}
	d.workers[sub.ID] = w
	go func() {
		defer close(w.done)
		d.work(wctx, w)
	}()
	return w
}

// reconcileLoop keeps one worker per subscription, listing them every
// Recheck.
func (d *Deliverer) reconcileLoop(ctx context.Context) {
	t := time.NewTicker(d.cfg.Recheck)
	defer t.Stop()
	for {
		d.reconcile(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (d *Deliverer) reconcile(ctx context.Context) {
	subs, err := d.deps.Store.Subscriptions(ctx)
	if err != nil {
		if ctx.Err() == nil {
			d.log.Warn("list subscriptions", "err", err)
		}
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	present := map[string]bool{}
	for _, s := range subs {
		present[s.ID] = true
		if _, ok := d.workers[s.ID]; !ok {
			d.startLocked(ctx, s)
		}
	}
	for id, w := range d.workers {
		if !present[id] {
			w.cancel()
			delete(d.workers, id)
		}
	}
}

func (d *Deliverer) stopAll() {
	d.mu.Lock()
	ws := make([]*worker, 0, len(d.workers))
	for id, w := range d.workers {
		w.cancel()
		ws = append(ws, w)
		delete(d.workers, id)
	}
	d.mu.Unlock()
	for _, w := range ws {
		<-w.done
	}
}

// lease is how long a claim holds a delivery: an attempt's timeout and a
// margin for settling it.
func (d *Deliverer) lease() time.Duration { return d.cfg.Timeout + 30*time.Second }

// work sends sub's deliveries until ctx ends.
func (d *Deliverer) work(ctx context.Context, w *worker) {
	log := d.log.With("subscription", w.sub.ID)
	for ctx.Err() == nil {
		del, claimed, err := d.deps.Store.Claim(ctx, w.sub.ID, d.lease())
		var wait time.Duration
		switch {
		case errors.Is(err, build.ErrNotFound):
			wait = d.cfg.Recheck
		case err != nil:
			if ctx.Err() == nil {
				log.Warn("claim a delivery", "err", err)
			}
			wait = min(d.cfg.Recheck, 5*time.Second)
		case !claimed:
			wait = max(del.NextAttemptAt.Sub(d.deps.Now()), 10*time.Millisecond)
		default:
			d.deliver(ctx, log, w.sub, del)
			continue
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
		case <-w.wake:
		case <-t.C:
		}
		t.Stop()
	}
}

// deliver makes one attempt of del and settles it.
func (d *Deliverer) deliver(ctx context.Context, log *slog.Logger, sub build.Subscription, del build.Delivery) {
	err := d.attempt(ctx, sub, del)
	if ctx.Err() != nil {
		return // the claim lapses; whoever runs next tries again
	}
	del.Attempts++
	result := ResultDelivered
	switch {
	case err == nil:
		del.State, del.LastError = build.DeliveryDelivered, ""
	case errors.Is(err, ErrRefused) || del.Attempts >= d.cfg.Attempts:
		del.State, del.LastError, result = build.DeliveryDead, reason(err), ResultDeadLettered
	default:
		del.State, del.LastError, result = build.DeliveryPending, reason(err), ResultRetried
		del.NextAttemptAt = d.deps.Now().Add(d.backoff(del.Attempts))
	}
	if serr := d.deps.Store.Settle(ctx, del); serr != nil {
		if !errors.Is(serr, build.ErrNotFound) && ctx.Err() == nil {
			log.Warn("settle a delivery", "event_id", del.EventID, "err", serr)
		}
		return
	}
	if d.deps.Observer != nil {
		d.deps.Observer.WebhookDelivery(result)
	}
	switch result {
	case ResultRetried:
		log.Info("webhook delivery failed, will retry", "event_id", del.EventID, "build_id", del.BuildID,
			"attempt", del.Attempts, "reason", del.LastError, "retry_at", del.NextAttemptAt)
	case ResultDeadLettered:
		log.Warn("webhook delivery dead-lettered", "event_id", del.EventID, "build_id", del.BuildID,
			"attempts", del.Attempts, "reason", del.LastError)
	}
}

// backoff returns the wait after attempt n (1, 2, …) failed.
func (d *Deliverer) backoff(n int) time.Duration {
	wait := d.cfg.RetryBase
	for i := 1; i < n && wait < maxRetryWait; i++ {
		wait *= 2
	}
	wait = min(wait, maxRetryWait)
	return wait + rand.N(wait/5+1)
}

// attempt POSTs del to sub's URL: nil for a 2xx answer.
func (d *Deliverer) attempt(ctx context.Context, sub build.Subscription, del build.Delivery) error {
	u, err := url.Parse(sub.URL)
	if err != nil {
		return fmt.Errorf("%w: subscription URL: %v", ErrRefused, err)
	}
	if u.Scheme != "https" && !(u.Scheme == "http" && d.cfg.Policy.AllowHTTP) {
		return fmt.Errorf("%w: %s URLs are not allowed", ErrRefused, u.Scheme)
	}
	ctx, cancel := context.WithTimeout(ctx, d.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, sub.URL, bytes.NewReader(del.Body))
	if err != nil {
		return fmt.Errorf("%w: %v", ErrRefused, err)
	}
	req.Header.Set("Content-Type", build.EventContentType)
	req.Header.Set("User-Agent", "Decap-Webhooks/1")
	req.Header.Set(HeaderEvent, string(del.EventType))
	req.Header.Set(HeaderDelivery, del.EventID)
	req.Header.Set(HeaderSignature, Sign(sub.Secret, del.Body))
	resp, err := d.client.Do(req)
	if err != nil {
		// url.Error repeats the URL, which may carry a token of the
		// receiver's: keep only the cause.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return err
	}
	defer resp.Body.Close()
	head := make([]byte, maxReasonBody)
	n, _ := io.ReadFull(resp.Body, head)
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxBodyRead))
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return nil
	}
	msg := fmt.Sprintf("HTTP %d", resp.StatusCode)
	if text := printable(head[:n]); text != "" {
		msg += ": " + text
	}
	return errors.New(msg)
}

// printable returns b as one line of printable text, each run of
// spaces and other characters one space.
func printable(b []byte) string {
	return strings.Join(strings.Fields(strings.Map(func(r rune) rune {
		if unicode.IsPrint(r) {
			return r
		}
		return ' '
	}, strings.ToValidUTF8(string(b), ""))), " ")
}

func reason(err error) string { return build.BoundReason(err.Error()) }
