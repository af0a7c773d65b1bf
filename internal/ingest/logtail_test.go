package ingest_test

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/decap-ci/decap/internal/build"
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
	const lines, width = 200_000, 24 // 4.8 MB
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
		{"tail cuts at a line", "?tail=1000", 200, "line 0199960 of the log", 199959, 41 * width},
		{"tail on a line break", "?tail=48", 200, "line 0199999 of the log", 199998, 2 * width},
		{"tail over the whole log", "?tail=16777216", 200, "line 0000001 of the log", 0, lines * width},
		{"tail and follow: the tail", "?tail=24&follow=1", 200, "line 0200000 of the log", 199999, width},
		{"tail zero", "?tail=0", 400, "", 0, 0},
		{"tail too large", "?tail=16777217", 400, "", 0, 0},
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
			if !strings.HasSuffix(body, "line 0200000 of the log\n") {
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
