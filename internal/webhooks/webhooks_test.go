package webhooks_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/decap-ci/decap/internal/build"
	"github.com/decap-ci/decap/internal/buildtest"
	"github.com/decap-ci/decap/internal/events"
	"github.com/decap-ci/decap/internal/webhooks"
)

func TestSignMatchesAKnownVector(t *testing.T) {
	t.Parallel()
	// GitHub's documented example of the same scheme (X-Hub-Signature-256).
	const want = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
	if got := webhooks.Sign("It's a Secret to Everybody", []byte("Hello, World!")); got != want {
		t.Errorf("Sign() = %s, want %s", got, want)
	}
	if !webhooks.Verify("It's a Secret to Everybody", []byte("Hello, World!"), want) {
		t.Error("Verify(good signature) = false")
	}
	if webhooks.Verify("another secret of 16+", []byte("Hello, World!"), want) {
		t.Error("Verify(other secret) = true")
	}
}

func TestPolicyCheckAddr(t *testing.T) {
	t.Parallel()
	allowLoopback := webhooks.Policy{Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}}
	allowAll := webhooks.Policy{Allow: []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0")}}
	for _, tc := range []struct {
		name   string
		policy webhooks.Policy
		addr   string
		ok     bool
	}{
		{"public v4", webhooks.Policy{}, "93.184.215.14", true},
		{"public v6", webhooks.Policy{}, "2606:2800:21f:cb07:6820:80da:af6b:8b2c", true},
		{"loopback", webhooks.Policy{}, "127.0.0.1", false},
		{"loopback v6", webhooks.Policy{}, "::1", false},
		{"loopback allowed", allowLoopback, "127.0.0.1", true},
		{"private 10", allowLoopback, "10.1.2.3", false},
		{"private 172", webhooks.Policy{}, "172.20.0.1", false},
		{"private 192.168", webhooks.Policy{}, "192.168.1.1", false},
		{"carrier NAT", webhooks.Policy{}, "100.64.0.1", false},
		{"unique local", webhooks.Policy{}, "fd12::1", false},
		{"metadata", webhooks.Policy{}, "169.254.169.254", false},
		{"metadata though all allowed", allowAll, "169.254.169.254", false},
		{"metadata v4-mapped", allowAll, "::ffff:169.254.169.254", false},
		{"ec2 v6 metadata though all allowed", allowAll, "fd00:ec2::254", false},
		{"link-local v6", allowAll, "fe80::1", false},
		{"unspecified", allowAll, "0.0.0.0", false},
		{"broadcast", allowAll, "255.255.255.255", false},
		{"multicast", allowAll, "224.0.0.1", false},
		{"loopback v4-mapped", webhooks.Policy{}, "::ffff:127.0.0.1", false},
		{"nat64 of private", webhooks.Policy{}, "64:ff9b::a00:1", false},
		{"private allowed by a listed network", allowAll, "10.1.2.3", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			err := tc.policy.CheckAddr(netip.MustParseAddr(tc.addr))
			if (err == nil) != tc.ok || (err != nil && !errors.Is(err, webhooks.ErrRefused)) {
				t.Errorf("CheckAddr(%s) = %v, want ok %v", tc.addr, err, tc.ok)
			}
		})
	}
}

func TestPolicyCheckURL(t *testing.T) {
	t.Parallel()
	strict := webhooks.Policy{}
	local := webhooks.Policy{AllowHTTP: true, Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}}
	for _, tc := range []struct {
		policy webhooks.Policy
		url    string
		ok     bool
	}{
		{strict, "https://hooks.example.com/decap", true},
		{strict, "http://hooks.example.com/decap", false},
		{strict, "https://127.0.0.1:8443/", false},
		{strict, "https://localhost/", false},
		{strict, "https://app.localhost./", false},
		{strict, "https://[::1]/", false},
		{strict, "https://169.254.169.254/latest/meta-data/", false},
		{strict, "https://[fd00:ec2::254]/", false},
		{strict, "https://user:pass@hooks.example.com/", false},
		{strict, "file:///etc/passwd", false},
		{strict, "gopher://hooks.example.com/", false},
		{strict, "https:///nohost", false},
		{local, "http://127.0.0.1:9000/hook", true},
		{local, "http://localhost:9000/hook", true},
		{local, "http://169.254.169.254/", false},
		{local, "http://10.0.0.1/", false},
	} {
		err := tc.policy.CheckURL(tc.url)
		if (err == nil) != tc.ok || (err != nil && !errors.Is(err, build.ErrInvalid)) {
			t.Errorf("CheckURL(%q) = %v, want ok %v", tc.url, err, tc.ok)
		}
	}
}

