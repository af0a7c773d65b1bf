package ingest_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/decap-ci/decap/internal/build"
	"github.com/decap-ci/decap/internal/buildtest"
	"github.com/decap-ci/decap/internal/events"
	"github.com/decap-ci/decap/internal/ingest"
)

// sse is one server-sent event as a client reads it.
type sse struct{ id, event, data string }

// sseReader reads server-sent events, skipping comments and retry lines.
type sseReader struct{ br *bufio.Reader }

// next returns the next event, or the error that ended the stream.
func (r sseReader) next() (sse, error) {
	var e sse
	for {
		line, err := r.br.ReadString('\n')
		if err != nil {
			return sse{}, err
		}
		line = strings.TrimSuffix(line, "\n")
		switch {
		case line == "":
			if e != (sse{}) {
				return e, nil
			}
		case strings.HasPrefix(line, "id: "):
			e.id = line[4:]
		case strings.HasPrefix(line, "event: "):
			e.event = line[7:]
		case strings.HasPrefix(line, "data: "):
			e.data = line[6:]
		}
	}
}

// openEvents opens GET path on srv with tok (none when empty) and returns
// the answer; the caller closes its body.
func openEvents(t *testing.T, srv *httptest.Server, path, tok string) *http.Response {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	t.Cleanup(cancel)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

// publish publishes the events of rec's changes to s, version after
// version from v.
func publish(t *testing.T, s *buildtest.FakeStream, v int, recs ...build.Record) {
	t.Helper()
	for i, r := range recs {
		e := build.NewEvent(r, v+i, r.QueuedAt)
		e.Source = "http://example.com"
		m, err := events.Message(e)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Publish("build-events", m); err != nil {
			t.Fatal(err)
		}
	}
}

func eventRecord(project string, at time.Time, status build.Status) build.Record {
	return build.Record{BuildID: build.NewID(at), Team: "decap-ci", Project: project, Ref: "main", RefType: build.Branch,
		Trigger: build.TriggerPush, Status: status, QueuedAt: at, PodName: "build-pod-name"}
}

// waitListening checks resp is an event stream and reads up to its first
// comment, which the server writes once it listens to the stream: what
// the test publishes next reaches it.
func waitListening(t *testing.T, resp *http.Response) sseReader {
	t.Helper()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET /api/v1/events: got %d %s, want 200", resp.StatusCode, b)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
		t.Errorf("Content-Type: got %q, want text/event-stream", ct)
	}
	// The server writes its first comment once it has joined the stream.
	br := bufio.NewReader(resp.Body)
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("read the stream's first lines: %v", err)
		}
		if strings.HasPrefix(line, ": ") {
			return sseReader{br}
		}
	}
}

// TestEventsStream: GET /api/v1/events sends every event of the stream,
// or those of a project or a build, as server-sent events whose id is the
// event's, whose event is its type and whose data is the CloudEvent (with
// no pod name where builds run no Pods).
func TestEventsStream(t *testing.T) {
	t.Parallel()
	stream := buildtest.NewStream()
	f := newFixtureDeps(t, func(c *ingest.Config) { c.NoPodNames = true }, func(d *ingest.Deps) { d.Events = stream })
	srv := httptest.NewServer(f.srv)
	t.Cleanup(srv.Close) // after the streams' bodies are closed (cleanups run last first)
	at := f.clock.Now()
	hello, other := eventRecord("hello", at, build.StatusQueued), eventRecord("other", at.Add(time.Second), build.StatusQueued)
	helloRunning := hello
	helloRunning.Status, helloRunning.StartedAt = build.StatusRunning, at.Add(2*time.Second)

	all := waitListening(t, openEvents(t, srv, "/api/v1/events", token))
	byProject := waitListening(t, openEvents(t, srv, "/api/v1/events?project=decap-ci/other", token))
	byBuild := waitListening(t, openEvents(t, srv, "/api/v1/events?build="+string(hello.BuildID), token))
	publish(t, stream, 1, hello)
	publish(t, stream, 1, other)
	publish(t, stream, 2, helloRunning)

	want := map[string][]string{
		"all":     {build.EventID(hello.BuildID, 1), build.EventID(other.BuildID, 1), build.EventID(hello.BuildID, 2)},
		"project": {build.EventID(other.BuildID, 1)},
		"build":   {build.EventID(hello.BuildID, 1), build.EventID(hello.BuildID, 2)},
	}
	for name, r := range map[string]sseReader{"all": all, "project": byProject, "build": byBuild} {
		for _, id := range want[name] {
			got, err := r.next()
			if err != nil {
				t.Fatalf("%s: read event %s: %v", name, id, err)
			}
			if got.id != id {
				t.Fatalf("%s: got event %q, want %q", name, got.id, id)
			}
			e, err := build.DecodeEvent([]byte(got.data))
			if err != nil {
				t.Fatalf("%s: data of %s is no CloudEvent: %v (%s)", name, id, err, got.data)
			}
			if got.event != string(e.Type) || e.ID != id {
				t.Errorf("%s: event %q with data of %s %s", name, got.event, e.ID, e.Type)
			}
			if e.Record.PodName != "" {
				t.Errorf("%s: event %s shows pod name %q under NoPodNames", name, id, e.Record.PodName)
			}
		}
	}
}

