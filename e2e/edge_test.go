package e2e_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/decap-ci/decap/internal/proctest"
)

// The edge against the real ingest process: what unauthenticated traffic
// can cost it (DESIGN.md, "Trust" and the "Abuse" target). The scale is
// small enough for CI; bench's "abuse" scenario measures the full one.
const (
	// edgeUploaders hold unsigned 5 MiB uploads open at once, from
	// edgeSources loopback addresses: a flood from many clients, not one.
	edgeUploaders = 48
	edgeSources   = 16
	// edgeAttackFor is how long the uploads go on.
	edgeAttackFor = 6 * time.Second
	// edgeMemoryLimit is ingest's memory limit in manifests/ingest.yaml.
	edgeMemoryLimit = 128 << 20
	// edgeAnswerBound is the generous bound on a signed webhook's answer
	// during the flood (the target is p99 < 1 s, measured by bench).
	edgeAnswerBound = 5 * time.Second
)

// edgeDialer returns an HTTP client whose connections come from the
// loopback address src, so that ingest tells it apart from other clients.
func edgeClient(src string, timeout time.Duration) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	return &http.Client{Timeout: timeout, Transport: &http.Transport{DialContext: d.DialContext, MaxIdleConnsPerHost: 4}}
}

// procStatus reads sizes in bytes (VmRSS, VmHWM, ...) of /proc/<pid>/status.
func procStatus(pid int) (map[string]int64, error) {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "status"))
	if err != nil {
		return nil, err
	}
	m := map[string]int64{}
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) == 3 && f[2] == "kB" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			m[strings.TrimSuffix(f[0], ":")] = kb << 10
		}
	}
	return m, nil
}

// upload is one attacker's 5 MiB webhook upload: headers, 4 MiB of the
// body at once, then nothing, held until ingest answers or cuts it off.
// signed sends a made-up signature (so that ingest must read the body to
// find it wrong); otherwise none. It returns ingest's status, or 0 when
// the connection was cut without one.
func upload(ctx context.Context, addr, src string, signed bool) (int, error) {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Now()) })
	defer stop()
	var h strings.Builder
	fmt.Fprintf(&h, "POST /hooks/github HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nX-GitHub-Event: push\r\n"+
		"X-GitHub-Delivery: %s\r\nContent-Length: %d\r\n", addr, proctest.NewDelivery(), 5<<20)
	if signed {
		fmt.Fprintf(&h, "X-Hub-Signature-256: sha256=%s\r\n", strings.Repeat("0", 64))
	}
	h.WriteString("\r\n")
	go func() {
		if _, err := io.WriteString(conn, h.String()); err != nil {
			return
		}
		chunk := bytes.Repeat([]byte{' '}, 64<<10)
		for range 64 { // 4 MiB, then hold the rest back
			if _, err := conn.Write(chunk); err != nil {
				return
			}
		}
	}()
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		if ctx.Err() != nil {
			return 0, ctx.Err()
		}
		return 0, nil // cut off
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

// Unsigned 5 MiB uploads from many addresses, held open, keep ingest
// under its manifest's memory limit; each is refused or cut off; and
// signed webhooks sent meanwhile from another address are all accepted.
func TestEdgeUploadsKeepIngestUnderItsMemoryLimit(t *testing.T) {
	t.Parallel()
	c := newCluster(t, proctest.Options{
		Scripts: filepath.Join(moduleRoot, "examples", "build-scripts"),
		Env:     []string{"DECAP_HTTP_READ_TIMEOUT=3s"},
	})
	ing := c.Start("ingest")
	st, err := procStatus(ing.Pid())
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("ingest once ready: RSS %.1f MiB", float64(st["VmRSS"])/(1<<20))

	ctx, cancel := context.WithTimeout(context.Background(), edgeAttackFor)
	defer cancel()
	var peak map[string]int64 // the sample of the highest VmRSS
	var sampler sync.WaitGroup
	sampler.Go(func() {
		for ctx.Err() == nil {
			if st, err := procStatus(ing.Pid()); err == nil && st["VmRSS"] > peak["VmRSS"] {
				peak = st
			}
			time.Sleep(20 * time.Millisecond)
		}
	})

	var mu sync.Mutex
	outcomes := map[int]int{} // status (0: cut off) → count
	var attackers sync.WaitGroup
	for i := range edgeUploaders {
		src := fmt.Sprintf("127.0.0.%d", 10+i%edgeSources)
		attackers.Go(func() {
			for ctx.Err() == nil {
				status, err := upload(ctx, c.IngestAddr(), src, i%4 != 0)
				if err != nil {
					if ctx.Err() == nil {
						time.Sleep(50 * time.Millisecond) // could not connect: try again
					}
					continue
				}
				mu.Lock()
				outcomes[status]++
				mu.Unlock()
			}
		})
	}

	// Signed webhooks from 127.0.0.2 while the uploads go on.
	client := edgeClient("127.0.0.2", edgeAnswerBound)
	var took []time.Duration
	for ctx.Err() == nil {
		start := time.Now()
		body := proctest.PushPayload("decap-ci", "hello", "edge-"+proctest.RandomHex(4))
		if _, err := c.SendPush(client, proctest.NewDelivery(), body); err != nil {
			t.Errorf("signed webhook during the flood: %v (after %s)", err, time.Since(start).Round(time.Millisecond))
		}
		took = append(took, time.Since(start))
		time.Sleep(200 * time.Millisecond)
	}
	attackers.Wait()
	sampler.Wait()

	st, err = procStatus(ing.Pid())
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(took)
	mib := func(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }
	t.Logf("%d uploaders from %d addresses for %s: answers %v (0: cut off); ingest peak RSS %s (anon %s, file %s; VmHWM %s); "+
		"%d signed webhooks, slowest %s", edgeUploaders, edgeSources, edgeAttackFor, outcomes,
		mib(peak["VmRSS"]), mib(peak["RssAnon"]), mib(peak["RssFile"]), mib(st["VmHWM"]), len(took), took[len(took)-1].Round(time.Millisecond))
	if st["VmHWM"] >= edgeMemoryLimit {
		t.Errorf("ingest's peak RSS (VmHWM) is %.1f MiB; want it under its manifest's limit, %d MiB",
			float64(st["VmHWM"])/(1<<20), edgeMemoryLimit>>20)
	}
	for status, n := range outcomes {
		if status/100 == 2 {
			t.Errorf("%d unsigned uploads got %d; want each refused or cut off", n, status)
		}
	}
	if outcomes[http.StatusTooManyRequests] == 0 || outcomes[http.StatusUnauthorized] == 0 {
		t.Errorf("answers to the uploads: %v; want some refused for the budget (429) and the unsigned ones at once (401)", outcomes)
	}
	if len(took) < 5 {
		t.Errorf("only %d signed webhooks were sent during the flood", len(took))
	}
}