// received is one request a receiver got.
type received struct {
	header http.Header
	body   []byte
}

// receiver is a webhook endpoint on 127.0.0.1 answering with answer.
type receiver struct {
	srv *httptest.Server
	mu  sync.Mutex
	got []received
	// answer decides the status (default 200).
	answer func(n int) int
	newReq chan struct{}
}

func newReceiver(t *testing.T, answer func(n int) int) *receiver {
	r := &receiver{answer: answer, newReq: make(chan struct{}, 100)}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		r.got = append(r.got, received{header: req.Header.Clone(), body: body})
		n := len(r.got)
		r.mu.Unlock()
		r.newReq <- struct{}{}
		status := http.StatusOK
		if r.answer != nil {
			status = r.answer(n)
		}
		w.WriteHeader(status)
		_, _ = io.WriteString(w, strings.Repeat("x\x00\n", 100000)) // a large, binary answer
	}))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *receiver) requests() []received {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]received(nil), r.got...)
}

// waitFor waits until cond holds (polling), failing the test after 20 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

type counts struct {
	mu sync.Mutex
	n  map[string]int
}

func (c *counts) WebhookDelivery(result string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n == nil {
		c.n = map[string]int{}
	}
	c.n[result]++
}

func (c *counts) get(result string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[result]
}

// setup runs a Deliverer over a fake stream and store, with loopback
// allowed, and returns them.
type fixture struct {
	stream *buildtest.FakeStream
	store  *buildtest.FakeWebhooks
	obs    *counts
}

