package kubetest

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

// TestWaitForNoticesAnExit: a process of the control plane that exits
// while waitFor waits ends the wait with its exit, not with the timeout
// (before, its state was read only once something waited for it: a crash
// was noticed at the timeout, minutes later).
func TestWaitForNoticesAnExit(t *testing.T) {
	t.Parallel()
	cp := &ControlPlane{Dir: t.TempDir()}
	if err := cp.start("/bin/sh", "sh", "-c", "exit 3"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cp.Stop)
	err := cp.waitFor(2*time.Minute, "the API server", func(context.Context) error { return errors.New("not yet") })
	if err == nil || !strings.Contains(err.Error(), "sh exited: exit status 3") {
		t.Errorf("waitFor() = %v, want the process's exit", err)
	}
}
