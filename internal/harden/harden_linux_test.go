package harden_test

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"testing"

	"github.com/decap-ci/decap/internal/harden"
)

// The test binary doubles as the process a build would attack: with
// HARDEN_TEST_ROLE set it is a target that holds a secret in its
// environment, hardened or not, until its stdin closes.
func TestMain(m *testing.M) {
	switch os.Getenv("HARDEN_TEST_ROLE") {
	case "":
		os.Exit(m.Run())
	case "hardened":
		harden.Process()
	}
	fmt.Println("ready")
	io.Copy(io.Discard, os.Stdin)
	os.Exit(0)
}

// otherUID is the uid the target and the attacker run as when the test
// runs as root (whose CAP_SYS_PTRACE reads anything): an unprivileged user
// that owns nothing, outside the local executor's default build uids.
// Otherwise both run as the test's own user.
const otherUID = 1899999990

func credential() *syscall.Credential {
	if os.Geteuid() != 0 {
		return nil
	}
	return &syscall.Credential{Uid: otherUID, Gid: otherUID}
}

// startTarget starts the test binary as a target in role and returns its
// pid; it ends with the test.
func startTarget(t *testing.T, role string) int {
	t.Helper()
	// /proc/self/exe: the test binary, whatever directory it is in and
	// whether the other user may search it.
	cmd := exec.Command("/proc/self/exe")
	cmd.Env = []string{"HARDEN_TEST_ROLE=" + role, "TARGET_SECRET=s3cr3t-" + role}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: credential()}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start target: %v", err)
	}
	t.Cleanup(func() {
		stdin.Close()
		cmd.Wait()
	})
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || line != "ready\n" {
		t.Fatalf("target did not get ready: %q, %v", line, err)
	}
	return cmd.Process.Pid
}

// attack reads the target's /proc/<pid>/environ as a process of the same
// user would, and returns what it read.
func attack(t *testing.T, pid int) ([]byte, error) {
	t.Helper()
	cmd := exec.Command("cat", "/proc/"+strconv.Itoa(pid)+"/environ")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: credential()}
	return cmd.Output()
}

// TestProcessHidesEnvironFromSameUser: a process of the same user reads a
// plain process's environment, but not a hardened one's.
func TestProcessHidesEnvironFromSameUser(t *testing.T) {
	plain := startTarget(t, "plain")
	out, err := attack(t, plain)
	if err != nil || !bytes.Contains(out, []byte("s3cr3t-plain")) {
		t.Fatalf("reading an unhardened process's environ: got %q, %v; want its secret (else this test proves nothing)", out, err)
	}
	hardened := startTarget(t, "hardened")
	out, err = attack(t, hardened)
	if err == nil || bytes.Contains(out, []byte("s3cr3t")) {
		t.Errorf("reading a hardened process's environ: got %q, %v; want permission denied", out, err)
	}
}

func TestProcessClearsDumpable(t *testing.T) {
	harden.Process() // the test binary may stay non-dumpable
	dumpable, err := harden.Dumpable()
	if err != nil {
		t.Fatal(err)
	}
	if dumpable {
		t.Errorf("after Process, Dumpable() = true, want false")
	}
}
