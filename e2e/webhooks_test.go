package e2e_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/decap-ci/decap/internal/build"
	"github.com/decap-ci/decap/internal/proctest"
	"github.com/decap-ci/decap/internal/webhooks"
)

// hookReceiver is an outgoing webhook's endpoint on 127.0.0.1 that keeps
// the events it got, checking each signature; it can go down and come
// back up on the same address.
type hookReceiver struct {
	t      *testing.T
	secret string
	addr   string

	mu     sync.Mutex
	srv    *http.Server
	events []build.Event
	bad    []string
}

func newHookReceiver(t *testing.T, secret string) *hookReceiver {
	r := &hookReceiver{t: t, secret: secret}
	r.up()
	t.Cleanup(r.down)
	return r
}

func (r *hookReceiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(io.LimitReader(req.Body, 1<<20))
	r.mu.Lock()
	defer r.mu.Unlock()
	e, err := build.DecodeEvent(body)
	switch {
	case !webhooks.Verify(r.secret, body, req.Header.Get(webhooks.HeaderSignature)):
		r.bad = append(r.bad, "bad signature "+req.Header.Get(webhooks.HeaderSignature))
	case err != nil:
		r.bad = append(r.bad, "not an event: "+err.Error())
	case req.Header.Get(webhooks.HeaderDelivery) != e.ID || req.Header.Get(webhooks.HeaderEvent) != string(e.Type):
		r.bad = append(r.bad, "headers disagree with the event "+e.ID)
	default:
		r.events = append(r.events, e)
	}
	w.WriteHeader(http.StatusNoContent)
}

// up listens (again) on the receiver's address.
func (r *hookReceiver) up() {
	r.t.Helper()
	addr := r.addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	var ln net.Listener
	var err error
	for range 50 { // the port was ours a moment ago
		if ln, err = net.Listen("tcp", addr); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		r.t.Fatalf("receiver listen on %s: %v", addr, err)
	}
	r.mu.Lock()
	r.addr = ln.Addr().String()
	r.srv = &http.Server{Handler: r, ReadHeaderTimeout: 5 * time.Second}
	srv := r.srv
	r.mu.Unlock()
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			r.t.Errorf("receiver: %v", err)
		}
	}()
}

// down closes the listener and every connection: the endpoint is gone.
func (r *hookReceiver) down() {
	r.mu.Lock()
	srv := r.srv
	r.mu.Unlock()
	if srv != nil {
		_ = srv.Close()
	}
}

// of returns the events received of build id, in the order received.
func (r *hookReceiver) of(id string) []build.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []build.Event
	for _, e := range r.events {
		if string(e.Subject) == id {
			out = append(out, e)
		}
	}
	return out
}

// checkLife checks that evs (one build's, as received) are in version
// order and go queued → started → succeeded, each change once (a
// redelivery repeats an ID, never goes back).
func checkLife(t *testing.T, id string, evs []build.Event) {
	t.Helper()
	var types []build.EventType
	last := 0
	for _, e := range evs {
		if e.Version < last {
			t.Errorf("build %s: event %s came after version %d (out of order)", id, e.ID, last)
		}
		if e.Version == last {
			continue // delivered again: allowed, at least once
		}
		last = e.Version
		if n := len(types); n == 0 || types[n-1] != e.Type {
			types = append(types, e.Type)
		}
	}
	want := []build.EventType{build.EventQueued, build.EventStarted, build.EventSucceeded}
	if len(types) != len(want) || types[0] != want[0] || types[1] != want[1] || types[2] != want[2] {
		t.Errorf("build %s: the receiver saw %v, want %v", id, types, want)
	}
}

// TestOutgoingWebhooks: a subscription made through the API receives a
// pushed build's events, signed, in order, queued → started → succeeded;
// while its endpoint is down for 10 s a second build runs, and once it is
// back the endpoint gets every one of that build's events too, in order.
func TestOutgoingWebhooks(t *testing.T) {
	t.Parallel()
	s := newScripts(t)
	s.addTraced("e2e", "hooked", 0)
	rcv := newHookReceiver(t, hookSecret)
	c := newCluster(t, proctest.Options{Scripts: s.dir, Trace: s.trace, Cap: 2, Env: hookEnv})
	c.Start("reaper")
	c.Start("dispatcher")
	c.Start("ingest")
	checkOutgoingWebhooks(t, c, rcv)
}

