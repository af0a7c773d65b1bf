package harden

import (
	"fmt"
	"syscall"
)

// prctl options (linux/prctl.h).
const (
	prGetDumpable = 3
	prSetDumpable = 4
)

// Process makes this process non-dumpable (prctl PR_SET_DUMPABLE 0): its
// /proc/<pid>/environ, mem, maps, fd/ and the like then belong to root, and
// only a process with CAP_SYS_PTRACE may read them or ptrace it. A build
// that runs as the same user (the local executor, when Decap does not run
// as root; or the build container's entrypoint) can no longer read the
// secrets in this process's environment and memory; it can still signal
// it. No core dump is written either, so none can leak the secrets.
//
// Linux resets the flag when a process changes its user or group or execs
// another program: children are not covered, and need their own call.
//
// prctl fails only for an invalid argument, which these are not; should it
// fail all the same, Process panics rather than run unprotected.
func Process() {
	if _, _, errno := syscall.RawSyscall(syscall.SYS_PRCTL, prSetDumpable, 0, 0); errno != 0 {
		panic(fmt.Sprintf("harden: prctl(PR_SET_DUMPABLE, 0): %v", errno))
	}
}

// Dumpable reports whether this process is dumpable.
func Dumpable() (bool, error) {
	r, _, errno := syscall.RawSyscall(syscall.SYS_PRCTL, prGetDumpable, 0, 0)
	if errno != 0 {
		return false, fmt.Errorf("prctl(PR_GET_DUMPABLE): %w", errno)
	}
	return r != 0, nil
}
