package ingest_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/decap-ci/decap/internal/build"
	"github.com/decap-ci/decap/internal/health"
	"github.com/decap-ci/decap/internal/ingest"
	"github.com/decap-ci/decap/internal/metrics"
	"github.com/decap-ci/decap/internal/metrics/metricstest"
)

// The names here start with edge, so as not to collide with the package's
// other tests.

// edgeBound is how long a test waits for what must happen: generous, the
// limits under test are a fraction of it.
const edgeBound = 10 * time.Second

// edgeFixture is a fixture whose metrics are read back, and whose record
// reads and live-log opens are counted.
type edgeFixture struct {
	*fixture
	reg   *prometheus.Registry
	gets  atomic.Int64 // Records.Get calls
	opens atomic.Int64 // LiveLogs.OpenLiveLog calls
}

// edgeRecords counts Records.Get.
type edgeRecords struct {
	ingest.Records
	n *atomic.Int64
}

func (r edgeRecords) Get(ctx context.Context, id build.ID) (build.Record, error) {
	r.n.Add(1)
	return r.Records.Get(ctx, id)
}

// edgeLive is a LiveLogs whose logs do not exist (builds that have not
// started, or ended); it counts the calls.
type edgeLive struct{ n *atomic.Int64 }

func (l edgeLive) OpenLiveLog(build.ID) (io.ReadCloser, error) {
	l.n.Add(1)
	return nil, build.ErrNotFound
}

func newEdgeFixture(t *testing.T, mutate func(*ingest.Config)) *edgeFixture {
	t.Helper()
	return newEdgeFixtureLive(t, mutate, nil)
}

// newEdgeFixtureLive is newEdgeFixture with live logs of its own (nil:
// edgeLive).
func newEdgeFixtureLive(t *testing.T, mutate func(*ingest.Config), live ingest.LiveLogs) *edgeFixture {
	t.Helper()
	ef := &edgeFixture{reg: metrics.NewRegistry()}
	ef.fixture = newFixtureDeps(t, func(c *ingest.Config) {
		c.MaxBodyBytes = 0 // the default, 5 MiB
		c.FollowPoll = 20 * time.Millisecond
		// The test's clients are told apart by X-Forwarded-For.
		c.Limits.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("192.0.2.0/24")}
		if mutate != nil {
			mutate(c)
		}
	}, func(d *ingest.Deps) {
		d.Records = edgeRecords{Records: d.Records, n: &ef.gets}
		d.LiveLogs = edgeLive{n: &ef.opens}
		if live != nil {
			d.LiveLogs = live
		}
		d.Observer = metrics.NewIngest(ef.reg)
	})
	return ef
}

func (ef *edgeFixture) rejected(t *testing.T, reason string) float64 {
	t.Helper()
	return metricstest.Value(t, ef.reg, "decap_ingest_rejected_total", "reason", reason)
}

// saveBuild saves a record of decap-ci/hello with status st, changed by
// the mutate functions.
func (ef *edgeFixture) saveBuild(t *testing.T, st build.Status, mutate ...func(*build.Record)) build.Record {
	t.Helper()
	rec := build.Record{BuildID: build.NewID(ef.clock.Now()), Team: "decap-ci", Project: "hello", Ref: "main",
		RefType: build.Branch, Trigger: build.TriggerPush, Status: st, QueuedAt: ef.clock.Now()}
	for _, m := range mutate {
		m(&rec)
	}
	if err := ef.records.Save(t.Context(), rec); err != nil {
		t.Fatal(err)
	}
	return rec
}

// edgeFrom makes r come from client through the trusted proxy.
func edgeFrom(r *http.Request, client string) *http.Request {
	r.Header.Set("X-Forwarded-For", client)
	return r
}

// countingBody is a request body that counts the bytes read from it.
type countingBody struct {
	r io.Reader
	n *atomic.Int64
}

func (b countingBody) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	b.n.Add(int64(n))
	return n, err
}

