package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// benchMemory measures each service's peak resident set (VmHWM) with a deep
// queue: the real binaries on the embedded default, the dispatcher paused
// through the API while MemN signed webhooks over MemKeys lock keys are
// queued through ingest; the queue listed through the API and the UI while
// it is deep; then the dispatcher resumed for MemRun (cap 4, builds that
// exit at once, the reaper recording them) with the queue still deep.
func benchMemory(ctx context.Context, e *env) (result, error) {
	s := e.scale
	// gctrace: every GC prints the Go heap's size to the service's log.
	in, err := e.installation("memory", "GODEBUG=gctrace=1")
	if err != nil {
		return result{}, err
	}
	defer in.stop()
	ingestAddr, err := freeAddr()
	if err != nil {
		return result{}, err
	}
	base := "http://" + ingestAddr
	ing, err := in.start("ingest", ingestAddr)
	if err != nil {
		return result{}, err
	}
	client := newClient(16)
	if err := apiCall(client, http.MethodPost, base+"/api/v1/dispatch/pause", `{"reason":"bench: a deep queue"}`); err != nil {
		return result{}, err
	}
	dis, err := in.start("dispatcher", ingestAddr)
	if err != nil {
		return result{}, err
	}
	rp, err := in.start("reaper", ingestAddr)
	if err != nil {
		return result{}, err
	}
	services := []*service{ing, dis, rp}
	time.Sleep(time.Second)
	startRSS := map[string]int64{}
	for _, sv := range services {
		_, rss, err := procMem(sv.cmd.Process.Pid)
		if err != nil {
			return result{}, err
		}
		startRSS[sv.kind] = rss
	}

	// Queue MemN webhooks through ingest, 8 clients.
	keys := min(s.MemKeys, s.MemN)
	bodies := make([][]byte, keys)
	for k := range keys {
		bodies[k] = e.pushFor(fmt.Sprintf("mem-%04d", k))
	}
	var next, accepted atomic.Int64
	var firstErr atomic.Value
	t0 := time.Now()
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for ctx.Err() == nil {
				i := int(next.Add(1)) - 1
				if i >= s.MemN {
					return
				}
				// Each webhook a push of its own: the same body again
				// would be a replay, which queues nothing.
				delivery := fmt.Sprintf("mem-%d-%d", t0.UnixNano(), i)
				body := distinctPush(bodies[i%keys], delivery)
				a := do(client, webhook(base+"/hooks/github", body, sign(body), delivery))
				if a.err != nil || a.status != http.StatusAccepted {
					firstErr.CompareAndSwap(nil, fmt.Sprintf("status %d, %v: %.200s", a.status, a.err, a.body))
					continue
				}
				accepted.Add(1)
			}
		})
	}
	wg.Wait()
	queueTime := time.Since(t0)
	if ctx.Err() != nil {
		return result{}, ctx.Err()
	}
	hwmOf := func() map[string]int64 {
		m := map[string]int64{}
		for _, sv := range services {
			m[sv.kind], _, _ = procMem(sv.cmd.Process.Pid)
		}
		return m
	}
	queuedHWM := hwmOf()

	// Read the deep queue as operators would.
	t1 := time.Now()
	qa := do(client, authorized(mustRequest(http.MethodGet, base+"/api/v1/queue", nil)))
	queueList := time.Since(t1)
	var q struct {
		Stats        struct{ Visible, InFlight int }
		Waiting      []json.RawMessage
		WaitingTotal int
	}
	if qa.err != nil || qa.status != http.StatusOK || json.Unmarshal(qa.body, &q) != nil {
		return result{}, fmt.Errorf("GET /api/v1/queue: %d %v %.200s", qa.status, qa.err, qa.body)
	}
	listedHWM := hwmOf()
	t2 := time.Now()
	ua := do(client, authorized(mustRequest(http.MethodGet, base+"/", nil)))
	uiTime := time.Since(t2)
	if ua.err != nil || ua.status != http.StatusOK {
		return result{}, fmt.Errorf("GET /: %d %v", ua.status, ua.err)
	}
	uiHWM := hwmOf()

	// Let the dispatcher work the deep queue.
	if err := apiCall(client, http.MethodPost, base+"/api/v1/dispatch/resume", ""); err != nil {
		return result{}, err
	}
	select {
	case <-time.After(s.MemRun):
	case <-ctx.Done():
		return result{}, ctx.Err()
	}
	peak, now := map[string]int64{}, map[string]map[string]int64{}
	for _, sv := range services {
		select {
		case <-sv.done:
			return result{}, fmt.Errorf("%s exited during the run; log:\n%s", sv.kind, tail(sv.log, 2000))
		default:
		}
		st, err := procStatus(sv.cmd.Process.Pid)
		if err != nil {
			return result{}, err
		}
		peak[sv.kind], now[sv.kind] = st["VmHWM"], st
	}
	finished := metricSum(client, "http://"+rp.addr+"/metrics", "decap_builds_finished_total")
	decided := metricSum(client, "http://"+dis.addr+"/metrics", "decap_dispatch_decisions_total")
	after := do(client, authorized(mustRequest(http.MethodGet, base+"/api/v1/queue", nil)))
	var q2 struct {
		Stats struct{ Visible, InFlight int }
	}
	_ = json.Unmarshal(after.body, &q2)

	var res result
	for _, sv := range services {
		res.rows = append(res.rows, row{
			what: fmt.Sprintf("%s: peak RSS (VmHWM), %d requests queued over %d lock keys, then %s of dispatching",
				sv.kind, accepted.Load(), keys, s.MemRun),
			figure:   mib(peak[sv.kind]),
			baseline: mib(startRSS[sv.kind]) + " (RSS once ready, empty queue)",
			ratio:    ratio(float64(peak[sv.kind]), float64(startRSS[sv.kind])),
			target:   "< 64 MiB", holds: check(peak[sv.kind] < 64<<20),
			command: e.command("memory"),
		})
	}
	var b strings.Builder
	fmt.Fprintf(&b, "The real binaries as `make run` runs them (`make build-embedded`: `go build -tags decap_embedded` of cmd/ingest, cmd/dispatcher, cmd/reaper), embedded default, local executor, "+
		"cap 4, started as e2e's harness starts them. The dispatch gate was paused through POST /api/v1/dispatch/pause before "+
		"the dispatcher started; %d signed push webhooks (8 clients) were accepted in %s (%s; the real ingest process, each "+
		"webhook its own delivery)%s. ", accepted.Load(), queueTime.Round(time.Millisecond), perSec(float64(accepted.Load())/queueTime.Seconds(), "webhooks"), errNote(&firstErr))
	fmt.Fprintf(&b, "With the queue deep (%d visible), GET /api/v1/queue listed a page of %d of the %d waiting requests in %s (%d KiB) and the "+
		"dashboard (GET /) answered in %s. Then the gate was resumed for %s: the dispatcher made %.0f decisions, the reaper "+
		"recorded %.0f builds, and %d requests were still visible, %d in flight or deferred.\n\n",
		q.Stats.Visible, len(q.Waiting), q.WaitingTotal, queueList.Round(time.Millisecond), len(qa.body)>>10, uiTime.Round(time.Millisecond),
		s.MemRun, decided, finished, q2.Stats.Visible, q2.Stats.InFlight)
	b.WriteString("Peak RSS (VmHWM) after each step; the Go heap from the services' GODEBUG=gctrace=1 lines (largest heap at the start " +
		"of a GC, largest live heap after one); and what the resident set is made of at the end (/proc/<pid>/status: " +
		"anonymous memory, pages of mapped files such as the executable and SQLite's -shm, shared memory):\n\n")
	b.WriteString("| service | RSS once ready | peak after queueing | after GET /api/v1/queue | after GET / | at the end | " +
		"Go heap: largest, largest live | RSS at the end: anon + file + shmem | executable |\n|---|---|---|---|---|---|---|---|---|\n")
	for _, sv := range services {
		heap, live := gcTrace(sv.log)
		st := now[sv.kind]
		exe := int64(0)
		if fi, err := os.Stat(filepath.Join(in.bin, sv.kind)); err == nil {
			exe = fi.Size()
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s, %s | %s = %s + %s + %s | %s |\n", sv.kind, mib(startRSS[sv.kind]), mib(queuedHWM[sv.kind]),
			mib(listedHWM[sv.kind]), mib(uiHWM[sv.kind]), mib(peak[sv.kind]), mib(heap), mib(live),
			mib(st["VmRSS"]), mib(st["RssAnon"]), mib(st["RssFile"]), mib(st["RssShmem"]), mib(exe))
	}
	res.details = append(res.details, b.String())
	return res, nil
}

