package ingest_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/decap-ci/decap/internal/build"
	"github.com/decap-ci/decap/internal/ingest"
)

// A build page shows a log's tail: ?tail=<bytes> answers at most that
// much of the log, from the start of a line, and says how many bytes and
// lines came before it; a log of many megabytes is read, not held.
func TestLogTail(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil)
	ctx := context.Background()
	now := f.clock.Now()
	id := build.NewID(now)
	var log strings.Builder
	const lines, width = 150_000, 24 // 3.6 MB
	for i := 1; i <= lines; i++ {
		fmt.Fprintf(&log, "line %07d of the log\n", i)
	}
	exit := 0
	if err := f.records.Save(ctx, build.Record{BuildID: id, Team: "decap-ci", Project: "hello", Ref: "main", RefType: build.Branch,
		Trigger: build.TriggerPush, Status: build.StatusSucceeded, ExitCode: &exit, QueuedAt: now, StartedAt: now, FinishedAt: now,
		LogKey: build.LogKey(id)}); err != nil {
		t.Fatal(err)
	}
	if err := f.blobs.Put(ctx, build.LogKey(id), bytes.NewReader(gz(t, log.String()))); err != nil {
		t.Fatal(err)
	}
	path := "/api/v1/builds/" + string(id) + "/log"
	tests := []struct {
		name, query         string
		code                int
		first               string
		skippedLines, bytes int
	}{
		{"tail cuts at a line", "?tail=1000", 200, "line 0149960 of the log", 149959, 41 * width},
		{"tail on a line break", "?tail=48", 200, "line 0149999 of the log", 149998, 2 * width},
		{"tail over the whole log", "?tail=4194304", 200, "line 0000001 of the log", 0, lines * width},
		{"tail and follow: the tail", "?tail=24&follow=1", 200, "line 0150000 of the log", 149999, width},
		{"tail zero", "?tail=0", 400, "", 0, 0},
		{"tail too large", "?tail=4194305", 400, "", 0, 0},
		{"tail not a number", "?tail=lots", 400, "", 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			w := f.do(apiRequest(http.MethodGet, path+tt.query, token, ""))
			if w.Code != tt.code {
				t.Fatalf("status %d (%.200s), want %d", w.Code, w.Body, tt.code)
			}
			if tt.code != 200 {
				return
			}
			body := w.Body.String()
			if got, _, _ := strings.Cut(body, "\n"); got != tt.first {
				t.Errorf("first line %q, want %q", got, tt.first)
			}
			if len(body) != tt.bytes {
				t.Errorf("got %d bytes, want %d", len(body), tt.bytes)
			}
			if !strings.HasSuffix(body, "line 0150000 of the log\n") {
				t.Errorf("tail does not end with the log's last line: %q", body[max(0, len(body)-40):])
			}
			if got, want := w.Header().Get("X-Decap-Log-Skipped-Lines"), fmt.Sprint(tt.skippedLines); got != want {
				t.Errorf("X-Decap-Log-Skipped-Lines %s, want %s", got, want)
			}
			if got, want := w.Header().Get("X-Decap-Log-Skipped-Bytes"), fmt.Sprint(lines*width-tt.bytes); got != want {
				t.Errorf("X-Decap-Log-Skipped-Bytes %s, want %s", got, want)
			}
		})
	}
}

// gatedLogs is a LiveLogs whose logs are read only when the test opens
// the gate; it counts the readers at work at once.
type gatedLogs struct {
	gate          chan struct{}
	mu            sync.Mutex
	reading, most int
}

type gatedLog struct {
	g    *gatedLogs
	done bool
}

func (g *gatedLogs) OpenLiveLog(build.ID) (io.ReadCloser, error) { return &gatedLog{g: g}, nil }

func (l *gatedLog) Read(p []byte) (int, error) {
	if l.done {
		return 0, io.EOF
	}
	l.g.mu.Lock()
	l.g.reading++
	l.g.most = max(l.g.most, l.g.reading)
	l.g.mu.Unlock()
	<-l.g.gate
	l.g.mu.Lock()
	l.g.reading--
	l.g.mu.Unlock()
	l.done = true
	return copy(p, "a line\n"), nil
}

func (l *gatedLog) Close() error { return nil }

// Each log tail holds up to twice its size in memory while it reads the
// log through: only a few are read at once, the others wait.
func TestLogTailsReadAFewAtATime(t *testing.T) {
	t.Parallel()
	logs := &gatedLogs{gate: make(chan struct{})}
	f := newFixtureDeps(t, nil, func(d *ingest.Deps) { d.LiveLogs = logs })
	now := f.clock.Now()
	rec := build.Record{BuildID: build.NewID(now), Team: "decap-ci", Project: "hello", Ref: "main", RefType: build.Branch,
		Trigger: build.TriggerPush, Status: build.StatusRunning, QueuedAt: now, StartedAt: now}
	if err := f.records.Save(t.Context(), rec); err != nil {
		t.Fatal(err)
	}
	const n = 12
	var wg sync.WaitGroup
	codes := make(chan int, n)
	for range n {
		wg.Go(func() {
			codes <- f.do(apiRequest(http.MethodGet, "/api/v1/builds/"+string(rec.BuildID)+"/log?tail=4194304", token, "")).Code
		})
	}
	// Let the requests pile up at the gate, then open it.
	deadline := time.Now().Add(5 * time.Second)
	for {
		logs.mu.Lock()
		reading := logs.reading
		logs.mu.Unlock()
		if reading >= 4 || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond)
	close(logs.gate)
	wg.Wait()
	close(codes)
	for code := range codes {
		if code != http.StatusOK {
			t.Errorf("a tail answered %d, want 200", code)
		}
	}
	if logs.most > 4 {
		t.Errorf("%d tails read at once, want at most 4", logs.most)
	}
}
