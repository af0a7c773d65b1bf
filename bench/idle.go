package main

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/decap-ci/decap/internal/build"
)

// idleLimit is the most queue calls a minute an idle dispatcher may make:
// DESIGN.md's "at most a few".
const idleLimit = 5

// benchIdle counts what idle services do over a window: the queue calls of
// an idle dispatcher, wired as cmd/dispatcher (metrics sampler included),
// on the embedded backend, and, when moto is there, of the real dispatcher
// binary on the AWS backend, counted at a proxy in front of moto; and the
// CPU each real service binary uses while idle. The baseline is a bare
// long-poll loop (Receive(10, 20s), nothing else) on an idle queue of the
// same backend, over the same window.
func benchIdle(ctx context.Context, e *env) (result, error) {
	window := e.scale.Idle
	ictx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()

	// The real binaries, embedded, for their CPU.
	in, err := e.installation("idle")
	if err != nil {
		return result{}, err
	}
	defer in.stop()
	ingestAddr, err := freeAddr()
	if err != nil {
		return result{}, err
	}
	var services []*service
	for _, kind := range []string{"ingest", "dispatcher", "reaper"} {
		sv, err := in.start(kind, ingestAddr)
		if err != nil {
			return result{}, err
		}
		services = append(services, sv)
	}

	// The in-process dispatcher, counted at its ports, and the bare loop.
	counted := newCalls()
	st, err := openStack(ctx, e, "dispatcher", "embedded", e.dir("idle-dispatcher"), counted)
	if err != nil {
		return result{}, err
	}
	defer st.close()
	d, err := st.dispatcher(newLaunchTimes(nil))
	if err != nil {
		return result{}, err
	}
	wg.Go(func() { d.Run(ictx) }) // with its sampler, as cmd/dispatcher
	bareCalls := newCalls()
	bare, err := openStack(ctx, e, "bare", "embedded", e.dir("idle-bare"), bareCalls)
	if err != nil {
		return result{}, err
	}
	defer bare.close()
	wg.Go(func() { longPoll(ictx, bare.set.Queue) })

	// On AWS: the real dispatcher binary through a counting proxy, and a
	// bare loop straight to the endpoint.
	var (
		prox     *countingProxy
		awsDis   *service
		awsBare  *calls
		awsInst  *installation
		awsError error
	)
	if w, err := e.world(ctx); err != nil {
		awsError = err
	} else if w != nil {
		prox, err = newCountingProxy(ictx, w.endpoint)
		if err != nil {
			return result{}, err
		}
		awsInst, err = e.installation("idle-aws", "DECAP_BACKEND=aws", "DECAP_PREFIX="+w.prefix,
			"AWS_ENDPOINT_URL="+prox.url, "AWS_ACCESS_KEY_ID=test", "AWS_SECRET_ACCESS_KEY=test",
			"AWS_REGION="+or(os.Getenv("AWS_REGION"), "us-east-1"))
		if err != nil {
			return result{}, err
		}
		defer awsInst.stop()
		addr, err := freeAddr()
		if err != nil {
			return result{}, err
		}
		if awsDis, err = awsInst.start("dispatcher", addr); err != nil {
			return result{}, err
		}
		awsBare = newCalls()
		ab, err := openStack(ctx, e, "bare", "aws", e.dir("idle-aws-bare"), awsBare)
		if err != nil {
			return result{}, err
		}
		defer ab.close()
		wg.Go(func() { longPoll(ictx, ab.set.Queue) })
	}

	// Settle, then count over the window.
	time.Sleep(3 * time.Second)
	c0, b0 := counted.snapshot(), bareCalls.snapshot()
	var p0, ab0 map[string]int
	if prox != nil {
		p0, ab0 = prox.calls.snapshot(), awsBare.snapshot()
	}
	cpu0 := map[string]time.Duration{}
	all := services
	if awsDis != nil {
		all = append(all, awsDis)
	}
	for _, sv := range all {
		cpu0[sv.kind+sv.addr], _ = procCPU(sv.cmd.Process.Pid)
	}
	start := time.Now()
	select {
	case <-time.After(window):
	case <-ctx.Done():
		return result{}, ctx.Err()
	}
	elapsed := time.Since(start)
	perMin := func(n int) float64 { return float64(n) / elapsed.Minutes() }
	cpu := map[string]time.Duration{}
	for _, sv := range all {
		c, _ := procCPU(sv.cmd.Process.Pid)
		cpu[sv.kind+sv.addr] = c - cpu0[sv.kind+sv.addr]
	}
	got, gotBare := counted.since(c0), bareCalls.since(b0)

	extrapolated := ""
	if elapsed < time.Minute {
		extrapolated = fmt.Sprintf(", extrapolated from %s", elapsed.Round(time.Second))
	}
	q, qb := sum(got, "queue."), sum(gotBare, "queue.")
	res := result{rows: []row{{
		what:     "idle dispatcher, embedded: queue calls per minute (port calls; in-process wiring of cmd/dispatcher)" + extrapolated,
		figure:   fmt.Sprintf("%.1f/min (%s)", perMin(q), format(only(got, "queue."))),
		baseline: fmt.Sprintf("%.1f/min (bare long-poll loop)", perMin(qb)),
		ratio:    ratio(float64(q), float64(qb)),
		target:   fmt.Sprintf("≤ %d/min (\"a few\")", idleLimit), holds: check(perMin(q) <= idleLimit),
		command: e.command("idle"),
	}}}
	var b strings.Builder
	fmt.Fprintf(&b, "Counted over %s after 3 s of settling. The embedded dispatcher's other calls: %s. Inside each Receive the SQLite "+
		"queue also looks at the database again every %s while nobody wakes it (sqlite.DefaultRecheckInterval): up to %.0f "+
		"such looks a minute, which no port call shows.\n\n", elapsed.Round(time.Second), format(without(got, "queue.")), "5s", 60/5.0)
	b.WriteString("CPU used while idle by the real binaries (embedded default, local executor), from /proc/<pid>/stat:\n\n")
	b.WriteString("| service | CPU in the window | per minute | share of one core |\n|---|---|---|---|\n")
	worst := time.Duration(0)
	for _, sv := range services {
		c := cpu[sv.kind+sv.addr]
		pm := time.Duration(float64(c) / elapsed.Minutes())
		worst = max(worst, pm)
		fmt.Fprintf(&b, "| %s | %s | %s | %.2f%% |\n", sv.kind, c, pm.Round(time.Millisecond), 100*float64(c)/float64(elapsed))
	}
	res.rows = append(res.rows, row{
		what:   "idle CPU of the real binaries (ingest, dispatcher, reaper; embedded)" + extrapolated,
		figure: fmt.Sprintf("at most %s CPU/min per service", worst.Round(time.Millisecond)),
		target: "no busy polling (< 1% of a core)", holds: check(worst < 600*time.Millisecond),
		command: e.command("idle"),
	})
	if awsDis != nil {
		pg, abg := prox.calls.since(p0), awsBare.since(ab0)
		sqs, dyn := only(pg, "AmazonSQS."), only(pg, "DynamoDB_")
		n, nb := sum(sqs, ""), sum(abg, "queue.")
		res.rows = append(res.rows, row{
			what:     "idle dispatcher on moto: SQS calls per minute (the real binary, counted at a proxy)" + extrapolated,
			figure:   fmt.Sprintf("%.1f/min (%s)", perMin(n), format(sqs)),
			baseline: fmt.Sprintf("%.1f/min (bare long-poll loop)", perMin(nb)),
			ratio:    ratio(float64(n), float64(nb)),
			target:   fmt.Sprintf("≤ %d/min (\"a few\")", idleLimit), holds: check(perMin(n) <= idleLimit),
			command: e.command("idle"),
		})
		c := cpu[awsDis.kind+awsDis.addr]
		fmt.Fprintf(&b, "\nOn moto the idle dispatcher binary also made %s DynamoDB calls in the window (%s), and used %s of CPU.\n",
			fmt.Sprint(sum(dyn, "")), format(dyn), c)
	} else if awsError != nil {
		fmt.Fprintf(&b, "\nThe AWS half was not run: %v.\n", awsError)
	} else {
		b.WriteString("\nThe AWS half was not run: no AWS_ENDPOINT_URL (run under scripts/with-moto.sh).\n")
	}
	res.details = append(res.details, b.String())
	return res, nil
}