// closedWithin reads conn until ingest closes it; it fails the test if
// that takes longer than bound.
func closedWithin(t *testing.T, conn net.Conn, bound time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	conn.SetReadDeadline(start.Add(bound))
	_, err := io.Copy(io.Discard, conn)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("ingest kept the connection open for %s", bound)
	}
	return time.Since(start)
}

// A body sent a byte at a time and an idle keep-alive connection are
// closed by ingest within its read and idle timeouts.
func TestEdgeSlowBodyAndIdleConnectionClosed(t *testing.T) {
	t.Parallel()
	c := newCluster(t, proctest.Options{
		Scripts: filepath.Join(moduleRoot, "examples", "build-scripts"),
		Env:     []string{"DECAP_HTTP_READ_TIMEOUT=2s", "DECAP_HTTP_IDLE_TIMEOUT=2s"},
	})
	c.Start("ingest")
	const bound = 15 * time.Second

	t.Run("slow body", func(t *testing.T) {
		conn, err := net.Dial("tcp", c.IngestAddr())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		body := proctest.PushPayload("decap-ci", "hello", "main")
		fmt.Fprintf(conn, "POST /hooks/github HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nX-GitHub-Event: push\r\n"+
			"X-GitHub-Delivery: %s\r\nX-Hub-Signature-256: %s\r\nContent-Length: %d\r\n\r\n",
			c.IngestAddr(), proctest.NewDelivery(), proctest.Sign(webhookSecret, body), len(body))
		done := make(chan struct{})
		defer close(done)
		go func() { // a byte every 500 ms: the whole body would take minutes
			for _, b := range body {
				select {
				case <-done:
					return
				case <-time.After(500 * time.Millisecond):
				}
				if _, err := conn.Write([]byte{b}); err != nil {
					return
				}
			}
		}()
		conn.SetReadDeadline(time.Now().Add(bound))
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode != http.StatusRequestTimeout {
				t.Errorf("slow body: got %d, want 408 (or the connection cut)", resp.StatusCode)
			}
		}
		took := closedWithin(t, conn, bound)
		t.Logf("slow body answered and closed (%v)", took.Round(time.Millisecond))
	})
	t.Run("idle keep-alive", func(t *testing.T) {
		conn, err := net.Dial("tcp", c.IngestAddr())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		fmt.Fprintf(conn, "GET /healthz HTTP/1.1\r\nHost: %s\r\n\r\n", c.IngestAddr())
		br := bufio.NewReader(conn)
		conn.SetReadDeadline(time.Now().Add(bound))
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || resp.Close {
			t.Fatalf("GET /healthz: got %d (close %v), want 200 on a kept-alive connection", resp.StatusCode, resp.Close)
		}
		start := time.Now()
		conn.SetReadDeadline(start.Add(bound))
		if _, err := br.ReadByte(); err == nil {
			t.Fatal("ingest sent more after the answer")
		} else if ne := (net.Error)(nil); errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("ingest kept an idle connection open for %s", bound)
		}
		t.Logf("idle keep-alive closed after %s", time.Since(start).Round(time.Millisecond))
	})
}

