package health_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/decap-ci/decap/internal/health"
)

// /readyz runs its checks on every request: it drops while a backend is
// unreachable and recovers by itself once it answers, with no restart.
func TestReadyzRecovers(t *testing.T) {
	t.Parallel()
	var down atomic.Bool
	h := health.Handler(nil,
		health.Check{Name: "catalog", Check: func(context.Context) error { return nil }},
		health.Check{Name: "database", Check: func(context.Context) error {
			if down.Load() {
				return errors.New("dial tcp: connection refused")
			}
			return nil
		}},
	)
	get := func(path string) *httptest.ResponseRecorder {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, path, nil))
		return w
	}
	steps := []struct {
		down     bool
		wantCode int
		wantBody string
	}{
		{false, http.StatusOK, `"ready"`},
		{true, http.StatusServiceUnavailable, `"database":"dial tcp: connection refused"`},
		{true, http.StatusServiceUnavailable, `"not ready"`},
		{false, http.StatusOK, `"ready"`},
	}
	for i, s := range steps {
		down.Store(s.down)
		w := get("/readyz")
		if w.Code != s.wantCode || !strings.Contains(w.Body.String(), s.wantBody) {
			t.Errorf("step %d (backend down=%v): /readyz = %d %s, want %d with %s", i, s.down, w.Code, w.Body, s.wantCode, s.wantBody)
		}
		if got := w.Header().Get("Content-Type"); got != "application/json" {
			t.Errorf("step %d: Content-Type = %q, want application/json", i, got)
		}
		// Liveness does not depend on the backends.
		if w := get("/healthz"); w.Code != http.StatusOK {
			t.Errorf("step %d: /healthz = %d, want 200", i, w.Code)
		}
	}
}

func TestMetricsRoute(t *testing.T) {
	t.Parallel()
	metrics := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("decap_up 1\n"))
	})
	tests := []struct {
		name     string
		metrics  http.Handler
		method   string
		wantCode int
	}{
		{"served", metrics, http.MethodGet, http.StatusOK},
		{"GET only", metrics, http.MethodPost, http.StatusMethodNotAllowed},
		{"absent without a handler", nil, http.MethodGet, http.StatusNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			w := httptest.NewRecorder()
			health.Handler(tt.metrics).ServeHTTP(w, httptest.NewRequest(tt.method, "/metrics", nil))
			if w.Code != tt.wantCode {
				t.Fatalf("%s /metrics = %d, want %d", tt.method, w.Code, tt.wantCode)
			}
			if tt.wantCode == http.StatusOK && w.Body.String() != "decap_up 1\n" {
				t.Errorf("body = %q, want the metrics handler's", w.Body)
			}
		})
	}
}