func setup(t *testing.T, cfg webhooks.Config, subs ...build.Subscription) fixture {
	t.Helper()
	f := fixture{stream: buildtest.NewStream(), store: buildtest.NewWebhooks(time.Now), obs: &counts{}}
	for _, s := range subs {
		if err := f.store.CreateSubscription(t.Context(), s); err != nil {
			t.Fatal(err)
		}
	}
	if cfg.Policy.Allow == nil {
		cfg.Policy = webhooks.Policy{AllowHTTP: true, Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}}
	}
	d, err := webhooks.New(cfg, webhooks.Deps{Events: f.stream, Store: f.store, Observer: f.obs,
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	// The group starts at the end of the stream: make it exist first.
	done, cancel := context.WithCancel(t.Context())
	cancel()
	_ = f.stream.Consume(done, webhooks.Group, func(context.Context, build.Event) error { return errors.New("unused") })
	ctx, stop := context.WithCancel(context.Background())
	ended := make(chan struct{})
	go func() {
		defer close(ended)
		_ = d.Run(ctx)
	}()
	t.Cleanup(func() {
		stop()
		<-ended
	})
	return f
}

func sub(n int, url string) build.Subscription {
	return build.Subscription{ID: build.NewSubscriptionID(), URL: url, Secret: "a-secret-of-16-bytes-or-more-" + string(rune('a'+n)),
		CreatedAt: time.Now()}
}

// publish publishes the events of a build that went queued → started →
// succeeded (of team/project) and returns them.
func publish(t *testing.T, s *buildtest.FakeStream, team, project string) []build.Event {
	t.Helper()
	now := time.Now()
	r := build.Record{BuildID: build.NewID(now), Team: team, Project: project, Ref: "main", Status: build.StatusQueued, QueuedAt: now}
	var evs []build.Event
	for v, st := range []build.Status{build.StatusQueued, build.StatusRunning, build.StatusSucceeded} {
		r.Status = st
		e := build.NewEvent(r, v+1, now)
		e.Source = "http://decap.test"
		m, err := events.Message(e)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Publish("build-events", m); err != nil {
			t.Fatal(err)
		}
		evs = append(evs, e)
	}
	return evs
}

func TestDeliversSignedInOrder(t *testing.T) {
	t.Parallel()
	rcv := newReceiver(t, nil)
	s := sub(1, rcv.srv.URL+"/hook?x=1")
	f := setup(t, webhooks.Config{}, s)
	evs := publish(t, f.stream, "ae6rt", "lab")
	waitFor(t, "three deliveries", func() bool { return len(rcv.requests()) >= 3 })
	got := rcv.requests()
	if len(got) != 3 {
		t.Fatalf("receiver got %d requests, want 3", len(got))
	}
	for i, r := range got {
		e, err := build.DecodeEvent(r.body)
		if err != nil {
			t.Fatalf("request %d: body is no event: %v", i, err)
		}
		if e.ID != evs[i].ID || e.Type != evs[i].Type {
			t.Errorf("request %d = %s %s, want %s %s (in order)", i, e.ID, e.Type, evs[i].ID, evs[i].Type)
		}
		if sig := r.header.Get(webhooks.HeaderSignature); !webhooks.Verify(s.Secret, r.body, sig) {
			t.Errorf("request %d: signature %q does not verify", i, sig)
		}
		if h := r.header.Get(webhooks.HeaderEvent); h != string(evs[i].Type) {
			t.Errorf("request %d: %s = %q, want %q", i, webhooks.HeaderEvent, h, evs[i].Type)
		}
		if h := r.header.Get(webhooks.HeaderDelivery); h != evs[i].ID {
			t.Errorf("request %d: %s = %q, want %q", i, webhooks.HeaderDelivery, h, evs[i].ID)
		}
		if ct := r.header.Get("Content-Type"); ct != build.EventContentType {
			t.Errorf("request %d: Content-Type = %q", i, ct)
		}
	}
	waitFor(t, "three counted", func() bool { return f.obs.get(webhooks.ResultDelivered) == 3 })
	list, _ := f.store.Deliveries(t.Context(), s.ID, 10)
	for _, d := range list {
		if d.State != build.DeliveryDelivered || d.Attempts != 1 {
			t.Errorf("delivery %s: %s after %d attempts, want delivered after 1", d.EventID, d.State, d.Attempts)
		}
	}
}

func TestFilters(t *testing.T) {
	t.Parallel()
	succeeded, team, project, all := newReceiver(t, nil), newReceiver(t, nil), newReceiver(t, nil), newReceiver(t, nil)
	sSucceeded := sub(1, succeeded.srv.URL)
	sSucceeded.Types = []build.EventType{build.EventSucceeded, build.EventFailed}
	sTeam := sub(2, team.srv.URL)
	sTeam.Team = "other"
	sProject := sub(3, project.srv.URL)
	sProject.Team, sProject.Project = "ae6rt", "lab"
	f := setup(t, webhooks.Config{}, sSucceeded, sTeam, sProject, sub(4, all.srv.URL))
	publish(t, f.stream, "ae6rt", "lab")
	publish(t, f.stream, "ae6rt", "other-project")
	publish(t, f.stream, "other", "x")
	waitFor(t, "every event at the catch-all", func() bool { return len(all.requests()) == 9 })
	waitFor(t, "the filtered ones", func() bool {
		return len(succeeded.requests()) == 3 && len(team.requests()) == 3 && len(project.requests()) == 3
	})
	for _, r := range succeeded.requests() {
		if h := r.header.Get(webhooks.HeaderEvent); h != string(build.EventSucceeded) {
			t.Errorf("types filter let %s through", h)
		}
	}
	for _, r := range team.requests() {
		if e, _ := build.DecodeEvent(r.body); e.Record.Team != "other" {
			t.Errorf("team filter let %s/%s through", e.Record.Team, e.Record.Project)
		}
	}
	for _, r := range project.requests() {
		if e, _ := build.DecodeEvent(r.body); e.Record.Project != "lab" {
			t.Errorf("project filter let %s/%s through", e.Record.Team, e.Record.Project)
		}
	}
	time.Sleep(100 * time.Millisecond) // nothing more comes
	if n := len(succeeded.requests()) + len(team.requests()) + len(project.requests()); n != 9 {
		t.Errorf("filtered receivers got %d requests, want 9", n)
	}
}

func TestRetriesThenDeadLetters(t *testing.T) {
	t.Parallel()
	// Fails the first event's three attempts, then answers 204.
	rcv := newReceiver(t, func(n int) int {
		if n <= 3 {
			return http.StatusBadGateway
		}
		return http.StatusNoContent
	})
	s := sub(1, rcv.srv.URL)
	f := setup(t, webhooks.Config{Attempts: 3, RetryBase: 20 * time.Millisecond}, s)
	evs := publish(t, f.stream, "ae6rt", "lab")
	waitFor(t, "the other two delivered", func() bool { return f.obs.get(webhooks.ResultDelivered) == 2 })
	if r, d := f.obs.get(webhooks.ResultRetried), f.obs.get(webhooks.ResultDeadLettered); r != 2 || d != 1 {
		t.Errorf("retried %d, dead-lettered %d; want 2 and 1", r, d)
	}
	got := rcv.requests()
	var ids []string
	for _, r := range got {
		ids = append(ids, r.header.Get(webhooks.HeaderDelivery))
	}
	want := []string{evs[0].ID, evs[0].ID, evs[0].ID, evs[1].ID, evs[2].ID}
	if strings.Join(ids, " ") != strings.Join(want, " ") {
		t.Errorf("receiver got %v, want %v (the same delivery ID on each attempt, then the rest in order)", ids, want)
	}
	list, _ := f.store.Deliveries(t.Context(), s.ID, 10)
	dead := list[len(list)-1]
	if dead.EventID != evs[0].ID || dead.State != build.DeliveryDead || dead.Attempts != 3 || !strings.HasPrefix(dead.LastError, "HTTP 502: x x x") {
		t.Errorf("first delivery = %s %s after %d attempts, reason %q; want dead after 3 with the answer, printable", dead.EventID, dead.State, dead.Attempts, dead.LastError)
	}
	if len(dead.LastError) > build.MaxDeliveryReason {
		t.Errorf("reason is %d bytes, more than %d", len(dead.LastError), build.MaxDeliveryReason)
	}
}

func TestRefusedAddressIsDeadAtOnce(t *testing.T) {
	t.Parallel()
	rcv := newReceiver(t, nil)
	// A name (so CheckURL at creation could not see the address) that
	// resolves to loopback, which this policy refuses: the dial refuses.
	port := rcv.srv.URL[strings.LastIndex(rcv.srv.URL, ":"):]
	s := sub(1, "http://localhost"+port+"/hook")
	policy := webhooks.Policy{AllowHTTP: true, Allow: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}}
	f := setup(t, webhooks.Config{Policy: policy, RetryBase: time.Hour}, s)
	publish(t, f.stream, "ae6rt", "lab")
	waitFor(t, "three dead letters", func() bool { return f.obs.get(webhooks.ResultDeadLettered) == 3 })
	if n := len(rcv.requests()); n != 0 {
		t.Errorf("a refused address got %d requests", n)
	}
	list, _ := f.store.Deliveries(t.Context(), s.ID, 10)
	for _, d := range list {
		if d.Attempts != 1 || !strings.Contains(d.LastError, "refused by the webhook policy") || strings.Contains(d.LastError, "localhost") {
			t.Errorf("delivery %s: %d attempts, reason %q; want refused at the first, the URL not repeated", d.EventID, d.Attempts, d.LastError)
		}
	}
}