// A webhook without X-Hub-Signature-256 is refused before a byte of its
// body is read, and so is any body over its route's limit that declares
// its length.
func TestEdgeRefusedBeforeTheBodyIsRead(t *testing.T) {
	t.Parallel()
	ef := newEdgeFixture(t, nil)
	for _, tc := range []struct {
		name       string
		path       string
		header     http.Header
		wantStatus int
		wantReason string
	}{
		{"unsigned webhook", "/hooks/github", http.Header{"X-Github-Event": {"push"}, "X-Github-Delivery": {"d-unsigned"}},
			401, ingest.RejectUnsigned},
		{"unsigned catalog refresh", "/hooks/buildscripts", nil, 401, ingest.RejectUnsigned},
		{"4 MiB to a small route", "/api/v1/session", http.Header{"Content-Type": {"application/json"}},
			413, ingest.RejectBodyTooLarge},
		{"4 MiB build request", "/api/v1/projects/decap-ci/hello/builds", http.Header{"Authorization": {"Bearer " + token}},
			413, ingest.RejectBodyTooLarge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var read atomic.Int64
			before := ef.rejected(t, tc.wantReason)
			big := bytes.Repeat([]byte(" "), 4<<20)
			r := httptest.NewRequest(http.MethodPost, tc.path, countingBody{r: bytes.NewReader(big), n: &read})
			r.ContentLength = int64(len(big))
			for k, v := range tc.header {
				r.Header[k] = v
			}
			w := ef.do(r)
			if w.Code != tc.wantStatus {
				t.Errorf("got %d %s, want %d", w.Code, w.Body, tc.wantStatus)
			}
			if n := read.Load(); n != 0 {
				t.Errorf("the server read %d bytes of the body; want none", n)
			}
			if got := ef.rejected(t, tc.wantReason) - before; got != 1 {
				t.Errorf("decap_ingest_rejected_total{reason=%q} rose by %v, want 1", tc.wantReason, got)
			}
		})
	}
}

// Only the webhook takes a large body: 1 MiB is a webhook's, but not a
// build request's.
func TestEdgeBodyLimitPerRoute(t *testing.T) {
	t.Parallel()
	ef := newEdgeFixture(t, nil)
	push := payload(t, "push-with-new-branch.json")
	var m map[string]any
	if err := json.Unmarshal(push, &m); err != nil {
		t.Fatal(err)
	}
	m["padding"] = strings.Repeat("x", 1<<20)
	bigPush, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	if w := ef.do(hook("push", "d-big", bigPush)); w.Code != http.StatusAccepted {
		t.Errorf("a signed 1 MiB push: got %d %s, want 202", w.Code, w.Body)
	}
	body := `{"ref":"main"` + strings.Repeat(" ", 1<<20) + `}`
	r := httptest.NewRequest(http.MethodPost, "/api/v1/projects/decap-ci/hello/builds", strings.NewReader(body))
	r.Header.Set("Authorization", "Bearer "+token)
	if w := ef.do(r); w.Code != http.StatusRequestEntityTooLarge {
		t.Errorf("a 1 MiB build request: got %d %s, want 413", w.Code, w.Body)
	}
	// A chunked body (no declared length) is cut off as it grows.
	r = httptest.NewRequest(http.MethodPost, "/api/v1/projects/decap-ci/hello/builds", io.MultiReader(strings.NewReader(body)))
	r.ContentLength = -1
	r.Header.Set("Authorization", "Bearer "+token)
	if w := ef.do(r); w.Code != http.StatusRequestEntityTooLarge {
		t.Errorf("a 1 MiB chunked build request: got %d %s, want 413", w.Code, w.Body)
	}
}

// heldBody is a webhook body that the test lets through in two parts: the
// handler holds its budget while it waits for the second.
type heldBody struct {
	pw   *io.PipeWriter
	rest []byte
	done chan *httptest.ResponseRecorder
}