func errNote(v *atomic.Value) string {
	if s, ok := v.Load().(string); ok {
		return "; some failed, the first: " + s
	}
	return ""
}

// authorized sets the API token on r: reads need it as mutations do.
func authorized(r *http.Request) *http.Request {
	r.Header.Set("Authorization", "Bearer "+apiToken)
	return r
}

// apiCall makes an authorized API call that must answer 2xx.
func apiCall(c *http.Client, method, url, body string) error {
	r := mustRequest(method, url, []byte(body))
	r.Header.Set("Authorization", "Bearer "+apiToken)
	if body != "" {
		r.Header.Set("Content-Type", "application/json")
	}
	a := do(c, r)
	if a.err != nil || a.status/100 != 2 {
		return fmt.Errorf("%s %s: %d %v %.200s", method, url, a.status, a.err, a.body)
	}
	return nil
}

// metricSum adds the values of every series of a metric on a /metrics page
// (-1 when the page cannot be read).
func metricSum(c *http.Client, url, name string) float64 {
	a := do(c, mustRequest(http.MethodGet, url, nil))
	if a.err != nil || a.status != http.StatusOK {
		return -1
	}
	total := 0.0
	sc := bufio.NewScanner(bytes.NewReader(a.body))
	for sc.Scan() {
		l := sc.Text()
		if !strings.HasPrefix(l, name+"{") && !strings.HasPrefix(l, name+" ") {
			continue
		}
		f := strings.Fields(l)
		if v, err := strconv.ParseFloat(f[len(f)-1], 64); err == nil {
			total += v
		}
	}
	return total
}

// gcLine matches the heap sizes of a GODEBUG=gctrace=1 line: "4->5->2 MB".
var gcLine = regexp.MustCompile(`^gc \d+ @.* (\d+)->(\d+)->(\d+) MB`)

// gcTrace returns the largest Go heap at a GC's start and the largest live
// heap after one, from a service's log.
func gcTrace(logPath string) (heap, live int64) {
	b, err := os.ReadFile(logPath)
	if err != nil {
		return 0, 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		m := gcLine.FindStringSubmatch(l)
		if m == nil {
			continue
		}
		start, _ := strconv.ParseInt(m[1], 10, 64)
		after, _ := strconv.ParseInt(m[3], 10, 64)
		heap, live = max(heap, start<<20), max(live, after<<20)
	}
	return heap, live
}
