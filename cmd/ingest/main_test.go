package main

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func TestRunRejectsBadSetup(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"arguments", []string{"--port", "80"}, nil, "takes no arguments"},
		{"bad variable", nil, map[string]string{"DECAP_MAX_RUNNING_BUILDS": "many"}, "DECAP_MAX_RUNNING_BUILDS"},
		{"address in use", nil, nil, "listen on"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			env := map[string]string{"DECAP_DATA_DIR": t.TempDir(), "DECAP_BUILD_SCRIPTS": filepath.Join("..", "..", "examples", "build-scripts")}
			for k, v := range tt.env {
				env[k] = v
			}
			if tt.name == "address in use" {
				ln, err := net.Listen("tcp", "127.0.0.1:0")
				if err != nil {
					t.Fatal(err)
				}
				defer ln.Close()
				env["DECAP_ADDR"] = ln.Addr().String()
			}
			var stderr bytes.Buffer
			err := run(context.Background(), tt.args, func(k string) string { return env[k] }, &bytes.Buffer{}, &stderr)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("run: got %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

func TestRunServesUntilCancelled(t *testing.T) {
	t.Parallel()
	addr := freeAddr(t)
	env := map[string]string{
		"DECAP_DATA_DIR": t.TempDir(), "DECAP_ADDR": addr, "DECAP_API_TOKEN": "t0ken-for-tests",
		"DECAP_BUILD_SCRIPTS": filepath.Join("..", "..", "examples", "build-scripts"),
	}
	ctx, cancel := context.WithCancel(context.Background())
	var stderr bytes.Buffer
	done := make(chan error, 1)
	go func() { done <- run(ctx, nil, func(k string) string { return env[k] }, &bytes.Buffer{}, &stderr) }()
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("ingest never became ready; log:\n%s", stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("run after cancel: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("run did not return after its context was cancelled")
	}
	if strings.Contains(stderr.String(), "t0ken-for-tests") {
		t.Errorf("the log shows the API token")
	}
	if !strings.Contains(stderr.String(), "no webhook secret configured") {
		t.Errorf("no warning about the missing webhook secret in:\n%s", stderr.String())
	}
}
