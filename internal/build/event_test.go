package build_test

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/decap-ci/decap/internal/build"
)

func sampleEvent() build.Event {
	rec := build.RecordFor(sampleRequest())
	rec.Number = 42
	if err := rec.Start(rec.QueuedAt.Add(2*time.Second), "build-"+string(rec.BuildID), "abc123"); err != nil {
		panic(err)
	}
	e := build.NewEvent(rec, 2, rec.StartedAt.Add(time.Millisecond))
	e.Source = "https://decap.example.com"
	return e
}

func TestEncodeEventGolden(t *testing.T) {
	t.Parallel()
	e := sampleEvent()
	body, err := build.EncodeEvent(e)
	if err != nil {
		t.Fatal(err)
	}
	var pretty strings.Builder
	var v any
	if err := json.Unmarshal(body, &v); err != nil {
		t.Fatal(err)
	}
	enc := json.NewEncoder(&pretty)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		t.Fatal(err)
	}
	golden(t, "event-started.json", []byte(pretty.String()))

	back, err := build.DecodeEvent(body)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(e, back); diff != "" {
		t.Errorf("round trip (-want +got):\n%s", diff)
	}
	// The golden file, as another system would send it back, decodes too.
	if _, err := build.DecodeEvent([]byte(pretty.String())); err != nil {
		t.Errorf("DecodeEvent(golden) error = %v", err)
	}
}

func TestEventCloudEventsAttributes(t *testing.T) {
	t.Parallel()
	body, err := build.EncodeEvent(sampleEvent())
	if err != nil {
		t.Fatal(err)
	}
	var attrs map[string]any
	if err := json.Unmarshal(body, &attrs); err != nil {
		t.Fatal(err)
	}
	// CloudEvents 1.0: required id, source, specversion, type; attribute
	// names are lowercase a-z0-9 of at most 20 characters.
	for _, name := range []string{"id", "source", "specversion", "type", "subject", "time", "data", "datacontenttype"} {
		if _, ok := attrs[name]; !ok {
			t.Errorf("attribute %q missing from %s", name, body)
		}
	}
	for name := range attrs {
		if len(name) > 20 || strings.ContainsFunc(name, func(r rune) bool { return !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9') }) {
			t.Errorf("attribute name %q is not a CloudEvents attribute name", name)
		}
	}
	if got, want := attrs["specversion"], "1.0"; got != want {
		t.Errorf("specversion = %v, want %v", got, want)
	}
	if tm, err := time.Parse(time.RFC3339Nano, attrs["time"].(string)); err != nil || tm.Location() != time.UTC {
		t.Errorf("time %v is not RFC 3339 in UTC (%v)", attrs["time"], err)
	}
}

func TestEventTypeOf(t *testing.T) {
	t.Parallel()
	rec := build.RecordFor(sampleRequest())
	retry := rec
	retry.RetryOf, retry.Attempt = "01936f4e-7a3b-7c1d-9e2f-0a1b2c3d4e50", 2
	tests := []struct {
		name    string
		status  build.Status
		r       build.Record
		created bool
		want    build.EventType
	}{
		{"created queued", build.StatusQueued, rec, true, build.EventQueued},
		{"created retry", build.StatusQueued, retry, true, build.EventRetried},
		{"retry deferred later", build.StatusDeferred, retry, false, build.EventDeferred},
		{"running is started", build.StatusRunning, rec, false, build.EventStarted},
		{"created final", build.StatusSkipped, rec, true, build.EventSkipped},
		{"timed out", build.StatusTimedOut, rec, false, build.EventTimedOut},
		{"superseded", build.StatusSuperseded, rec, false, build.EventSuperseded},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := tc.r
			r.Status = tc.status
			if got := build.EventTypeOf(r, tc.created); got != tc.want {
				t.Errorf("EventTypeOf() = %q, want %q", got, tc.want)
			}
		})
	}
	for _, s := range []build.Status{build.StatusQueued, build.StatusDeferred, build.StatusRunning, build.StatusSucceeded,
		build.StatusFailed, build.StatusTimedOut, build.StatusCancelled, build.StatusSuperseded, build.StatusErrored,
		build.StatusExpired, build.StatusSkipped} {
		r := rec
		r.Status = s
		if got := build.EventTypeOf(r, false); !got.Valid() {
			t.Errorf("EventTypeOf(status %s) = %q, not a valid type", s, got)
		}
	}
}

func TestDecodeEventRefuses(t *testing.T) {
	t.Parallel()
	body, err := build.EncodeEvent(sampleEvent())
	if err != nil {
		t.Fatal(err)
	}
	edit := func(f func(m map[string]any)) string {
		var m map[string]any
		if err := json.Unmarshal(body, &m); err != nil {
			t.Fatal(err)
		}
		f(m)
		b, _ := json.Marshal(m)
		return string(b)
	}
	tests := map[string]string{
		"not json":            "{",
		"spec 0.3":            edit(func(m map[string]any) { m["specversion"] = "0.3" }),
		"no source":           edit(func(m map[string]any) { delete(m, "source") }),
		"id of another":       edit(func(m map[string]any) { m["id"] = "01936f4e-7a3b-7c1d-9e2f-0a1b2c3d4e50:2" }),
		"version disagrees":   edit(func(m map[string]any) { m["recordversion"] = 3 }),
		"subject disagrees":   edit(func(m map[string]any) { m["subject"] = "01936f4e-7a3b-7c1d-9e2f-0a1b2c3d4e50" }),
		"unknown type":        edit(func(m map[string]any) { m["type"] = "io.decap.build.exploded" }),
		"xml data":            edit(func(m map[string]any) { m["datacontenttype"] = "text/xml" }),
		"data not the record": edit(func(m map[string]any) { m["data"] = "hello" }),
		"no time":             edit(func(m map[string]any) { delete(m, "time") }),
	}
	for name, in := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			if _, err := build.DecodeEvent([]byte(in)); !errors.Is(err, build.ErrInvalid) {
				t.Errorf("DecodeEvent() error = %v, want ErrInvalid", err)
			}
		})
	}
	if _, err := build.EncodeEvent(build.Event{}); !errors.Is(err, build.ErrInvalid) {
		t.Errorf("EncodeEvent(zero) error = %v, want ErrInvalid", err)
	}
}