// metricValue sums a metric's series on ingest's /metrics page.
func metricValue(t *testing.T, c *proctest.Cluster, name string, labels ...string) float64 {
	t.Helper()
	h := http.Header{"Authorization": {"Bearer " + apiToken}}
	status, body := c.MustDo(http.MethodGet, "/metrics", h, nil)
	if status != http.StatusOK {
		t.Fatalf("GET /metrics: %d", status)
	}
	total := 0.0
	for _, l := range strings.Split(string(body), "\n") {
		series, value, ok := strings.Cut(l, " ")
		if !ok || !(series == name || strings.HasPrefix(series, name+"{")) {
			continue
		}
		matches := true
		for i := 0; i+1 < len(labels); i += 2 {
			if !strings.Contains(series, labels[i]+`="`+labels[i+1]+`"`) {
				matches = false
			}
		}
		if v, err := strconv.ParseFloat(value, 64); err == nil && matches {
			total += v
		}
	}
	return total
}

// Followers of a queued build: beyond the caps (per client and in all)
// they get 429 with Retry-After, the ones admitted are served, and the
// record store is polled once per interval for all of them.
func TestEdgeFollowersOfAQueuedBuild(t *testing.T) {
	t.Parallel()
	const (
		sources   = 4  // client addresses
		perSource = 10 // follows each asks for
		perClient = 8  // DECAP_MAX_FOLLOWERS_PER_CLIENT
		total     = 20 // DECAP_MAX_FOLLOWERS
	)
	c := newCluster(t, proctest.Options{
		Scripts: filepath.Join(moduleRoot, "examples", "build-scripts"),
		Env:     []string{"DECAP_MAX_FOLLOWERS=" + strconv.Itoa(total), "DECAP_MAX_FOLLOWERS_PER_CLIENT=" + strconv.Itoa(perClient)},
	})
	c.Start("ingest") // no dispatcher: the build stays queued
	id := c.RequestBuild("decap-ci", "hello", "main")

	var open []*http.Response
	defer func() {
		for _, r := range open {
			r.Body.Close()
		}
	}()
	refused := 0
	for s := range sources {
		client := edgeClient(fmt.Sprintf("127.0.0.%d", 20+s), 60*time.Second)
		for range perSource {
			r, _ := http.NewRequest(http.MethodGet, c.URL("/api/v1/builds/"+id+"/log?follow=1"), nil)
			r.Header.Set("Authorization", "Bearer "+apiToken)
			resp, err := client.Do(r)
			if err != nil {
				t.Fatalf("follow: %v", err)
			}
			switch resp.StatusCode {
			case http.StatusOK:
				open = append(open, resp)
			case http.StatusTooManyRequests:
				if resp.Header.Get("Retry-After") == "" {
					t.Error("429 without Retry-After")
				}
				resp.Body.Close()
				refused++
			default:
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				t.Fatalf("follow: got %d %s", resp.StatusCode, b)
			}
		}
	}
	if len(open) != total || refused != sources*perSource-total {
		t.Errorf("%d follows asked from %d addresses: %d admitted, %d refused; want %d admitted", sources*perSource, sources, len(open), refused, total)
	}
	if got := metricValue(t, c, "decap_log_followers"); got != float64(total) {
		t.Errorf("decap_log_followers = %v, want %d", got, total)
	}
	// The sources asked one after the other: each was refused for its
	// own share once it held perClient, then all for the server's.
	wantClient, wantServer, held := 0, 0, 0
	for range sources {
		mine := 0
		for range perSource {
			switch {
			case mine == perClient:
				wantClient++
			case held == total:
				wantServer++
			default:
				mine++
				held++
			}
		}
	}
	byClient := metricValue(t, c, "decap_ingest_rejected_total", "reason", "followers_client")
	byServer := metricValue(t, c, "decap_ingest_rejected_total", "reason", "followers_server")
	if byClient != float64(wantClient) || byServer != float64(wantServer) {
		t.Errorf("rejections: %v for a client's share, %v for the server's; want %d and %d", byClient, byServer, wantClient, wantServer)
	}

	// The admitted ones are served: headers, and a stream still open.
	// Polls: one per 250 ms (the default interval) for all of them.
	p0, t0 := metricValue(t, c, "decap_log_follow_polls_total"), time.Now()
	time.Sleep(2 * time.Second)
	polls, intervals := metricValue(t, c, "decap_log_follow_polls_total")-p0, time.Since(t0)/(250*time.Millisecond)
	t.Logf("%d followers for %d poll intervals: %v record polls", len(open), intervals, polls)
	if polls > float64(2*intervals+3) || polls < 1 {
		t.Errorf("%d followers for %d poll intervals: %v record polls; want about one per interval", len(open), intervals, polls)
	}
	for _, r := range open {
		if r.Header.Get("Content-Type") == "" {
			t.Errorf("an admitted follow has no Content-Type: %v", r.Header)
		}
		r.Body.Close()
	}
	open = nil
	c.WaitFor(15*time.Second, "the followers to be gone", func() (bool, string) {
		n := metricValue(t, c, "decap_log_followers")
		return n == 0, fmt.Sprintf("%v followers", n)
	})
	p1 := metricValue(t, c, "decap_log_follow_polls_total")
	time.Sleep(time.Second)
	if p := metricValue(t, c, "decap_log_follow_polls_total"); p != p1 {
		t.Errorf("%v polls after the last follower left; want none", p-p1)
	}
}