// holdWebhook starts a signed webhook of size bytes from client and
// returns once the server reads its body, that is once it holds its share
// of the body budget.
func holdWebhook(t *testing.T, ef *edgeFixture, client string, size int) *heldBody {
	t.Helper()
	body := []byte(`{"ref":"refs/heads/main"}` + strings.Repeat(" ", size-25))
	pr, pw := io.Pipe()
	r := edgeFrom(hook("push", "d-held-"+client, body), client)
	r.Body, r.ContentLength = pr, int64(len(body))
	h := &heldBody{pw: pw, rest: body[1:], done: make(chan *httptest.ResponseRecorder, 1)}
	go func() { h.done <- ef.do(r) }()
	if _, err := pw.Write(body[:1]); err != nil { // returns once the handler reads
		t.Fatal(err)
	}
	return h
}

// finish sends the rest of the body and returns the answer.
func (h *heldBody) finish(t *testing.T) *httptest.ResponseRecorder {
	t.Helper()
	go func() {
		h.pw.Write(h.rest)
		h.pw.Close()
	}()
	select {
	case w := <-h.done:
		return w
	case <-time.After(edgeBound):
		t.Fatal("the held webhook was not answered")
		return nil
	}
}

// The bodies read at once are bounded per client and in all: beyond
// either, 429 with Retry-After, while another client is still served.
func TestEdgeBodyBudget(t *testing.T) {
	t.Parallel()
	const size = 60 << 10
	ef := newEdgeFixture(t, func(c *ingest.Config) {
		c.MaxBodyBytes = 64 << 10
		c.Limits.ClientBodyBytes = 100 << 10 // one body of 60 KiB per client
		c.Limits.BodyBytes = 150 << 10       // two in all
	})
	post := func(client string) *httptest.ResponseRecorder {
		body := []byte(`{"ref":"refs/heads/main"}` + strings.Repeat(" ", size-25))
		return ef.do(edgeFrom(hook("push", "d-"+client+"-"+string(build.NewID(ef.clock.Now())), body), client))
	}
	tooMany := func(t *testing.T, w *httptest.ResponseRecorder, want string) {
		t.Helper()
		if w.Code != http.StatusTooManyRequests || w.Header().Get("Retry-After") == "" || !strings.Contains(w.Body.String(), want) {
			t.Errorf("got %d (Retry-After %q) %s; want 429 with Retry-After, saying %q", w.Code, w.Header().Get("Retry-After"), w.Body, want)
		}
	}

	a := holdWebhook(t, ef, "198.51.100.1", size)
	tooMany(t, post("198.51.100.1"), "from your address")
	if w := post("198.51.100.2"); w.Code == http.StatusTooManyRequests {
		t.Errorf("another client, with budget left: got %d %s", w.Code, w.Body)
	}
	b := holdWebhook(t, ef, "198.51.100.2", size)
	tooMany(t, post("198.51.100.3"), "the server holds")
	if got := ef.rejected(t, ingest.RejectBodyClient); got != 1 {
		t.Errorf("rejected{reason=body_client} = %v, want 1", got)
	}
	if got := ef.rejected(t, ingest.RejectBodyServer); got != 1 {
		t.Errorf("rejected{reason=body_server} = %v, want 1", got)
	}
	// Answered bodies give their budget back.
	for _, h := range []*heldBody{a, b} {
		if w := h.finish(t); w.Code == http.StatusTooManyRequests {
			t.Errorf("held webhook: got %d %s", w.Code, w.Body)
		}
	}
	for _, client := range []string{"198.51.100.1", "198.51.100.3"} {
		if w := post(client); w.Code == http.StatusTooManyRequests {
			t.Errorf("%s after the budget was given back: got %d %s", client, w.Code, w.Body)
		}
	}
}

