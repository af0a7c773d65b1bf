package main

import (
	"bytes"
	"context"
	"io"
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
		"DECAP_DATA_DIR": t.TempDir(), "DECAP_ADDR": addr, "DECAP_API_TOKEN": "t0ken-for-tests-5c1e9a7f3b2d8e6a0c4f",
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
	// The control plane is wired to the backend: the queue, the locks and
	// the dispatch gate answer, and the gate can be paused with the token
	// and resumed through a UI session.
	base := "http://" + addr + "/api/v1"
	const tok = "t0ken-for-tests-5c1e9a7f3b2d8e6a0c4f"
	bearer := map[string]string{"Authorization": "Bearer " + tok}
	var setCookie string
	call := func(method, path, body string, header map[string]string) (int, string) {
		t.Helper()
		req, err := http.NewRequest(method, base+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		for k, v := range header {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		setCookie = resp.Header.Get("Set-Cookie")
		return resp.StatusCode, string(b)
	}
	for _, path := range []string{"/queue", "/locks", "/dispatch"} {
		if code, body := call(http.MethodGet, path, "", nil); code != http.StatusUnauthorized {
			t.Errorf("GET %s without the token: %d %s, want 401 (reads need the token)", path, code, body)
		}
		if code, body := call(http.MethodGet, path, "", bearer); code != http.StatusOK {
			t.Errorf("GET %s: %d %s, want 200", path, code, body)
		}
	}
	if code, body := call(http.MethodPost, "/dispatch/pause", `{"reason":"test"}`, bearer); code != http.StatusOK || !strings.Contains(body, `"paused":true`) {
		t.Errorf("pause: %d %s, want 200 and a paused gate", code, body)
	}
	if code, body := call(http.MethodGet, "/dispatch", "", bearer); !strings.Contains(body, `"paused":true`) {
		t.Errorf("GET /dispatch after pause: %d %s, want the paused gate", code, body)
	}
	code, _ := call(http.MethodPost, "/session", `{"token":"`+tok+`"}`, nil)
	cookie, _, _ := strings.Cut(setCookie, ";")
	if code != http.StatusNoContent || !strings.HasPrefix(cookie, "decap_session=") || strings.Contains(cookie, tok) {
		t.Errorf("POST /session: %d, cookie %q; want 204 and a session cookie that is not the token", code, cookie)
	}
	// The session lives in the backend's store: it reads and mutates.
	session := map[string]string{"Cookie": cookie, "X-Decap-CSRF": "1"}
	if code, body := call(http.MethodGet, "/dispatch", "", session); code != http.StatusOK {
		t.Errorf("GET /dispatch with the session: %d %s, want 200", code, body)
	}
	if code, body := call(http.MethodPost, "/dispatch/resume", "", session); code != http.StatusOK || !strings.Contains(body, `"paused":false`) {
		t.Errorf("resume through the session: %d %s, want 200 and an open gate", code, body)
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
	if strings.Contains(stderr.String(), "t0ken-for-tests-5c1e9a7f3b2d8e6a0c4f") {
		t.Errorf("the log shows the API token")
	}
	if !strings.Contains(stderr.String(), "no webhook secret configured") {
		t.Errorf("no warning about the missing webhook secret in:\n%s", stderr.String())
	}
}
