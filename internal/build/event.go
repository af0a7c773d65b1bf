package build

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"time"
)

// Build events. Every change of a build record is one Event (DESIGN.md,
// "Build events", invariant 7): the Records store that writes the change
// writes the event in the same store write (its outbox, EventOutbox), a
// forwarder publishes it to the event stream, and Decap's consumers and
// other systems read it from there (EventStream), at least once and in
// order per build.
//
// On the wire an event is a CloudEvents 1.0 event in JSON structured mode
// (EncodeEvent): id "<buildId>:<version>", source DECAP_PUBLIC_URL, type
// io.decap.build.<status> (or io.decap.build.retried), subject the build
// ID, time of the change, the extension recordversion, and data the record.

// EventType is a build event's CloudEvents type.
type EventType string

// EventTypePrefix starts every build event's type.
const EventTypePrefix = "io.decap.build."

// Event types: one per status (a record that became or stayed running is
// "started"), and "retried" for the creation of a retry's record (a new
// attempt of a build that failed by infrastructure, RetryOf set).
const (
	EventQueued     EventType = EventTypePrefix + "queued"
	EventDeferred   EventType = EventTypePrefix + "deferred"
	EventStarted    EventType = EventTypePrefix + "started"
	EventSucceeded  EventType = EventTypePrefix + "succeeded"
	EventFailed     EventType = EventTypePrefix + "failed"
	EventTimedOut   EventType = EventTypePrefix + "timed_out"
	EventCancelled  EventType = EventTypePrefix + "cancelled"
	EventSuperseded EventType = EventTypePrefix + "superseded"
	EventErrored    EventType = EventTypePrefix + "errored"
	EventExpired    EventType = EventTypePrefix + "expired"
	EventSkipped    EventType = EventTypePrefix + "skipped"
	EventRetried    EventType = EventTypePrefix + "retried"
)

// EventTypes lists every event type, in the order of a build's life.
var EventTypes = []EventType{EventQueued, EventRetried, EventDeferred, EventStarted, EventSucceeded, EventFailed,
	EventTimedOut, EventCancelled, EventSuperseded, EventErrored, EventExpired, EventSkipped}

// Valid reports whether t is one of EventTypes.
func (t EventType) Valid() bool {
	for _, v := range EventTypes {
		if t == v {
			return true
		}
	}
	return false
}

// EventTypeOf returns the type of the event of a change that left the
// record as r: created tells whether the change created the record. The
// creation of a waiting retry (RetryOf set) is "retried"; every other
// change is its status's type, running being "started". A change that
// keeps the status (a new deferral, a launch claim, a cancel request)
// repeats the status's type: the record in the event tells what changed.
func EventTypeOf(r Record, created bool) EventType {
	switch {
	case created && r.RetryOf != "" && r.Waiting():
		return EventRetried
	case r.Status == StatusRunning:
		return EventStarted
	}
	return EventType(EventTypePrefix + string(r.Status))
}

// Event is one change of a build record.
type Event struct {
	// ID is EventID(Subject, Version): unique per change, the same every
	// time the change is delivered.
	ID string
	// Source is the Decap that made the event (DECAP_PUBLIC_URL). The
	// store leaves it empty; the forwarder sets it before it publishes.
	Source string
	Type   EventType
	// Subject is the build ID.
	Subject ID
	// Time is when the change was written.
	Time time.Time
	// Version counts the record's changes: 1 for its creation, one more
	// for every change since. A build's events are delivered in Version
	// order; a consumer that sees a Version it has seen (or an older one)
	// sees an event again.
	Version int
	// Record is the record as the change left it (data).
	Record Record
}

// EventID returns the ID of the event of version version of build id:
// "<id>:<version>".
func EventID(id ID, version int) string { return string(id) + ":" + strconv.Itoa(version) }