// edgeServe serves ef's server through health.ServeWith (the server's
// real timeouts) on a loopback port until the test ends.
func edgeServe(t *testing.T, h http.Handler, to health.Timeouts) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- health.ServeWith(ctx, addr, h, slog.New(slog.DiscardHandler), to) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	deadline := time.Now().Add(edgeBound)
	for {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			return "http://" + addr
		}
		if time.Now().After(deadline) {
			t.Fatalf("server on %s did not start: %v", addr, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// follow opens a log follow of id from client and returns the answer,
// whose body the caller closes.
func edgeFollow(t *testing.T, client *http.Client, base string, id build.ID, from string) *http.Response {
	t.Helper()
	r, err := http.NewRequest(http.MethodGet, base+"/api/v1/builds/"+string(id)+"/log?follow=1", nil)
	if err != nil {
		t.Fatal(err)
	}
	r.Header.Set("Authorization", "Bearer "+token)
	resp, err := client.Do(edgeFrom(r, from))
	if err != nil {
		t.Fatalf("follow from %s: %v", from, err)
	}
	return resp
}

// Log follows are capped per client and in all (429 with Retry-After
// beyond); a follow that ends gives its place back.
func TestEdgeFollowersCapped(t *testing.T) {
	t.Parallel()
	ef := newEdgeFixture(t, func(c *ingest.Config) {
		c.Limits.Followers, c.Limits.ClientFollowers = 5, 3
	})
	rec := ef.saveBuild(t, build.StatusQueued)
	base := edgeServe(t, ef.srv, health.Timeouts{})
	client := &http.Client{Timeout: edgeBound, Transport: &http.Transport{MaxConnsPerHost: 0}}
	var open []*http.Response
	defer func() {
		for _, r := range open {
			r.Body.Close()
		}
	}()
	want := func(from string, code int) {
		t.Helper()
		resp := edgeFollow(t, client, base, rec.BuildID, from)
		if resp.StatusCode != code {
			b, _ := io.ReadAll(resp.Body)
			t.Errorf("follow from %s: got %d %s, want %d", from, resp.StatusCode, b, code)
		}
		if resp.StatusCode == http.StatusTooManyRequests {
			if resp.Header.Get("Retry-After") == "" {
				t.Errorf("follow from %s: 429 without Retry-After", from)
			}
			resp.Body.Close()
			return
		}
		open = append(open, resp)
	}
	for range 3 {
		want("198.51.100.1", http.StatusOK)
	}
	want("198.51.100.1", http.StatusTooManyRequests)
	want("198.51.100.2", http.StatusOK)
	want("198.51.100.2", http.StatusOK)
	want("198.51.100.3", http.StatusTooManyRequests)
	if got := metricstest.Value(t, ef.reg, "decap_log_followers"); got != 5 {
		t.Errorf("decap_log_followers = %v, want 5", got)
	}
	if got := ef.rejected(t, ingest.RejectFollowerClient); got != 1 {
		t.Errorf("rejected{reason=followers_client} = %v, want 1", got)
	}
	if got := ef.rejected(t, ingest.RejectFollowerServer); got != 1 {
		t.Errorf("rejected{reason=followers_server} = %v, want 1", got)
	}
	// A client that goes away gives its place back.
	open[0].Body.Close()
	open = open[1:]
	deadline := time.Now().Add(edgeBound)
	for {
		resp := edgeFollow(t, client, base, rec.BuildID, "198.51.100.3")
		if resp.StatusCode == http.StatusOK {
			open = append(open, resp)
			break
		}
		resp.Body.Close()
		if time.Now().After(deadline) {
			t.Fatalf("a follow that ended did not give its place back within %s", edgeBound)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Followers of one build share one poll of its record: the store is read
// about once per interval however many follow, the executor is not asked
// for the live log of a build that has not started, and the poll stops
// when the last follower leaves.
func TestEdgeFollowersShareOnePoll(t *testing.T) {
	t.Parallel()
	const followers = 20
	ef := newEdgeFixture(t, func(c *ingest.Config) { c.Limits.ClientFollowers = followers })
	rec := ef.saveBuild(t, build.StatusQueued)
	base := edgeServe(t, ef.srv, health.Timeouts{})
	client := &http.Client{Timeout: edgeBound, Transport: &http.Transport{}}
	var resps []*http.Response
	for range followers {
		resp := edgeFollow(t, client, base, rec.BuildID, "198.51.100.1")
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("follow: got %d", resp.StatusCode)
		}
		resps = append(resps, resp)
	}
	gets0, polls0 := ef.gets.Load(), metricstest.Value(t, ef.reg, "decap_log_follow_polls_total")
	start := time.Now()
	time.Sleep(500 * time.Millisecond)
	elapsed := time.Since(start)
	gets := ef.gets.Load() - gets0
	polls := metricstest.Value(t, ef.reg, "decap_log_follow_polls_total") - polls0
	intervals := int64(elapsed / (20 * time.Millisecond))
	t.Logf("%d followers over %s (%d poll intervals): %d record reads, %v polls counted", followers, elapsed.Round(time.Millisecond), intervals, gets, polls)
	// One read per interval, give or take a few; one per follower per
	// interval would be 20 times that.
	// (The two counts are read a moment apart: one poll may fall between.)
	if gets > 2*intervals+5 || math.Abs(float64(gets)-polls) > 1 {
		t.Errorf("%d followers over %d intervals: %d record reads (%v polls counted); want about one read per interval", followers, intervals, gets, polls)
	}
	if n := ef.opens.Load(); n != 0 {
		t.Errorf("the executor was asked for the live log of a queued build %d times; want never", n)
	}

	// The build ends with a stored log: every follower gets it, and ends.
	rec.Status, rec.FinishedAt, rec.LogKey = build.StatusSucceeded, ef.clock.Now(), build.LogKey(rec.BuildID)
	if err := ef.blobs.Put(t.Context(), rec.LogKey, bytes.NewReader(gz(t, "the whole log\n"))); err != nil {
		t.Fatal(err)
	}
	if err := ef.records.Save(t.Context(), rec); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for _, resp := range resps {
		wg.Go(func() {
			defer resp.Body.Close()
			b, err := io.ReadAll(resp.Body)
			if err != nil || string(b) != "the whole log\n" {
				t.Errorf("a follower got %q, %v; want the stored log, then the end", b, err)
			}
		})
	}
	wg.Wait()
	waitFor(t, "the followers gauge to drop to 0", func() bool {
		return metricstest.Value(t, ef.reg, "decap_log_followers") == 0
	})
	after := ef.gets.Load()
	time.Sleep(200 * time.Millisecond)
	if n := ef.gets.Load() - after; n != 0 {
		t.Errorf("%d record reads after the last follower left; want the poll stopped", n)
	}
}

// A follow ends after FollowFor, even of a build that never starts; the
// client reconnects for the rest.
func TestEdgeFollowEnds(t *testing.T) {
	t.Parallel()
	ef := newEdgeFixture(t, func(c *ingest.Config) { c.Limits.FollowFor = 300 * time.Millisecond })
	rec := ef.saveBuild(t, build.StatusQueued)
	base := edgeServe(t, ef.srv, health.Timeouts{})
	client := &http.Client{Timeout: edgeBound, Transport: &http.Transport{}}
	start := time.Now()
	resp := edgeFollow(t, client, base, rec.BuildID, "198.51.100.1")
	defer resp.Body.Close()
	if _, err := io.ReadAll(resp.Body); err != nil {
		t.Fatalf("the follow of a queued build did not end cleanly: %v (after %s)", err, time.Since(start))
	}
	t.Logf("a follow of a queued build ended after %s", time.Since(start).Round(time.Millisecond))

	// A follow that wrote nothing for longer than a chunk's write timeout
	// (a build queued, or silent, for minutes) still ends cleanly: its end
	// is written too, or the client reads an error, not the end of the log.
	t.Run("after a silence longer than the write timeout", func(t *testing.T) {
		t.Parallel()
		ef := newEdgeFixture(t, func(c *ingest.Config) {
			c.Limits.FollowFor, c.Limits.StreamWriteTimeout = 600*time.Millisecond, 100*time.Millisecond
		})
		base := edgeServe(t, ef.srv, health.Timeouts{Write: 100 * time.Millisecond})
		client := &http.Client{Timeout: edgeBound, Transport: &http.Transport{}}
		t.Run("queued until the follow ends", func(t *testing.T) {
			rec := ef.saveBuild(t, build.StatusQueued)
			resp := edgeFollow(t, client, base, rec.BuildID, "198.51.100.1")
			defer resp.Body.Close()
			if _, err := io.ReadAll(resp.Body); err != nil {
				t.Errorf("the follow of a build queued past the write timeout did not end cleanly: %v", err)
			}
		})
		t.Run("ended after a silence", func(t *testing.T) {
			rec := ef.saveBuild(t, build.StatusQueued)
			resp := edgeFollow(t, client, base, rec.BuildID, "198.51.100.2")
			defer resp.Body.Close()
			go func() {
				time.Sleep(300 * time.Millisecond)
				rec.Status, rec.Reason, rec.FinishedAt = build.StatusCancelled, "cancelled by api", ef.clock.Now()
				ef.records.Save(context.Background(), rec)
			}()
			if _, err := io.ReadAll(resp.Body); err != nil {
				t.Errorf("the follow of a build that ended after a silence past the write timeout did not end cleanly: %v", err)
			}
		})
	})
}

// A request refused before its body is read is answered at once, however
// slowly the body comes (net/http would otherwise wait for up to 256 KiB
// of it), and its connection closed; an accepted one keeps its connection.
func TestEdgeRefusalIsAnsweredAtOnce(t *testing.T) {
	t.Parallel()
	ef := newEdgeFixture(t, nil)
	base := edgeServe(t, ef.srv, health.Timeouts{Read: time.Minute})
	for _, tc := range []struct {
		name, header string
		length       int
		want         int
	}{
		{"unsigned webhook", "X-GitHub-Event: push\r\n", 5 << 20, http.StatusUnauthorized},
		{"unsigned webhook, small", "X-GitHub-Event: push\r\n", 100 << 10, http.StatusUnauthorized},
		{"build request without a token", "", 1 << 10, http.StatusUnauthorized},
		{"too large", "", 1 << 20, http.StatusRequestEntityTooLarge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			conn, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			path := "/hooks/github"
			if !strings.HasPrefix(tc.name, "unsigned") {
				path = "/api/v1/projects/decap-ci/hello/builds"
			}
			fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: x\r\n%sContent-Length: %d\r\n\r\nx", path, tc.header, tc.length)
			start := time.Now()
			conn.SetReadDeadline(start.Add(edgeBound))
			resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
			if err != nil {
				t.Fatalf("no answer within %s (the body never comes): %v", edgeBound, err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.want || !resp.Close {
				t.Errorf("got %d (close %v) after %s, want %d and the connection closed", resp.StatusCode, resp.Close, time.Since(start), tc.want)
			}
		})
	}
	t.Run("refused Host", func(t *testing.T) {
		t.Parallel()
		ef := newEdgeFixture(t, func(c *ingest.Config) { c.ReadPublic = true })
		base := edgeServe(t, ef.srv, health.Timeouts{Read: time.Minute})
		conn, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		fmt.Fprintf(conn, "POST /api/v1/session HTTP/1.1\r\nHost: rebind.evil.example\r\nContent-Length: %d\r\n\r\nx", 60<<10)
		start := time.Now()
		conn.SetReadDeadline(start.Add(edgeBound))
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatalf("no answer within %s (the body never comes): %v", edgeBound, err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden || !resp.Close {
			t.Errorf("got %d (close %v) after %s, want 403 and the connection closed", resp.StatusCode, resp.Close, time.Since(start))
		}
	})
	t.Run("accepted", func(t *testing.T) {
		t.Parallel()
		body := proctestPush()
		r, _ := http.NewRequest(http.MethodPost, base+"/hooks/github", bytes.NewReader(body))
		r.Header = hook("push", "d-keep", body).Header
		resp, err := (&http.Client{Timeout: edgeBound}).Do(r)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted || resp.Close {
			t.Errorf("got %d (close %v), want 202 on a connection kept alive", resp.StatusCode, resp.Close)
		}
	})
}

// proctestPush is a push of decap-ci/hello's main.
func proctestPush() []byte {
	return []byte(`{"ref":"refs/heads/main","after":"6113728f27ae82c7b1a177c8d03f9e96e0adf246","repository":{"name":"hello","owner":{"login":"decap-ci"}},"pusher":{"name":"x"}}`)
}

// A slow body gets 408 once the server's read timeout passes, and counts.
func TestEdgeSlowBody(t *testing.T) {
	t.Parallel()
	ef := newEdgeFixture(t, nil)
	base := edgeServe(t, ef.srv, health.Timeouts{Read: 300 * time.Millisecond})
	conn, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	body := []byte(`{"ref":"main"}`)
	fmt.Fprintf(conn, "POST /hooks/github HTTP/1.1\r\nHost: x\r\nX-GitHub-Event: push\r\nX-GitHub-Delivery: d-slow\r\n"+
		"X-Hub-Signature-256: %s\r\nContent-Length: 1000\r\n\r\n", ingest.Sign([]byte(secret), body))
	conn.Write(body[:1])
	conn.SetReadDeadline(time.Now().Add(edgeBound))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("no answer to a slow body: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestTimeout {
		t.Errorf("slow body: got %d, want 408", resp.StatusCode)
	}
	if got := ef.rejected(t, ingest.RejectBodyTimeout); got != 1 {
		t.Errorf("rejected{reason=body_timeout} = %v, want 1", got)
	}
}

// slowReader reads what the server sends at a bounded pace.
func slowRead(t *testing.T, r io.Reader, chunk int, every time.Duration) (int64, error) {
	t.Helper()
	var n int64
	buf := make([]byte, chunk)
	for {
		k, err := io.ReadFull(r, buf)
		n += int64(k)
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return n, nil
		}
		if err != nil {
			return n, err
		}
		time.Sleep(every)
	}
}

// Streamed answers outlive the server's write timeout as long as they
// progress: a followed log, and a download read more slowly than the
// write timeout allows for the whole of it.
func TestEdgeStreamsOutliveWriteTimeout(t *testing.T) {
	t.Parallel()
	const writeTimeout = 300 * time.Millisecond
	pr, pw := io.Pipe()
	ef := newEdgeFixtureLive(t, func(c *ingest.Config) { c.Limits.StreamWriteTimeout = writeTimeout }, pipeFollower{r: pr})
	base := edgeServe(t, ef.srv, health.Timeouts{Write: writeTimeout})
	client := &http.Client{Timeout: edgeBound, Transport: &http.Transport{}}

	t.Run("follow", func(t *testing.T) {
		rec := ef.saveBuild(t, build.StatusRunning)
		resp := edgeFollow(t, client, base, rec.BuildID, "198.51.100.1")
		defer resp.Body.Close()
		go func() {
			for i := range 10 { // 1 s of log, a line every 100 ms
				fmt.Fprintf(pw, "line %d\n", i)
				time.Sleep(100 * time.Millisecond)
			}
			pw.Close()
			rec.Status, rec.FinishedAt = build.StatusSucceeded, ef.clock.Now()
			ef.records.Save(context.Background(), rec)
		}()
		b, err := io.ReadAll(resp.Body)
		if got := strings.Count(string(b), "\n"); got != 10 || err != nil {
			t.Errorf("followed log over 1 s with a write timeout of %s: got %d lines, %v; want all 10", writeTimeout, got, err)
		}
	})
	t.Run("artifacts", func(t *testing.T) {
		rec := ef.saveBuild(t, build.StatusSucceeded, func(r *build.Record) {
			r.ArtifactsKey, r.FinishedAt = build.ArtifactsKey(r.BuildID), ef.clock.Now()
		})
		const size = 24 << 20
		if err := ef.blobs.Put(t.Context(), rec.ArtifactsKey, bytes.NewReader(make([]byte, size))); err != nil {
			t.Fatal(err)
		}
		r, _ := http.NewRequest(http.MethodGet, base+"/api/v1/builds/"+string(rec.BuildID)+"/artifacts", nil)
		r.Header.Set("Authorization", "Bearer "+token)
		resp, err := client.Do(r)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		// 1 MiB every 50 ms: 24 MiB take over a second.
		start := time.Now()
		n, err := slowRead(t, resp.Body, 1<<20, 50*time.Millisecond)
		if n != size || err != nil {
			t.Errorf("artifacts read over %s with a write timeout of %s: got %d of %d bytes, %v", time.Since(start).Round(time.Millisecond), writeTimeout, n, size, err)
		}
	})
}

// waitFor polls cond until it holds, failing the test after edgeBound.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(edgeBound)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited %s for %s", edgeBound, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
