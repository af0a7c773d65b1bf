package localexec

import (
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"
)

// The flock semantics alive.lock relies on: the lock belongs to the open
// file description, so a child that inherited it keeps it after the parent
// closed its descriptor, and it is free once the child is gone. A probe
// does not disturb it, nor another probe.
func TestAliveLockFollowsChild(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if held, err := aliveHeld(dir); err != nil || held {
		t.Fatalf("aliveHeld without alive.lock = %v, %v; want false", held, err)
	}
	f, err := lockAlive(t.Context(), dir)
	if err != nil {
		t.Fatal(err)
	}
	if held, err := aliveHeld(dir); err != nil || !held {
		t.Fatalf("aliveHeld while the launcher holds it = %v, %v; want true", held, err)
	}
	cmd := exec.Command("sleep", "60")
	cmd.ExtraFiles = []*os.File{f}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if held, err := aliveHeld(dir); err != nil || !held {
		t.Errorf("aliveHeld after the parent closed = %v, %v; want true (the child holds it)", held, err)
	}
	// Two probes at once do not take each other for the build.
	p, err := os.Open(dir + "/" + aliveFile)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if err := syscall.Kill(cmd.Process.Pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	if ok, err := flock(p, syscall.LOCK_SH); err != nil || !ok {
		t.Fatalf("probe = %v, %v", ok, err)
	}
	if held, err := aliveHeld(dir); err != nil || held {
		t.Errorf("aliveHeld after the child exited, during another probe = %v, %v; want false", held, err)
	}
	// A launcher waits out a probe.
	go func() {
		time.Sleep(50 * time.Millisecond)
		p.Close()
	}()
	f, err = lockAlive(t.Context(), dir)
	if err != nil {
		t.Fatalf("lockAlive after the child: %v", err)
	}
	f.Close()
}
