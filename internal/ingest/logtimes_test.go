package ingest_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/decap-ci/decap/internal/api"
	"github.com/decap-ci/decap/internal/build"
	"github.com/decap-ci/decap/internal/ingest"
)

// liveTimes is a LiveLogs with a live line-time index per build.
type liveTimes map[build.ID]string

func (l liveTimes) OpenLiveLog(id build.ID) (io.ReadCloser, error) {
	return nil, fmt.Errorf("live log %s: %w", id, build.ErrNotFound)
}

func (l liveTimes) OpenLiveTimes(id build.ID) (io.ReadCloser, error) {
	s, ok := l[id]
	if !ok {
		return nil, fmt.Errorf("live line times %s: %w", id, build.ErrNotFound)
	}
	return io.NopCloser(strings.NewReader(s)), nil
}

// GET .../log?times=1 answers when the log's lines began: an ended
// build's stored index (under the key derived from its ID), a running
// build's live one where the executor keeps one. What a build stored is
// read bounded and validated: a forged or huge index is refused, with the
// same auth as the log.
func TestLogTimes(t *testing.T) {
	t.Parallel()
	const running = build.ID("0190b2a4-8d3e-7c1a-9f00-00000000000a")
	const index = `{"start":"2026-11-27T03:00:00Z","resolutionMs":100,"lines":7,"times":[[1,0],[3,1500],[7,62000]]}`
	live := liveTimes{running: index}
	f := newFixtureDeps(t, nil, func(d *ingest.Deps) { d.LiveLogs = live })
	noLive := newFixture(t, nil)
	ctx := context.Background()
	now := f.clock.Now()

	save := func(f *fixture, id build.ID, status build.Status, times []byte) {
		t.Helper()
		rec := build.Record{BuildID: id, Team: "decap-ci", Project: "hello", Ref: "main", RefType: build.Branch,
			Trigger: build.TriggerPush, Status: status, QueuedAt: now, StartedAt: now}
		if status.Final() {
			rec.FinishedAt, rec.LogKey = now, build.LogKey(id)
			if err := f.blobs.Put(ctx, build.LogKey(id), bytes.NewReader(gz(t, "a\nb\n"))); err != nil {
				t.Fatal(err)
			}
		}
		if err := f.records.Save(ctx, rec); err != nil {
			t.Fatal(err)
		}
		if times != nil {
			if err := f.blobs.Put(ctx, build.LogTimesKey(id), bytes.NewReader(times)); err != nil {
				t.Fatal(err)
			}
		}
	}
	var many strings.Builder
	many.WriteString(`{"start":"2026-11-27T03:00:00Z","resolutionMs":100,"lines":99999,"times":[`)
	for i := range build.MaxLogTimes + 1 {
		if i > 0 {
			many.WriteByte(',')
		}
		fmt.Fprintf(&many, "[%d,%d]", i+1, i*100)
	}
	many.WriteString("]}")
	ids := map[string]build.ID{}
	for i, c := range []struct {
		name   string
		status build.Status
		times  []byte
	}{
		{"stored", build.StatusSucceeded, gz(t, index)},
		{"none stored", build.StatusFailed, nil},
		{"not gzip", build.StatusSucceeded, []byte(index)},
		{"not JSON", build.StatusSucceeded, gz(t, "<html>")},
		{"lines out of order", build.StatusSucceeded, gz(t, `{"lines":9,"times":[[1,0],[5,10],[3,20]]}`)},
		{"time going back", build.StatusSucceeded, gz(t, `{"lines":9,"times":[[1,50],[2,10]]}`)},
		{"line past the end", build.StatusSucceeded, gz(t, `{"lines":2,"times":[[1,0],[3,10]]}`)},
		{"too many pairs", build.StatusSucceeded, gz(t, many.String())},
		{"a gzip bomb", build.StatusSucceeded, gz(t, `{"lines":1,"times":[[1,0]]}`+strings.Repeat(" ", 64<<20))},
		{"queued", build.StatusQueued, nil},
	} {
		id := build.ID(fmt.Sprintf("0190b2a4-8d3e-7c1a-9f00-%012d", 100+i))
		ids[c.name] = id
		save(f, id, c.status, c.times)
	}
	save(f, running, build.StatusRunning, nil)
	save(noLive, running, build.StatusRunning, nil)

	for _, tt := range []struct {
		name  string
		f     *fixture
		id    build.ID
		query string
		tok   string
		code  int
		want  string // the answer's JSON, or a part of its error
	}{
		{"stored", f, ids["stored"], "?times=1", token, 200,
			`{"start":"2026-11-27T03:00:00Z","resolutionMs":100,"lines":7,"times":[[1,0],[3,1500],[7,62000]],"complete":true}`},
		{"true also", f, ids["stored"], "?times=true&follow=1&tail=10", token, 200, `"complete":true}`},
		{"no token", f, ids["stored"], "?times=1", "", 401, "no credential"},
		{"running, live", f, running, "?times=1", token, 200,
			`{"start":"2026-11-27T03:00:00Z","resolutionMs":100,"lines":7,"times":[[1,0],[3,1500],[7,62000]],"complete":false}`},
		{"running, no live index", noLive, running, "?times=1", token, 404, "stored when it ends"},
		{"queued", f, ids["queued"], "?times=1", token, 404, "line times"},
		{"none stored", f, ids["none stored"], "?times=1", token, 404, "stored no line times"},
		{"not gzip", f, ids["not gzip"], "?times=1", token, 404, "not gzip"},
		{"not JSON", f, ids["not JSON"], "?times=1", token, 404, "no valid line times"},
		{"lines out of order", f, ids["lines out of order"], "?times=1", token, 404, "no valid line times"},
		{"time going back", f, ids["time going back"], "?times=1", token, 404, "no valid line times"},
		{"line past the end", f, ids["line past the end"], "?times=1", token, 404, "no valid line times"},
		{"too many pairs", f, ids["too many pairs"], "?times=1", token, 404, "no valid line times"},
		{"a gzip bomb", f, ids["a gzip bomb"], "?times=1", token, 404, "more than"},
		{"times=2", f, ids["stored"], "?times=2", token, 400, "times must be 1"},
		{"unknown build", f, "0190b2a4-8d3e-7c1a-9f00-0000000000ff", "?times=1", token, 404, "not found"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			w := tt.f.do(apiRequest(http.MethodGet, "/api/v1/builds/"+string(tt.id)+"/log"+tt.query, tt.tok, ""))
			if w.Code != tt.code {
				t.Fatalf("status %d (%.300s), want %d", w.Code, w.Body, tt.code)
			}
			body := strings.TrimSpace(w.Body.String())
			if tt.code != 200 {
				var e api.Error
				if err := json.Unmarshal([]byte(body), &e); err != nil || !strings.Contains(e.Text(), tt.want) {
					t.Errorf("error %s, want one holding %q", body, tt.want)
				}
				return
			}
			if ct := w.Header().Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
				t.Errorf("Content-Type %q, want JSON", ct)
			}
			if !strings.Contains(body, tt.want) {
				t.Errorf("answer %s, want %s", body, tt.want)
			}
		})
	}
}
