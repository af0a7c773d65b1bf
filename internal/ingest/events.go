package ingest

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/decap-ci/decap/internal/build"
)

// EventTail is the build-event stream as GET /api/v1/events reads it: the
// Tail of build.EventStream. Tail returns the events published from now
// on until ctx ends, and then closes the channel; it closes it early when
// the reader fell behind. An error wrapping errors.ErrUnsupported means
// the backend has no live stream (501); any other, that it cannot give
// one now (503: on aws, SQS or SNS refused the tail's queue).
type EventTail interface {
	Tail(ctx context.Context) (<-chan build.Event, error)
}

// Server-sent events (GET /api/v1/events).
const (
	// eventHeartbeat is how often an idle stream gets a comment line, so
	// that proxies and the client see it alive.
	eventHeartbeat = 15 * time.Second
	// eventClientBuffer is how many events one stream may fall behind the
	// stream's tail before it is closed (the client reconnects and reads
	// the records again).
	eventClientBuffer = 64
	// eventRetryMillis is the reconnection delay the stream asks of an
	// EventSource.
	eventRetryMillis = 3000
)

// buildEvents streams the build events as server-sent events until the
// client leaves, Limits.FollowFor passes, or the stream falls behind (then
// it ends: the client reconnects and reloads). ?project=team/project and
// ?build=<id> keep only that project's or that build's events. Each event
// is "id: <event id>", "event: <type>", "data: <the CloudEvent, JSON>".
// The streams open at once are bounded as log follows are, by a limiter of
// their own with the same limits (Limits.Followers, ClientFollowers).
func (s *Server) buildEvents(c echo.Context) error {
	keep, err := eventFilter(c)
	if err != nil {
		return err
	}
	if s.deps.Events == nil {
		return echo.NewHTTPError(http.StatusNotImplemented, "this backend has no build event stream yet: poll /api/v1/builds")
	}
	release, err := s.edge.eventStreams.acquire(clientKey(c), 1)
	if err != nil {
		return s.tooMany(c, err, "event streams", RejectEventsClient, RejectEventsServer)
	}
	defer release()
	sub, err := s.edge.events.join()
	switch {
	case errors.Is(err, errors.ErrUnsupported):
		return &publicError{status: http.StatusNotImplemented, msg: "this backend has no live build event stream yet: poll /api/v1/builds", cause: err}
	case err != nil:
		// On aws SQS or SNS refused the tail's queue (build.ErrUnavailable);
		// on the embedded backend the store failed for a moment.
		return &publicError{status: http.StatusServiceUnavailable, msg: "the live build event stream is not available: poll /api/v1/builds", cause: err}
	}
	defer s.edge.events.leave(sub)
	s.obs.EventClients(1)
	defer s.obs.EventClients(-1)

	ctx, cancel := context.WithTimeout(c.Request().Context(), s.edge.limits.FollowFor)
	defer cancel()
	w := c.Response()
	rc := http.NewResponseController(w)
	h := w.Header()
	h.Set(echo.HeaderContentType, "text/event-stream; charset=utf-8")
	h.Set(echo.HeaderCacheControl, "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	// A proxy that buffers (nginx) would hold the events back.
	h.Set("X-Accel-Buffering", "no")
	s.extendWrite(rc)
	w.WriteHeader(http.StatusOK)
	if _, err := fmt.Fprintf(w, "retry: %d\n: decap build events\n\n", eventRetryMillis); err != nil {
		return nil
	}
	if err := rc.Flush(); err != nil {
		return nil // the client went away
	}
	beat := time.NewTicker(eventHeartbeat)
	defer beat.Stop()
	for {
		var msg []byte
		select {
		case <-ctx.Done():
			return nil // the client went away, or FollowFor passed: it reconnects
		case <-beat.C:
			msg = []byte(": heartbeat\n\n")
		case e, ok := <-sub.c:
			if !ok {
				return nil // fell behind: the client reconnects and reloads
			}
			if !keep(e) {
				continue
			}
			if msg, err = s.sseEvent(e); err != nil {
				s.log.Warn("leave out a build event the stream cannot encode", "event_id", e.ID, "err", err)
				continue
			}
		}
		s.extendWrite(rc)
		if _, err := w.Write(msg); err != nil {
			return nil
		}
		if err := rc.Flush(); err != nil {
			return nil
		}
	}
}

// sseEvent returns e as one server-sent event. The record is the one the
// API shows (no pod names where builds run no Pods).
func (s *Server) sseEvent(e build.Event) ([]byte, error) {
	if s.cfg.NoPodNames {
		e.Record.PodName = ""
	}
	body, err := build.EncodeEvent(e)
	if err != nil {
		return nil, err
	}
	// An event ID or type never holds a line break (EncodeEvent checked
	// both), and JSON escapes those of its strings.
	var b strings.Builder
	b.Grow(len(body) + len(e.ID) + len(e.Type) + 32)
	b.WriteString("id: ")
	b.WriteString(e.ID)
	b.WriteString("\nevent: ")
	b.WriteString(string(e.Type))
	b.WriteString("\ndata: ")
	b.Write(body)
	b.WriteString("\n\n")
	return []byte(b.String()), nil
}

// eventFilter reads ?project=team/project and ?build=<id>: the events a
// stream keeps. Neither: every event.
func eventFilter(c echo.Context) (func(build.Event) bool, error) {
	var team, project string
	if p := c.QueryParam("project"); p != "" {
		var ok bool
		if team, project, ok = strings.Cut(p, "/"); !ok {
			return nil, fmt.Errorf("%w: project must be team/project", build.ErrInvalid)
		}
		if err := build.ValidateName("team", team); err != nil {
			return nil, err
		}
		if err := build.ValidateName("project", project); err != nil {
			return nil, err
		}
	}
	var id build.ID
	if v := c.QueryParam("build"); v != "" {
		var err error
		if id, err = build.ParseID(v); err != nil {
			return nil, err
		}
	}
	return func(e build.Event) bool {
		return (team == "" || e.Record.Team == team && e.Record.Project == project) && (id == "" || e.Subject == id)
	}, nil
}

// eventHub shares one tail of the event stream among every client of GET
// /api/v1/events: the tail starts with the first client and stops when
// the last leaves, so the stream is read once however many listen. A
// client whose buffer is full is dropped (its channel closed); when the
// tail itself ends early (it fell behind), every client is.
type eventHub struct {
	tail EventTail

	mu   sync.Mutex
	subs map[*eventSub]bool
	run  *tailRun // nil: no tail running
}

// eventSub is one client: the events for it, closed when it is dropped.
type eventSub struct{ c chan build.Event }

// tailRun is one tail of the stream.
type tailRun struct{ stop context.CancelFunc }

func newEventHub(tail EventTail) *eventHub {
	return &eventHub{tail: tail, subs: map[*eventSub]bool{}}
}

// join adds a client, starting the tail if it is the first; the caller
// must leave. It fails when the tail cannot start.
func (h *eventHub) join() (*eventSub, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.run == nil {
		ctx, cancel := context.WithCancel(context.Background())
		c, err := h.tail.Tail(ctx)
		if err != nil {
			cancel()
			return nil, fmt.Errorf("tail the build events: %w", err)
		}
		h.run = &tailRun{stop: cancel}
		go h.fanOut(h.run, c)
	}
	sub := &eventSub{c: make(chan build.Event, eventClientBuffer)}
	h.subs[sub] = true
	return sub, nil
}

// leave removes a client; the last one stops the tail.
func (h *eventHub) leave(sub *eventSub) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.subs, sub)
	if len(h.subs) == 0 && h.run != nil {
		h.run.stop()
		h.run = nil
	}
}

// fanOut hands run's events to every client until its channel closes.
// When it closes while run is still the hub's tail, it fell behind: every
// client is dropped, and the next to join starts a new tail.
func (h *eventHub) fanOut(run *tailRun, c <-chan build.Event) {
	for e := range c {
		h.mu.Lock()
		if h.run != run {
			h.mu.Unlock()
			continue // stopped: what it still holds is for nobody
		}
		for sub := range h.subs {
			select {
			case sub.c <- e:
			default:
				delete(h.subs, sub)
				close(sub.c)
			}
		}
		h.mu.Unlock()
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.run != run {
		return // stopped by the last leave
	}
	run.stop()
	h.run = nil
	for sub := range h.subs {
		delete(h.subs, sub)
		close(sub.c)
	}
}
