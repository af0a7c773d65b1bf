package main

import (
	"context"
	"fmt"
	"net/http"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/decap-ci/decap/internal/metrics"
)

// benchIngest measures signed push webhooks accepted per second by the real
// ingest.Server on the embedded backend, against the same echo server's
// route with an empty handler (same middleware, same connection handling),
// in alternating closed-loop rounds; then the latency of both at a fixed,
// moderate rate.
func benchIngest(ctx context.Context, e *env) (result, error) {
	s := e.scale
	counted := newCalls()
	st, err := openStack(ctx, e, "ingest", "embedded", e.dir("ingest"), counted)
	if err != nil {
		return result{}, err
	}
	defer st.close()
	srv, err := st.ingestServer()
	if err != nil {
		return result{}, err
	}
	srv.Echo().POST("/bench/empty", func(c echo.Context) error { return c.NoContent(http.StatusAccepted) })
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	base, err := serve(sctx, srv)
	if err != nil {
		return result{}, err
	}
	client := newClient(s.IngestClients + 8)
	// Every webhook is a push of its own (another after commit), signed
	// anew, as GitHub's are: the same body under another delivery ID is a
	// replay, which ingest answers without queueing anything. Both targets
	// pay the same client-side cost.
	target := func(path, tag string) func(c, i int) *http.Request {
		return func(c, i int) *http.Request {
			delivery := fmt.Sprintf("%s-%d-%d", tag, c, i)
			body := distinctPush(e.push, delivery)
			return webhook(base+path, body, sign(body), delivery)
		}
	}
	// Warm both up: connections, the SQLite file, the runtime.
	closedLoop(ctx, client, s.IngestClients, 300*time.Millisecond, http.StatusAccepted, target("/bench/empty", "warm-e"))
	closedLoop(ctx, client, s.IngestClients, 300*time.Millisecond, http.StatusAccepted, target("/hooks/github", "warm-r"))

	type round struct {
		rate, cores float64
		failed      int64
		firstErr    string
		// writes is the write transactions per accepted webhook.
		writes float64
		// lock is the share of the round SQLite's write lock was held,
		// and lockPer its time per accepted webhook.
		lock    float64
		lockPer time.Duration
	}
	// While webhooks come, ingest's event forwarder runs beside them, as
	// in cmd/ingest (Set.StartEvents: each record change's event goes
	// from the outbox to the stream, writes of its own); not while the
	// empty handler's requests come, which would pay for the backlog.
	evObs := metrics.NewEvents(st.reg)
	forwarding := func(path string) (stop func()) {
		if path == "/bench/empty" {
			return func() {}
		}
		return st.set.StartEvents(ctx, evObs)
	}
	measure := func(path, tag string) round {
		defer forwarding(path)()
		before, wBefore := counted.snapshot(), storeWrites(st)
		c0, w0 := cpuTime(), time.Now()
		ok, failed, elapsed, firstErr := closedLoop(ctx, client, s.IngestClients, s.IngestRound, http.StatusAccepted, target(path, tag))
		r := round{rate: float64(ok) / elapsed.Seconds(), cores: float64(cpuTime()-c0) / float64(time.Since(w0)), failed: failed, firstErr: firstErr}
		held := writesSince(storeWrites(st), wBefore).LockHeld
		r.lock = held.Seconds() / elapsed.Seconds()
		if ok > 0 {
			r.writes = float64(writeCalls(counted.since(before))) / float64(ok)
			r.lockPer = held / time.Duration(ok)
		}
		return r
	}
	var empty, real []round
	var top string
	var median func(rs []round, f func(round) float64) float64
	for r := range s.IngestRounds {
		empty = append(empty, measure("/bench/empty", fmt.Sprintf("e%d", r)))
		if r == 0 {
			stop := e.profile("ingest")
			real = append(real, measure("/hooks/github", fmt.Sprintf("r%d", r)))
			top, _ = stop()
		} else {
			real = append(real, measure("/hooks/github", fmt.Sprintf("r%d", r)))
		}
		if ctx.Err() != nil {
			return result{}, ctx.Err()
		}
	}
	median = func(rs []round, f func(round) float64) float64 {
		v := make([]float64, len(rs))
		for i, r := range rs {
			v[i] = f(r)
		}
		slices.Sort(v)
		return v[len(v)/2]
	}
	rate := func(r round) float64 { return r.rate }
	eRate, rRate := median(empty, rate), median(real, rate)

	// Fixed rate: an open loop, latency from each request's scheduled time.
	n := int(s.IngestRate * s.IngestRateFor.Seconds())
	fixed := func(path, tag string) (latencies, int) {
		defer forwarding(path)()
		got := openLoop(ctx, client, s.IngestRate, n, 256, func(i int) *http.Request {
			delivery := fmt.Sprintf("%s-%d", tag, i)
			body := distinctPush(e.push, delivery)
			return webhook(base+path, body, sign(body), delivery)
		})
		var l latencies
		bad := 0
		for _, g := range got {
			if g.err != nil || g.status != http.StatusAccepted {
				bad++
				continue
			}
			l = append(l, g.done.Sub(g.scheduled))
		}
		return l, bad
	}
	eLat, eBad := fixed("/bench/empty", "fe")
	rLat, rBad := fixed("/hooks/github", "fr")

	res := result{rows: []row{
		{
			what:     fmt.Sprintf("signed push webhooks accepted/s, %d clients, closed loop (median of %d rounds of %s)", s.IngestClients, s.IngestRounds, s.IngestRound),
			figure:   perSec(rRate, "webhooks"),
			baseline: perSec(eRate, "req") + " (same echo server, empty handler)",
			ratio:    ratio(rRate, eRate), target: "≥ 0.5", holds: check(rRate/eRate >= 0.5),
			command: e.command("ingest"),
		},
		{
			what:     fmt.Sprintf("webhook latency at %.0f/s, open loop, %d requests", s.IngestRate, n),
			figure:   fmt.Sprintf("p50 %s, p99 %s", ms(rLat.quantile(0.5)), ms(rLat.quantile(0.99))),
			baseline: fmt.Sprintf("p50 %s, p99 %s (empty handler)", ms(eLat.quantile(0.5)), ms(eLat.quantile(0.99))),
			ratio:    ratio(float64(rLat.quantile(0.99)), float64(eLat.quantile(0.99))) + " (p99)",
			command:  e.command("ingest"),
		},
	}}
	var b strings.Builder
	fmt.Fprintf(&b, "Closed-loop rounds (%d clients, %s each, alternating; the process's CPU use includes the load generator):\n\n", s.IngestClients, s.IngestRound)
	b.WriteString("| round | empty handler | CPU | ingest, embedded SQLite | CPU | ratio |\n|---|---|---|---|---|---|\n")
	for i := range empty {
		fmt.Fprintf(&b, "| %d | %s | %s | %s | %s | %s |\n", i+1, perSec(empty[i].rate, "req"), cores(empty[i].cores),
			perSec(real[i].rate, "webhooks"), cores(real[i].cores), ratio(real[i].rate, empty[i].rate))
	}
	for _, rs := range [][]round{empty, real} {
		for _, r := range rs {
			if r.failed > 0 {
				fmt.Fprintf(&b, "\n%d requests of a round failed; the first: %s\n", r.failed, r.firstErr)
				break
			}
		}
	}
	if eBad+rBad > 0 {
		fmt.Fprintf(&b, "\nAt the fixed rate, %d requests to the empty handler and %d webhooks failed or were refused.\n", eBad, rBad)
	}
	cpuPer := func(rs []round) time.Duration {
		return time.Duration(median(rs, func(r round) float64 { return r.cores / r.rate }) * float64(time.Second))
	}
	eCPU, rCPU := cpuPer(empty), cpuPer(real)
	fmt.Fprintf(&b, "\nCPU per request, the load generator's included: %s for the empty handler, %s per accepted webhook (%.1f×). "+
		"Were the webhook's only bound the machine's %d cores, the ratio could reach at most %.2f.\n",
		us(eCPU), us(rCPU), float64(rCPU)/float64(eCPU), runtime.NumCPU(), float64(eCPU)/float64(rCPU))
	w := median(real, func(r round) float64 { return r.writes })
	if w > 0 {
		fmt.Fprintf(&b, "\nEach accepted webhook made %.1f write calls to the store (on the embedded store one write: idempotency claims, queued record, publish, and the superseding of the branch's older waiting requests; elsewhere one call each): "+
			"%.0f a second. Each is a write transaction on SQLite's one write connection, made durable (synchronous=FULL) by "+
			"an fsync of the WAL, which the adapter shares among concurrent writes when it can; an fdatasync alone takes %s (p50) "+
			"on this file system.\n", w, rRate*w, ms(e.fsync.quantile(0.5)))
	}
	lock := median(real, func(r round) float64 { return r.lock })
	if per := time.Duration(median(real, func(r round) float64 { return float64(r.lockPer) })); lock > 0 && per > 0 {
		fmt.Fprintf(&b, "\nSQLite's write lock (sqlite.DB.WriteStats) was held %.0f%% of an ingest round, %s per accepted webhook "+
			"(medians of the rounds): one writer at a time, so at most %.0f webhooks a second while the lock is the bound.\n",
			100*lock, us(per), 1/per.Seconds())
	}
	res.details = append(res.details, b.String(),
		"CPU profile of ingest during the first round (server side; the load generator's goroutines left out):",
		codeBlock(top))
	return res, nil
}

// writeCalls counts the calls in m that write to the store.
func writeCalls(m map[string]int) int {
	n := 0
	for op, v := range m {
		switch op {
		case "queue.publish", "queue.delete", "queue.change_visibility", "queue.dead_letter",
			"locks.acquire", "locks.extend", "locks.release", "locks.force_release",
			"idempotency.claim", "records.save", "gate.set", "blobs.put",
			"intake.enqueue", "intake.enqueue_superseding", "launches.claim", "launches.started", "ends.ended", "records.end_waiting", "locks.await":
			n += v
		}
	}
	return n
}

// us formats a duration in microseconds.
func us(d time.Duration) string { return fmt.Sprintf("%.0f µs", float64(d)/float64(time.Microsecond)) }
