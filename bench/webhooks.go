package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"sync"
	"time"

	"github.com/decap-ci/decap/internal/build"
	"github.com/decap-ci/decap/internal/metrics"
	"github.com/decap-ci/decap/internal/webhooks"
)

// arrivals is a webhook receiver that notes when each event (or baseline
// request, by its X-Decap-Delivery) arrived.
type arrivals struct {
	mu   sync.Mutex
	at   map[string]time.Time
	wake chan struct{}
}

func (a *arrivals) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	_, _ = io.Copy(io.Discard, r.Body)
	now := time.Now()
	a.mu.Lock()
	if id := r.Header.Get(webhooks.HeaderDelivery); id != "" {
		if _, ok := a.at[id]; !ok {
			a.at[id] = now
		}
	}
	a.mu.Unlock()
	select {
	case a.wake <- struct{}{}:
	default:
	}
	w.WriteHeader(http.StatusNoContent)
}

// wait returns when id arrived, or an error after timeout.
func (a *arrivals) wait(ctx context.Context, id string, timeout time.Duration) (time.Time, error) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		a.mu.Lock()
		t, ok := a.at[id]
		a.mu.Unlock()
		if ok {
			return t, nil
		}
		select {
		case <-a.wake:
		case <-time.After(50 * time.Millisecond):
		case <-deadline.C:
			return time.Time{}, fmt.Errorf("event %s not received within %s", id, timeout)
		case <-ctx.Done():
			return time.Time{}, ctx.Err()
		}
	}
}

// benchWebhooks measures DESIGN.md's events target on the embedded
// backend: a record change written (Records.Save) → its event received by
// an outgoing webhook on loopback, through everything that ships: the
// outbox, the forwarder (Set.StartEvents), the SQLite stream, the
// deliverer's consumer group, store and worker, a signed HTTP POST. One
// change at a time. Baseline: a bare HTTP POST of an event's body to the
// same receiver. The deliverer is the one StartWebhooks runs, but with a
// policy that allows loopback over http (the bench's stack reads no
// DECAP_OUTGOING_WEBHOOKS_* settings).
func benchWebhooks(ctx context.Context, e *env) (result, error) {
	n := e.scale.WebhookN
	st, err := openStack(ctx, e, "reaper", "embedded", e.dir("webhooks"))
	if err != nil {
		return result{}, err
	}
	defer st.close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	rcv := &arrivals{at: map[string]time.Time{}, wake: make(chan struct{}, 1)}
	url, err := serve(ctx, rcv)
	if err != nil {
		return result{}, err
	}
	stopEvents := st.set.StartEvents(ctx, metrics.NewEvents(st.reg))
	defer stopEvents()
	d, err := webhooks.New(webhooks.Config{Policy: webhooks.Policy{AllowHTTP: true, Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}}},
		webhooks.Deps{Events: st.set.Events, Store: st.set.Webhooks, Observer: metrics.NewWebhooks(st.reg), Logger: st.log})
	if err != nil {
		return result{}, err
	}
	dctx, stopDeliverer := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = d.Run(dctx)
	}()
	defer func() {
		stopDeliverer()
		<-done
	}()
	sub := build.Subscription{ID: build.NewSubscriptionID(), URL: url + "/hook", Secret: "bench-webhook-secret-0123456789",
		CreatedAt: time.Now().UTC()}
	if err := st.set.Webhooks.CreateSubscription(ctx, sub); err != nil {
		return result{}, err
	}

	save := func(i int) (build.ID, time.Time, error) {
		now := time.Now().UTC()
		req := build.Request{V: build.MessageVersion, BuildID: build.NewID(now), Team: benchTeam, Project: benchProject,
			Ref: fmt.Sprintf("hook-%d", i), RefType: build.Branch, Trigger: build.TriggerPush, RequestedAt: now}
		rec := build.RecordFor(req)
		start := time.Now()
		return rec.BuildID, start, st.set.Records.Save(ctx, rec)
	}
	// Warm up until one change arrives: the consumer group starts at the
	// end of the stream when it first consumes.
	var warmed bool
	for i := 0; i < 60 && !warmed; i++ {
		id, _, err := save(-1 - i)
		if err != nil {
			return result{}, err
		}
		_, err = rcv.wait(ctx, build.EventID(id, 1), time.Second)
		warmed = err == nil
	}
	if !warmed {
		return result{}, errors.New("no event reached the webhook in a minute of warm-up")
	}

	var lat latencies
	lost := 0
	for i := range n {
		id, start, err := save(i)
		if err != nil {
			return result{}, err
		}
		at, err := rcv.wait(ctx, build.EventID(id, 1), 30*time.Second)
		if err != nil {
			lost++
			continue
		}
		lat = append(lat, at.Sub(start))
	}
	body := bytes.Repeat([]byte("x"), 1500) // about an event's size
	client := &http.Client{Timeout: 10 * time.Second}
	var base latencies
	for i := range n {
		id := fmt.Sprintf("baseline-%d", i)
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, url+"/hook", bytes.NewReader(body))
		if err != nil {
			return result{}, err
		}
		req.Header.Set(webhooks.HeaderDelivery, id)
		start := time.Now()
		resp, err := client.Do(req)
		if err != nil {
			return result{}, err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		at, err := rcv.wait(ctx, id, time.Second)
		if err != nil {
			return result{}, err
		}
		base = append(base, at.Sub(start))
	}
	note := ""
	if lost > 0 {
		note = fmt.Sprintf(", %d of %d not received", lost, n)
	}
	p99 := lat.quantile(0.99)
	return result{rows: []row{{
		what:     fmt.Sprintf("record change → outgoing webhook received, embedded, %d changes one at a time", n),
		figure:   fmt.Sprintf("p50 %s, p99 %s%s", ms(lat.quantile(0.5)), ms(p99), note),
		baseline: fmt.Sprintf("p50 %s, p99 %s (a bare POST to the same receiver)", ms(base.quantile(0.5)), ms(base.quantile(0.99))),
		ratio:    ratio(float64(p99), float64(base.quantile(0.99))) + " (p99)",
		target:   "p99 < 500 ms",
		holds:    check(lost == 0 && len(lat) > 0 && p99 < 500*time.Millisecond),
		command:  e.command("webhooks"),
	}}}, nil
}