// NewEvent returns the event of the change that left the record as r, its
// version-th, written at now (Source empty; see Event). A store calls it
// in the write that makes the change.
func NewEvent(r Record, version int, now time.Time) Event {
	return Event{ID: EventID(r.BuildID, version), Type: EventTypeOf(r, version == 1), Subject: r.BuildID,
		Time: now.UTC(), Version: version, Record: r}
}

// SameRecord reports whether writing r over stored changes nothing a
// reader sees: the same fields, times compared as instants, empty and nil
// lists alike. The store's own Number is not compared (a Save's is
// ignored). A store writes no event, and may skip the write, when it is
// the same record: a redelivered or repeated change mints no second event.
func SameRecord(stored, r Record) bool {
	a, b := normalize(stored), normalize(r)
	return reflect.DeepEqual(a, b)
}

// normalize returns r with its times in UTC (no monotonic reading), empty
// lists nil, and no Number.
func normalize(r Record) Record {
	r = r.Clone()
	r.Number = 0
	for _, t := range []*time.Time{&r.QueuedAt, &r.StartedAt, &r.FinishedAt, &r.NextAttemptAt,
		&r.CancelRequestedAt, &r.LaunchingAt} {
		if t.IsZero() {
			*t = time.Time{}
		} else {
			*t = t.UTC()
		}
	}
	if len(r.Secrets) == 0 {
		r.Secrets = nil
	}
	return r
}

// CloudEvents attributes of a build event in JSON structured mode.
const (
	eventSpecVersion     = "1.0"
	eventDataContentType = "application/json"
	// EventContentType is the media type of an event in JSON structured
	// mode (an HTTP body's Content-Type).
	EventContentType = "application/cloudevents+json"
)

// wireEvent is an Event as JSON structured-mode CloudEvents: the required
// attributes, subject, time, datacontenttype, the extension recordversion
// (an integer: Event.Version) and data. Its head, all but data, is encoded
// on its own (EncodeEventData); the JSON of the embedded struct's fields
// is the outer object's.
type wireEvent struct {
	wireHead
	Data json.RawMessage `json:"data"`
}

type wireHead struct {
	SpecVersion     string    `json:"specversion"`
	ID              string    `json:"id"`
	Source          string    `json:"source"`
	Type            EventType `json:"type"`
	Subject         ID        `json:"subject"`
	Time            time.Time `json:"time"`
	DataContentType string    `json:"datacontenttype"`
	RecordVersion   int       `json:"recordversion"`
}

// EncodeEvent returns e as a CloudEvents 1.0 event in JSON structured mode.
// An event without source, or whose ID, type, subject or version do not
// agree with its record, gives ErrInvalid.
func EncodeEvent(e Event) ([]byte, error) {
	data, err := json.Marshal(e.Record)
	if err != nil {
		return nil, fmt.Errorf("encode event %s: %w", e.ID, err)
	}
	return EncodeEventData(e, data)
}

// EncodeEventData is EncodeEvent with the record already encoded: data
// must be json.Marshal(e.Record), as a store keeps it. A store that writes
// the event in the change's own transaction spares itself a second
// encoding of the record under its write lock; data is not checked
// against the record, and of its JSON only that it starts and ends as an
// object does.
func EncodeEventData(e Event, data []byte) ([]byte, error) {
	if err := e.validate(); err != nil {
		return nil, err
	}
	if len(data) < 2 || data[0] != '{' || data[len(data)-1] != '}' {
		return nil, fmt.Errorf("%w: event %q data is not a JSON object", ErrInvalid, e.ID)
	}
	out, ok := appendHead(make([]byte, 0, 256+len(data)), e)
	if !ok {
		head, err := json.Marshal(wireHead{SpecVersion: eventSpecVersion, ID: e.ID, Source: e.Source, Type: e.Type,
			Subject: e.Subject, Time: e.Time.UTC(), DataContentType: eventDataContentType, RecordVersion: e.Version})
		if err != nil {
			return nil, fmt.Errorf("encode event %s: %w", e.ID, err)
		}
		out = append(out[:0], head[:len(head)-1]...) // without its closing brace
	}
	out = append(out, `,"data":`...)
	out = append(out, data...)
	return append(out, '}'), nil
}

