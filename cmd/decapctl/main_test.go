package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/decap-ci/decap/internal/cli"
)

// decapctl runs run() as main does and returns the exit code, stdout and
// stderr.
func decapctl(t *testing.T, env map[string]string, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	err := run(context.Background(), args, func(k string) string { return env[k] }, &stdout, &stderr)
	code := report(&stderr, err)
	return code, stdout.String(), stderr.String()
}

func TestExitCodesAndOneLineErrors(t *testing.T) {
	t.Parallel()
	down := httptest.NewServer(http.NotFoundHandler())
	down.Close()
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		switch r.URL.Path {
		case "/api/v1/locks":
			io.WriteString(w, `{"locks":[]}`)
		default:
			w.WriteHeader(http.StatusNotFound)
			io.WriteString(w, `{"error":"build 0193dd6e-7a3b-7c1d-9e2f-0a1b2c3d4e5f: not found","detail":{"status":404}}`)
		}
	}))
	t.Cleanup(up.Close)
	tests := []struct {
		name       string
		url        string
		args       []string
		wantCode   int
		wantStderr string // "" = nothing on stderr
	}{
		{"ok", up.URL, []string{"locks"}, cli.ExitOK, ""},
		{"help", up.URL, []string{"--help"}, cli.ExitOK, ""},
		{"not found", up.URL, []string{"logs", "0193dd6e-7a3b-7c1d-9e2f-0a1b2c3d4e5f"}, cli.ExitNotFound,
			"decapctl: build 0193dd6e-7a3b-7c1d-9e2f-0a1b2c3d4e5f not found\n"},
		{"usage", up.URL, []string{"logs"}, cli.ExitUsage, "decapctl: usage: decapctl logs [-f] ID (got 0 arguments; see decapctl logs --help)\n"},
		{"server down", down.URL, []string{"queue"}, cli.ExitUnavailable,
			"decapctl: cannot reach Decap at " + down.URL + ": connection refused (is it running? set DECAP_URL)\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			code, _, stderr := decapctl(t, map[string]string{"DECAP_URL": tt.url}, tt.args...)
			if code != tt.wantCode {
				t.Errorf("exit code %d, want %d (stderr %q)", code, tt.wantCode, stderr)
			}
			if stderr != tt.wantStderr {
				t.Errorf("stderr %q, want %q", stderr, tt.wantStderr)
			}
			if strings.Count(stderr, "\n") > 1 {
				t.Errorf("stderr has more than one line: %q", stderr)
			}
		})
	}
}
