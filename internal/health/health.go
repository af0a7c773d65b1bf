// Package health serves /healthz, /readyz and /metrics for the services that
// have no other HTTP surface (dispatcher, reaper), and runs every service's
// http.Server, with read, write and idle timeouts, until its context ends.
package health

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"
)

// Check is one readiness check: a backend that must be reachable.
type Check struct {
	Name  string
	Check func(ctx context.Context) error
}

// Handler answers /healthz (the process runs) and /readyz (every check
// passes within two seconds), in JSON, and hands GET /metrics to metrics
// (nil: no /metrics). The checks run on every /readyz, so readiness drops
// while a backend is unreachable and comes back by itself when it answers.
func Handler(metrics http.Handler, checks ...Check) http.Handler {
	mux := http.NewServeMux()
	if metrics != nil {
		mux.Handle("GET /metrics", metrics)
	}
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		failed := map[string]string{}
		for _, c := range checks {
			if err := c.Check(ctx); err != nil {
				failed[c.Name] = err.Error()
			}
		}
		if len(failed) > 0 {
			writeJSON(w, http.StatusServiceUnavailable, map[string]any{"error": "not ready", "detail": failed})
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
	})
	return mux
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// Timeouts bound how long a connection may take over each part of an
// exchange, so that a client that sends slowly, reads slowly or holds a
// connection idle cannot keep it (and the memory behind it) for ever. A
// zero field takes the default in DefaultTimeouts.
type Timeouts struct {
	// ReadHeader bounds the arrival of a request's headers.
	ReadHeader time.Duration
	// Read bounds the arrival of a whole request, headers and body: a body
	// still arriving after it is cut off (the handler's read fails and the
	// connection is closed).
	Read time.Duration
	// Write bounds the writing of an answer, from the end of the request's
	// headers. A handler that streams a long answer extends its own
	// deadline per chunk (http.ResponseController.SetWriteDeadline).
	Write time.Duration
	// Idle bounds how long a keep-alive connection may wait for its next
	// request.
	Idle time.Duration
}

// DefaultTimeouts returns the timeouts of Serve. Read leaves a 5 MiB
// webhook 30 s to arrive (GitHub itself gives up on a delivery after
// 10 s); Idle is above the 60 s idle timeout of common load balancers (AWS
// ALB), which must close an idle connection before the server behind them
// does.
func DefaultTimeouts() Timeouts {
	return Timeouts{
		ReadHeader: 10 * time.Second,
		Read:       30 * time.Second,
		Write:      60 * time.Second,
		Idle:       75 * time.Second,
	}
}

// orDefaults returns t with its zero fields taken from DefaultTimeouts.
func (t Timeouts) orDefaults() Timeouts {
	def := DefaultTimeouts()
	set := func(v *time.Duration, def time.Duration) {
		if *v <= 0 {
			*v = def
		}
	}
	set(&t.ReadHeader, def.ReadHeader)
	set(&t.Read, def.Read)
	set(&t.Write, def.Write)
	set(&t.Idle, def.Idle)
	t.ReadHeader = min(t.ReadHeader, t.Read)
	return t
}

// Serve is ServeWith with the default timeouts.
func Serve(ctx context.Context, addr string, h http.Handler, log *slog.Logger, guards ...Guard) error {
	return ServeWith(ctx, addr, h, log, Timeouts{}, guards...)
}

// Guard wraps the server's listener, e.g. to drop connections it must
// not serve before anything of them is read; nil guards are skipped.
type Guard func(net.Listener) net.Listener

// ServeWith listens on addr and serves h with the timeouts t (zero
// fields: the defaults), on the listener the guards make of it, until ctx
// ends, then shuts down gracefully. It returns an error only when it
// cannot listen or serving fails.
func ServeWith(ctx context.Context, addr string, h http.Handler, log *slog.Logger, t Timeouts, guards ...Guard) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", addr, err)
	}
	log.Info("listening", "addr", ln.Addr().String())
	for _, g := range guards {
		if g != nil {
			ln = g(ln)
		}
	}
	return serve(ctx, ln, h, t)
}

// serve serves h on ln; see ServeWith.
func serve(ctx context.Context, ln net.Listener, h http.Handler, t Timeouts) error {
	t = t.orDefaults()
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: t.ReadHeader,
		ReadTimeout:       t.Read,
		WriteTimeout:      t.Write,
		IdleTimeout:       t.Idle,
	}
	addr := ln.Addr().String()
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serve %s: %w", addr, err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("shut down %s: %w", addr, err)
	}
	return nil
}