func TestRedirectIsNotFollowed(t *testing.T) {
	t.Parallel()
	target := newReceiver(t, nil)
	redirect := httptest.NewServer(http.RedirectHandler(target.srv.URL, http.StatusTemporaryRedirect))
	t.Cleanup(redirect.Close)
	f := setup(t, webhooks.Config{Attempts: 1}, sub(1, redirect.URL))
	publish(t, f.stream, "ae6rt", "lab")
	waitFor(t, "three dead letters", func() bool { return f.obs.get(webhooks.ResultDeadLettered) == 3 })
	if n := len(target.requests()); n != 0 {
		t.Errorf("the redirect's target got %d requests", n)
	}
}

func TestSlowEndpointHoldsNobodyElse(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(func() {
		close(release)
		slow.Close()
	})
	fast := newReceiver(t, nil)
	f := setup(t, webhooks.Config{Timeout: time.Minute}, sub(1, slow.URL), sub(2, fast.srv.URL))
	publish(t, f.stream, "ae6rt", "lab")
	publish(t, f.stream, "ae6rt", "lab")
	// The slow endpoint holds its first delivery for up to a minute; the
	// fast one gets all six meanwhile, so the stream moved on.
	waitFor(t, "the fast receiver's six", func() bool { return len(fast.requests()) == 6 })
}

// TestREADMESignatureExample: the README's shell check of a signature
// (openssl dgst -hmac) agrees with Sign, on the README's own example.
func TestREADMESignatureExample(t *testing.T) {
	t.Parallel()
	const (
		secret = "0123456789abcdef0123456789abcdef"
		body   = `{"specversion":"1.0","id":"example:1"}`
		readme = "sha256=8d6082f9036fcf4a389110ed49f1c98f0e8fa395e5b150b7a6dc9bcfc2da7ab9"
	)
	if got := webhooks.Sign(secret, []byte(body)); got != readme {
		t.Errorf("Sign() = %s, the README shows %s", got, readme)
	}
}