// appendHead appends e's head to b as encoding/json writes wireHead, but
// its closing brace, without reflection (a store encodes events under its
// write lock): when the ID, source, type and subject are printable ASCII
// that JSON does not escape, and the time has a four-digit year. Else it
// returns b and false.
func appendHead(b []byte, e Event) ([]byte, bool) {
	t := e.Time.UTC()
	if y := t.Year(); y < 0 || y > 9999 || !plainJSON(e.ID) || !plainJSON(e.Source) || !plainJSON(string(e.Type)) ||
		!plainJSON(string(e.Subject)) {
		return b, false
	}
	b = append(b, `{"specversion":"`+eventSpecVersion+`","id":"`...)
	b = append(b, e.ID...)
	b = append(b, `","source":"`...)
	b = append(b, e.Source...)
	b = append(b, `","type":"`...)
	b = append(b, e.Type...)
	b = append(b, `","subject":"`...)
	b = append(b, e.Subject...)
	b = append(b, `","time":"`...)
	b = t.AppendFormat(b, time.RFC3339Nano) // time.Time's MarshalJSON
	b = append(b, `","datacontenttype":"`+eventDataContentType+`","recordversion":`...)
	return strconv.AppendInt(b, int64(e.Version), 10), true
}

// plainJSON reports whether s is a JSON string's content as encoding/json
// writes it: printable ASCII but the quote, the backslash and the HTML
// characters it escapes.
func plainJSON(s string) bool {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c < 0x20 || c > 0x7e, c == '"', c == '\\', c == '<', c == '>', c == '&':
			return false
		}
	}
	return true
}

// DecodeEvent parses an event that EncodeEvent made. Anything else — not
// CloudEvents 1.0, another content type, attributes that disagree with
// each other or with the record — gives ErrInvalid; unknown attributes
// (extensions a relay added) are ignored.
func DecodeEvent(b []byte) (Event, error) {
	var w wireEvent
	if err := json.Unmarshal(b, &w); err != nil {
		return Event{}, fmt.Errorf("%w: event is not JSON: %v", ErrInvalid, err)
	}
	if w.SpecVersion != eventSpecVersion {
		return Event{}, fmt.Errorf("%w: event specversion %q, want %q", ErrInvalid, w.SpecVersion, eventSpecVersion)
	}
	if w.DataContentType != eventDataContentType {
		return Event{}, fmt.Errorf("%w: event datacontenttype %q, want %q", ErrInvalid, w.DataContentType, eventDataContentType)
	}
	e := Event{ID: w.ID, Source: w.Source, Type: w.Type, Subject: w.Subject, Time: w.Time.UTC(), Version: w.RecordVersion}
	dec := json.NewDecoder(bytes.NewReader(w.Data))
	if err := dec.Decode(&e.Record); err != nil {
		return Event{}, fmt.Errorf("%w: event %q data: %v", ErrInvalid, w.ID, err)
	}
	if err := e.validate(); err != nil {
		return Event{}, err
	}
	return e, nil
}

// ValidateEventSource checks an event source (DECAP_PUBLIC_URL): not empty,
// and a URI reference (no spaces or control characters). ErrInvalid if not.
func ValidateEventSource(source string) error {
	switch {
	case source == "":
		return fmt.Errorf("%w: event has no source", ErrInvalid)
	case strings.ContainsFunc(source, func(r rune) bool { return r <= ' ' || r == 0x7f }):
		return fmt.Errorf("%w: event source %q is not a URI reference", ErrInvalid, source)
	}
	return nil
}