// TestAWSOutgoingWebhooks is TestOutgoingWebhooks on the AWS backend
// (moto): the deliverer consumes the SNS topic through its group's SQS
// queue, and keeps subscriptions and deliveries in the builds table.
func TestAWSOutgoingWebhooks(t *testing.T) {
	t.Parallel()
	w := newAWSWorld(t)
	s := newScripts(t)
	s.addTraced("e2e", "hooked", 0)
	rcv := newHookReceiver(t, hookSecret)
	c := w.cluster(proctest.Options{Scripts: s.dir, Trace: s.trace, Cap: 2, Env: hookEnv})
	c.Start("reaper")
	c.Start("dispatcher")
	c.Start("ingest")
	checkOutgoingWebhooks(t, c, rcv)
}

const hookSecret = "e2e-webhook-secret-0123456789"

// hookEnv lets the services deliver to a receiver on loopback, over http
// (allowed here only), and retry after 1 s, 2 s, 4 s, … up to 10 times.
var hookEnv = []string{
	"DECAP_OUTGOING_WEBHOOKS_ALLOW_HTTP=true", "DECAP_OUTGOING_WEBHOOKS_ALLOW_NETWORKS=127.0.0.0/8",
	"DECAP_OUTGOING_WEBHOOKS_RETRY_BASE=1s", "DECAP_OUTGOING_WEBHOOKS_ATTEMPTS=10",
}

// checkOutgoingWebhooks subscribes rcv to c's builds of team e2e and
// checks two builds of e2e/hooked reach it, the second while it is down
// for 10 s.
func checkOutgoingWebhooks(t *testing.T, c *proctest.Cluster, rcv *hookReceiver) {
	t.Helper()
	const secret = hookSecret
	req, _ := json.Marshal(map[string]any{"url": "http://" + rcv.addr + "/decap", "secret": secret,
		"types": []string{"io.decap.build.queued", "io.decap.build.started", "io.decap.build.succeeded"}, "team": "e2e"})
	status, body := c.MustDo(http.MethodPost, "/api/v1/subscriptions", http.Header{"Content-Type": {"application/json"}}, req)
	var sub struct {
		ID string `json:"id"`
	}
	if status != http.StatusCreated || json.Unmarshal(body, &sub) != nil || sub.ID == "" {
		t.Fatalf("create subscription: %d %s", status, body)
	}

	first := c.Push("e2e", "hooked", "main")
	c.WaitSucceeded(first)
	c.WaitFor(proctest.BuildTimeout, "the first build's succeeded event at the receiver", func() (bool, string) {
		evs := rcv.of(first)
		return len(evs) > 0 && evs[len(evs)-1].Type == build.EventSucceeded, fmt.Sprintf("%d events", len(evs))
	})
	checkLife(t, first, rcv.of(first))

	rcv.down()
	downAt := time.Now()
	second := c.Push("e2e", "hooked", "main")
	c.WaitSucceeded(second)
	time.Sleep(time.Until(downAt.Add(10 * time.Second)))
	if n := len(rcv.of(second)); n != 0 {
		t.Fatalf("a receiver that is down got %d events", n)
	}
	rcv.up()
	c.WaitFor(proctest.BuildTimeout, "the second build's events after the receiver came back", func() (bool, string) {
		evs := rcv.of(second)
		return len(evs) > 0 && evs[len(evs)-1].Type == build.EventSucceeded, fmt.Sprintf("%d events", len(evs))
	})
	checkLife(t, second, rcv.of(second))
	rcv.mu.Lock()
	if len(rcv.bad) > 0 {
		t.Errorf("the receiver refused requests: %v", rcv.bad)
	}
	rcv.mu.Unlock()

	// The API lists the deliveries, every one delivered. The deliverer
	// settles a delivery once the receiver has answered, a moment after
	// the receiver recorded the event: wait for that first.
	var ds struct {
		Deliveries []struct {
			EventID  string `json:"eventId"`
			State    string `json:"state"`
			Attempts int    `json:"attempts"`
		} `json:"deliveries"`
	}
	c.WaitFor(proctest.BuildTimeout, "every delivery settled", func() (bool, string) {
		status, body = c.MustDo(http.MethodGet, "/api/v1/subscriptions/"+sub.ID+"/deliveries", nil, nil)
		ds.Deliveries = nil
		if status != http.StatusOK || json.Unmarshal(body, &ds) != nil || len(ds.Deliveries) < 6 {
			t.Fatalf("deliveries: %d %s", status, body)
		}
		for _, d := range ds.Deliveries {
			if d.State == "pending" {
				return false, "delivery " + d.EventID + " pending"
			}
		}
		return true, ""
	})
	retried := false
	for _, d := range ds.Deliveries {
		if d.State != "delivered" {
			t.Errorf("delivery %s is %s, want delivered", d.EventID, d.State)
		}
		retried = retried || d.Attempts > 1
	}
	if !retried {
		t.Errorf("no delivery took more than one attempt though the receiver was down: %s", body)
	}
}
