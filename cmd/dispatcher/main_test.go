package main

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/decap-ci/decap/internal/build"
	"github.com/decap-ci/decap/internal/sqlite"
)

func baseEnv(t *testing.T) map[string]string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	// Run as root, the local executor runs builds under uids of their own,
	// which must reach the data directory: Go makes the test's 0700.
	data := t.TempDir()
	if err := os.Chmod(filepath.Dir(data), 0o711); err != nil {
		t.Fatal(err)
	}
	return map[string]string{
		"DECAP_DATA_DIR": data, "DECAP_DISPATCHER_ADDR": addr,
		"DECAP_BUILD_SCRIPTS": filepath.Join("..", "..", "examples", "build-scripts"),
		// Any executable passes the check; no build runs in these tests.
		"DECAP_ENTRYPOINT": "/bin/true",
	}
}

func TestRunRejectsBadSetup(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"arguments", []string{"extra"}, nil, "takes no arguments"},
		{"bad variable", nil, map[string]string{"DECAP_DISPATCH_WORKERS": "0"}, "DECAP_DISPATCH_WORKERS"},
		{"no entrypoint", nil, map[string]string{"DECAP_ENTRYPOINT": "/nonexistent/decap-entrypoint"}, "DECAP_ENTRYPOINT"},
		// A mistyped directory stops the start (it ran on before, never
		// ready, every build request refused).
		{"no build-scripts directory", nil, map[string]string{"DECAP_BUILD_SCRIPTS": "/nonexistent/typo"}, "DECAP_BUILD_SCRIPTS: build-scripts directory /nonexistent/typo does not exist"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			env := baseEnv(t)
			for k, v := range tt.env {
				env[k] = v
			}
			// A start that does not fail would serve until ctx ends.
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			err := run(ctx, tt.args, func(k string) string { return env[k] }, &bytes.Buffer{}, &bytes.Buffer{})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("run: got %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

func TestRunServesUntilCancelled(t *testing.T) {
	t.Parallel()
	env := baseEnv(t)
	ctx, cancel := context.WithCancel(context.Background())
	var stderr bytes.Buffer
	done := make(chan error, 1)
	go func() { done <- run(ctx, nil, func(k string) string { return env[k] }, &bytes.Buffer{}, &stderr) }()
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get("http://" + env["DECAP_DISPATCHER_ADDR"] + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("dispatcher never became ready; log:\n%s", stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("run after cancel: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("run did not return after its context was cancelled")
	}
}

// syncBuffer is a log sink read while the service writes to it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestRunHonoursTheGate checks the wiring of the dispatch gate: paused in
// the shared database (as ingest pauses it), the dispatcher leaves a
// request on the queue; resumed, it takes it.
func TestRunHonoursTheGate(t *testing.T) {
	t.Parallel()
	env := baseEnv(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	db, err := sqlite.Open(filepath.Join(env["DECAP_DATA_DIR"], "decap.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	gate, queue := sqlite.NewGate(db), sqlite.NewQueue(db, sqlite.QueueOptions{})
	if err := gate.Set(ctx, build.GateState{Paused: true, Reason: "test", By: "t", Since: time.Now()}); err != nil {
		t.Fatal(err)
	}
	// An unknown project: the dispatcher drops it, launching nothing.
	req := build.Request{V: 1, BuildID: build.NewID(time.Now()), Team: "nobody", Project: "none", Ref: "main",
		RefType: build.Branch, Trigger: build.TriggerAPI, RequestedAt: time.Now()}
	if err := queue.Publish(ctx, req); err != nil {
		t.Fatal(err)
	}

	stderr := &syncBuffer{}
	done := make(chan error, 1)
	go func() { done <- run(ctx, nil, func(k string) string { return env[k] }, &bytes.Buffer{}, stderr) }()
	waitUntil(t, "the dispatcher to log the pause", stderr, func() bool { return strings.Contains(stderr.String(), "dispatch paused") })
	time.Sleep(300 * time.Millisecond)
	if st, err := queue.Stats(ctx); err != nil || st.Visible != 1 || st.InFlight != 0 {
		t.Fatalf("queue while paused = %+v, %v; want the request visible, untouched", st, err)
	}
	if err := gate.Set(ctx, build.GateState{By: "t", Since: time.Now()}); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the request to be taken", stderr, func() bool {
		st, err := queue.Stats(ctx)
		return err == nil && st.Visible+st.InFlight == 0
	})
	cancel()
	if err := <-done; err != nil {
		t.Errorf("run after cancel: %v", err)
	}
	if !strings.Contains(stderr.String(), "dispatch resumed") {
		t.Errorf("no resume logged:\n%s", stderr.String())
	}
}

func waitUntil(t *testing.T, what string, log *syncBuffer, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s; log:\n%s", what, log.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}