// TestEventsRefused: the stream needs a reader's credentials (unless
// reads are public), a well-formed filter, and a backend with a stream;
// a tail that cannot start is a 503.
func TestEventsRefused(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		path   string
		tok    string
		public bool
		events ingest.EventTail
		want   int
	}{
		{name: "no token", path: "/api/v1/events", events: buildtest.NewStream(), want: http.StatusUnauthorized},
		{name: "wrong token", path: "/api/v1/events", tok: "nope", events: buildtest.NewStream(), want: http.StatusUnauthorized},
		{name: "public reads", path: "/api/v1/events", public: true, events: buildtest.NewStream(), want: http.StatusOK},
		{name: "bad project", path: "/api/v1/events?project=decap-ci", tok: token, events: buildtest.NewStream(), want: http.StatusBadRequest},
		{name: "bad project name", path: "/api/v1/events?project=decap-ci/..%2F", tok: token, events: buildtest.NewStream(), want: http.StatusBadRequest},
		{name: "bad build", path: "/api/v1/events?build=../x", tok: token, events: buildtest.NewStream(), want: http.StatusBadRequest},
		{name: "no stream", path: "/api/v1/events", tok: token, want: http.StatusNotImplemented},
		{name: "stream not on this backend", path: "/api/v1/events", tok: token,
			events: failingTail{fmt.Errorf("tail build events: %w: not available on the aws backend yet", errors.ErrUnsupported)}, want: http.StatusNotImplemented},
		{name: "stream down", path: "/api/v1/events", tok: token, events: failingTail{errors.New("database is locked")}, want: http.StatusServiceUnavailable},
		{name: "no tail on aws", path: "/api/v1/events", tok: token,
			events: failingTail{fmt.Errorf("%w: the live tail of build events is not available on the aws backend yet", build.ErrUnavailable)}, want: http.StatusServiceUnavailable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := newFixtureDeps(t, func(c *ingest.Config) { c.ReadPublic = tt.public }, func(d *ingest.Deps) {
				if tt.events != nil {
					d.Events = tt.events
				}
			})
			srv := httptest.NewServer(f.srv)
			t.Cleanup(srv.Close) // after the stream's body is closed
			resp := openEvents(t, srv, tt.path, tt.tok)
			if resp.StatusCode != tt.want {
				b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<10))
				t.Fatalf("got %d %s, want %d", resp.StatusCode, b, tt.want)
			}
			if tt.want >= 500 {
				b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<10))
				if strings.Contains(string(b), "database is locked") || !strings.Contains(string(b), "event stream") {
					t.Errorf("answer %s: want a clear message without the cause", b)
				}
			}
		})
	}
}

type failingTail struct{ err error }

func (f failingTail) Tail(context.Context) (<-chan build.Event, error) { return nil, f.err }

// TestEventsBounded: event streams are bounded per client (429 beyond),
// and each lasts FollowFor at most.
func TestEventsBounded(t *testing.T) {
	t.Parallel()
	stream := buildtest.NewStream()
	f := newFixtureDeps(t, func(c *ingest.Config) {
		c.Limits.Followers, c.Limits.ClientFollowers, c.Limits.FollowFor = 2, 1, 300*time.Millisecond
	}, func(d *ingest.Deps) { d.Events = stream })
	srv := httptest.NewServer(f.srv)
	t.Cleanup(srv.Close) // after the streams' bodies are closed (cleanups run last first)
	first := waitListening(t, openEvents(t, srv, "/api/v1/events", token))
	if resp := openEvents(t, srv, "/api/v1/events", token); resp.StatusCode != http.StatusTooManyRequests {
		t.Errorf("second stream of one client: got %d, want 429", resp.StatusCode)
	} else if resp.Header.Get("Retry-After") == "" {
		t.Error("429 without Retry-After")
	}
	// FollowFor passes: the stream ends by itself, and its place is free.
	if _, err := first.next(); !errors.Is(err, io.EOF) {
		t.Fatalf("after FollowFor: got %v, want the stream's end", err)
	}
	waitListening(t, openEvents(t, srv, "/api/v1/events", token))
}

// TestEventsEndWhenTheTailFallsBehind: when the stream's tail ends early
// (it fell behind), every event stream ends, so that its clients reconnect
// and reload; the next client starts a new tail.
func TestEventsEndWhenTheTailFallsBehind(t *testing.T) {
	t.Parallel()
	tail := &closableTail{started: make(chan chan build.Event, 2)}
	f := newFixtureDeps(t, nil, func(d *ingest.Deps) { d.Events = tail })
	srv := httptest.NewServer(f.srv)
	t.Cleanup(srv.Close) // after the streams' bodies are closed (cleanups run last first)
	r := waitListening(t, openEvents(t, srv, "/api/v1/events", token))
	c := <-tail.started
	close(c) // fell behind
	if _, err := r.next(); !errors.Is(err, io.EOF) {
		t.Fatalf("after the tail fell behind: got %v, want the stream's end", err)
	}
	waitListening(t, openEvents(t, srv, "/api/v1/events", token))
	select {
	case <-tail.started:
	case <-time.After(10 * time.Second):
		t.Fatal("the next client started no new tail")
	}
}

// closableTail hands the test each tail's channel.
type closableTail struct{ started chan chan build.Event }

// Tail's channel is closed by the test, or never.
func (c *closableTail) Tail(ctx context.Context) (<-chan build.Event, error) {
	ch := make(chan build.Event)
	c.started <- ch
	return ch, nil
}