// TestEncodeEventDataIsEncodeEvent: the event a store makes from the record
// it stored (EncodeEventData) is, byte for byte, the structured-mode event
// as encoding/json writes it with every attribute in one object, data
// last — on its fast path (plain attributes) and off it (a source JSON
// escapes); and it refuses what EncodeEvent refuses, and data that is no
// JSON object.
func TestEncodeEventDataIsEncodeEvent(t *testing.T) {
	t.Parallel()
	base := sampleEvent()
	at := base.Time
	for _, tc := range []struct {
		name   string
		source string
		time   time.Time
	}{
		{"plain", "https://decap.example.com", at},
		{"whole second", "https://decap.example.com", at.Truncate(time.Second)},
		{"trailing zeros", "https://decap.example.com", at.Truncate(time.Second).Add(120 * time.Millisecond)},
		{"another zone", "https://decap.example.com", at.In(time.FixedZone("x", -7*3600))},
		{"source with <", "https://decap.example.com/<", at},
		{"source with >", "https://decap.example.com/>", at},
		{"source with &", "https://decap.example.com/?a&b", at},
		{"source with a quote", `https://decap.example.com/"`, at},
		{"source with a backslash", `https://decap.example.com/\`, at},
		{"non-ASCII source", "https://décap.example.com", at},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := base
			e.Source, e.Time = tc.source, tc.time
			data, err := json.Marshal(e.Record)
			if err != nil {
				t.Fatal(err)
			}
			got, err := build.EncodeEventData(e, data)
			if err != nil {
				t.Fatal(err)
			}
			want, err := json.Marshal(struct {
				SpecVersion     string          `json:"specversion"`
				ID              string          `json:"id"`
				Source          string          `json:"source"`
				Type            string          `json:"type"`
				Subject         string          `json:"subject"`
				Time            time.Time       `json:"time"`
				DataContentType string          `json:"datacontenttype"`
				RecordVersion   int             `json:"recordversion"`
				Data            json.RawMessage `json:"data"`
			}{"1.0", e.ID, e.Source, string(e.Type), string(e.Subject), e.Time.UTC(), "application/json", e.Version, data})
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != string(want) {
				t.Errorf("EncodeEventData() =\n%s\nwant\n%s", got, want)
			}
			if viaRecord, err := build.EncodeEvent(e); err != nil || string(viaRecord) != string(want) {
				t.Errorf("EncodeEvent() = %s, %v; want %s", viaRecord, err, want)
			}
			if back, err := build.DecodeEvent(got); err != nil || back.ID != e.ID || back.Source != e.Source ||
				!back.Time.Equal(e.Time) || back.Record.Number != e.Record.Number {
				t.Errorf("DecodeEvent(EncodeEventData()) = %+v, %v", back, err)
			}
		})
	}
	data, err := json.Marshal(base.Record)
	if err != nil {
		t.Fatal(err)
	}
	for name, d := range map[string]string{"empty": "", "array": "[1]", "string": `"x"`, "cut": `{"buildId"`} {
		if _, err := build.EncodeEventData(base, []byte(d)); !errors.Is(err, build.ErrInvalid) {
			t.Errorf("EncodeEventData(data %s) error = %v, want ErrInvalid", name, err)
		}
	}
	noSource := base
	noSource.Source = ""
	if _, err := build.EncodeEventData(noSource, data); !errors.Is(err, build.ErrInvalid) {
		t.Errorf("EncodeEventData(no source) error = %v, want ErrInvalid", err)
	}
}

func TestSameRecord(t *testing.T) {
	t.Parallel()
	a := build.RecordFor(sampleRequest())
	local := a
	local.QueuedAt = a.QueuedAt.In(time.FixedZone("x", 3600))
	numbered := a
	numbered.Number = 7
	emptySecrets := a
	emptySecrets.Secrets = []string{}
	changed := a
	if err := changed.Defer(a.QueuedAt, a.QueuedAt.Add(time.Minute), "lock busy"); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		b    build.Record
		want bool
	}{
		{"itself", a, true},
		{"another zone", local, true},
		{"another number", numbered, true},
		{"empty list", emptySecrets, true},
		{"deferred", changed, false},
	} {
		if got := build.SameRecord(a, tc.b); got != tc.want {
			t.Errorf("SameRecord(%s) = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestValidateConsumerGroup(t *testing.T) {
	t.Parallel()
	for g, ok := range map[string]bool{"webhooks": true, "commit-statuses": true, "": false, "-x": false,
		"Webhooks": false, "a/b": false, strings.Repeat("a", 65): false, strings.Repeat("a", 64): true} {
		if err := build.ValidateConsumerGroup(g); (err == nil) != ok {
			t.Errorf("ValidateConsumerGroup(%q) = %v, want ok %v", g, err, ok)
		}
	}
}