// longPoll receives from an idle queue with SQS's longest long poll until
// ctx ends: the least a consumer can do.
func longPoll(ctx context.Context, q build.Queue) {
	for ctx.Err() == nil {
		msgs, err := q.Receive(ctx, 10, 20*time.Second)
		if err != nil && ctx.Err() == nil {
			time.Sleep(time.Second)
		}
		for _, m := range msgs {
			_ = q.Delete(ctx, m.Receipt)
		}
	}
}

// only returns the counts whose name starts with prefix, without it.
func only(m map[string]int, prefix string) map[string]int {
	out := map[string]int{}
	for k, v := range m {
		if rest, ok := strings.CutPrefix(k, prefix); ok {
			out[rest] = v
		}
	}
	return out
}

// without returns the counts whose name does not start with prefix.
func without(m map[string]int, prefix string) map[string]int {
	out := map[string]int{}
	for k, v := range m {
		if !strings.HasPrefix(k, prefix) {
			out[k] = v
		}
	}
	return out
}

func or(v, def string) string {
	if v == "" {
		return def
	}
	return v
}

// countingProxy forwards to an AWS endpoint and counts the API calls it
// forwards by X-Amz-Target ("AmazonSQS.ReceiveMessage"), or by method and
// path for the protocols without one.
type countingProxy struct {
	url   string
	calls *calls
}

func newCountingProxy(ctx context.Context, endpoint string) (*countingProxy, error) {
	target, err := url.Parse(endpoint)
	if err != nil {
		return nil, err
	}
	p := &countingProxy{calls: newCalls()}
	rp := httputil.NewSingleHostReverseProxy(target)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		op := r.Header.Get("X-Amz-Target")
		if op == "" {
			op = r.Method + " " + r.URL.Path
		}
		p.calls.inc(op)
		rp.ServeHTTP(w, r)
	})
	if p.url, err = serve(ctx, h); err != nil {
		return nil, err
	}
	return p, nil
}