// validate checks what every published event must satisfy.
func (e Event) validate() error {
	if err := ValidateEventSource(e.Source); err != nil {
		return fmt.Errorf("event %q: %w", e.ID, err)
	}
	switch {
	case e.Subject == "" || e.Subject != e.Record.BuildID:
		return fmt.Errorf("%w: event %q subject %q is not its record's build %q", ErrInvalid, e.ID, e.Subject, e.Record.BuildID)
	case e.Version < 1 || e.ID != EventID(e.Subject, e.Version):
		return fmt.Errorf("%w: event id %q is not %q", ErrInvalid, e.ID, EventID(e.Subject, e.Version))
	case !e.Type.Valid():
		return fmt.Errorf("%w: event %q has type %q", ErrInvalid, e.ID, e.Type)
	case e.Time.IsZero():
		return fmt.Errorf("%w: event %q has no time", ErrInvalid, e.ID)
	}
	return nil
}

// The event ports. Each has a stateful in-memory fake and a contract suite
// in buildtest (TestEventOutbox, TestEventStream) that the fake and every
// adapter pass.

// EventOutbox is where a Records store keeps the events of its changes,
// written in the same store write as the change, until a forwarder has
// published them to the stream: a crash between the write and the publish
// loses no event. Records stores that keep an outbox (every one Decap
// ships) give it through their Outbox method.
type EventOutbox interface {
	// Pending returns up to max events of the outbox (Source empty), each
	// build's in Version order and oldest builds first, waiting up to wait
	// for the first when there is none (it returns early when this
	// process writes one). For each build it returns only a run of
	// consecutive versions whose predecessor has left the outbox, so that
	// publishing them in the order given, and then calling Forwarded,
	// keeps every build's order however many forwarders run at once: an
	// event is published only after its predecessor was. Several
	// forwarders may get the same event; the stream drops the second
	// publish by its ID. When ctx ends during the wait, the error wraps
	// ctx.Err().
	Pending(ctx context.Context, max int, wait time.Duration) ([]Event, error)
	// Forwarded removes published events from the outbox (by ID and
	// subject). Removing one that is gone already is not an error.
	Forwarded(ctx context.Context, events ...Event) error
}

// EventHandler handles one event for a consumer group. nil acknowledges
// it; an error has it delivered again after a backoff, and the build's
// later events wait behind it. It is called with one event at a time per
// group in a process, so it should return promptly: a consumer that
// retries a slow endpoint for long keeps its group's other events waiting.
type EventHandler func(ctx context.Context, e Event) error

// EventStream is the build-event stream as Decap's own consumers read it
// (commit statuses, outgoing webhooks, the UI's live updates).
type EventStream interface {
	// Consume delivers the stream's events to handle for the durable
	// consumer group group until ctx ends, and then returns an error
	// wrapping ctx.Err(). Each group gets every event published after the
	// group first consumed (a new group starts at the end of the stream,
	// where the backend keeps history it may start earlier) at least once:
	// an event handle did not acknowledge, or whose acknowledgement a
	// crash lost, comes again. A build's events come in Version order. A
	// group's position survives restarts; several processes consuming one
	// group share its events. group is 1–64 of [a-z0-9-] (ErrInvalid
	// otherwise).
	Consume(ctx context.Context, group string, handle EventHandler) error
	// Tail returns the events published from now on, live, until ctx ends
	// (then the channel is closed): not durable, nothing is redelivered,
	// and a reader that falls behind by more than the backend's buffer
	// loses events (the channel is closed early; reconnect and read the
	// records). For server-sent events.
	Tail(ctx context.Context) (<-chan Event, error)
}

// ValidateConsumerGroup checks a consumer group name: 1–64 of [a-z0-9-],
// not starting with '-'. It must fit queue names and table keys.
func ValidateConsumerGroup(g string) error {
	if g == "" || len(g) > 64 || g[0] == '-' || strings.ContainsFunc(g, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-')
	}) {
		return fmt.Errorf("%w: consumer group %q is not 1-64 of [a-z0-9-]", ErrInvalid, g)
	}
	return nil
}
