package main

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
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
		"DECAP_DATA_DIR": data, "DECAP_REAPER_ADDR": addr,
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
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			env := baseEnv(t)
			for k, v := range tt.env {
				env[k] = v
			}
			err := run(context.Background(), tt.args, func(k string) string { return env[k] }, &bytes.Buffer{}, &bytes.Buffer{})
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
		resp, err := http.Get("http://" + env["DECAP_REAPER_ADDR"] + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("reaper never became ready; log:\n%s", stderr.String())
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
