package localexec_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/decap-ci/decap/internal/build"
	"github.com/decap-ci/decap/internal/buildtest"
)

// TestStoppedFromOutsideIsInfra: a local build whose process is stopped by
// a signal Decap did not send ends as an infrastructure failure (killed),
// whether the signal reached decap-entrypoint (which then reports the stop
// as if cancelled) or build.sh itself.
func TestStoppedFromOutsideIsInfra(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		file       string // the pid file of the process to signal
		sig        syscall.Signal
		wantStatus build.Status
	}{
		{"entrypoint terminated", "pid", syscall.SIGTERM, build.StatusCancelled},
		{"entrypoint killed", "pid", syscall.SIGKILL, build.StatusErrored},
		{"build.sh killed", "script.pid", syscall.SIGKILL, build.StatusFailed},
		{"build.sh terminated", "script.pid", syscall.SIGTERM, build.StatusFailed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ex, drv := newLocalDriver(t)
			d := drv.(*localDriver)
			outcomes := make(chan build.Outcome, 10)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			go ex.Watch(ctx, func(_ context.Context, o build.Outcome) error {
				outcomes <- o
				return nil
			})
			job := d.Job(build.NewID(time.Now()), buildtest.EndRunsLong)
			id := job.Request.BuildID
			if err := ex.Launch(t.Context(), job); err != nil {
				t.Fatal(err)
			}
			d.Drive(t, id)
			var pid int
			deadline := time.Now().Add(time.Minute)
			for {
				data, err := os.ReadFile(filepath.Join(d.run, id.PodName(), tt.file))
				if _, serr := fmt.Sscan(string(data), &pid); err == nil && serr == nil && pid > 1 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("no %s within a minute", tt.file)
				}
				time.Sleep(20 * time.Millisecond)
			}
			if err := syscall.Kill(pid, tt.sig); err != nil {
				t.Fatal(err)
			}
			var o build.Outcome
			select {
			case o = <-outcomes:
			case <-time.After(time.Minute):
				t.Fatal("no outcome within a minute")
			}
			if o.Status != tt.wantStatus || o.Infra != build.InfraKilled {
				t.Errorf("outcome %s (%s), infra %q; want %s, %q", o.Status, o.Reason, o.Infra, tt.wantStatus, build.InfraKilled)
			}
			rec := build.RecordFor(job.Request)
			if err := rec.Start(time.Now(), id.PodName(), "c"); err != nil {
				t.Fatal(err)
			}
			if err := rec.End(o, time.Now()); err != nil {
				t.Fatal(err)
			}
			if rec.Status != build.StatusErrored || rec.EndedByInfra(o) != build.InfraKilled {
				t.Errorf("record %s (%s), infra %q; want errored, killed", rec.Status, rec.Reason, rec.EndedByInfra(o))
			}
		})
	}
}
