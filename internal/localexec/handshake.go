package localexec

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// The start-up handshake between Launch and decap-entrypoint -handshake.
// Launch starts the entrypoint with three more descriptors:
//
//	3  alive.lock, exclusively flocked: held for as long as the
//	   entrypoint lives, whatever happens to the launcher
//	4  "recorded", a pipe's read end: EOF once the launcher has recorded
//	   the entrypoint's pid, or has died
//	5  "ready", a pipe's write end: the entrypoint writes one byte once
//	   SIGTERM cancels the build rather than kills it
//	6  the build uid's lock (UIDLockDir/<uid>, exclusively flocked),
//	   when the build runs under a uid of its own: held for as long as the
//	   entrypoint lives, so no other build gets the uid meanwhile
//
// The launcher waits for ready, then writes the pid file, then closes
// recorded; the entrypoint starts nothing before it sees recorded close.
// So a launcher that cannot record the pid only has to kill the
// entrypoint's process group, which is all that runs; a launcher that dies
// at any point leaves either nothing running or an entrypoint that records
// itself and holds alive.lock meanwhile, so a redelivered Launch never
// starts the build twice; and a Cancel, which waits for the launch, never
// meets an entrypoint that SIGTERM would kill without a result.
const (
	aliveFD    = 3
	recordedFD = 4
	readyFD    = 5
	uidLockFD  = 6
)

// startTimeout bounds how long Launch waits for a started entrypoint to be
// ready, which takes milliseconds.
const startTimeout = time.Minute

// Handshake is decap-entrypoint's half of the start-up handshake, for an
// entrypoint that Launch started (decap-entrypoint -handshake) with the
// build directory dir. The entrypoint calls it before anything else, once it
// handles SIGTERM. Handshake keeps alive.lock for the rest of the process's
// life without passing it on to the build script (what the script starts
// is the script's process group, stopped by the entrypoint, or after its
// death by Watch); says it is ready; waits until the launcher has recorded
// its pid; and records it itself if the launcher died before. An error
// means the build must not run: the entrypoint exits without a result, as
// if it never started.
func Handshake(dir string) error {
	if err := checkAliveFD(dir); err != nil {
		return fmt.Errorf("handshake: %w", err)
	}
	// Close-on-exec: build.sh does not inherit them, yet they stay open,
	// and locked, until this process ends. (Descriptor 6 is open only for
	// a build under a uid of its own; CloseOnExec ignores a closed one.)
	syscall.CloseOnExec(aliveFD)
	syscall.CloseOnExec(uidLockFD)
	ready := os.NewFile(readyFD, "ready")
	_, err := ready.Write([]byte{1})
	ready.Close()
	if err != nil && !errors.Is(err, syscall.EPIPE) { // EPIPE: the launcher died
		return fmt.Errorf("handshake: tell the launcher: %w", err)
	}
	recorded := os.NewFile(recordedFD, "recorded")
	_, err = io.Copy(io.Discard, recorded)
	recorded.Close()
	if err != nil {
		return fmt.Errorf("handshake: wait for the launcher: %w", err)
	}
	self := process{pid: os.Getpid()}
	if self.start, err = startTime(self.pid); err != nil {
		return fmt.Errorf("handshake: %w", err)
	}
	// Recorded by the launcher, or, if it died first, by this process.
	if _, err := writeFileOnce(dir, pidFile, []byte(self.String())); err != nil {
		return fmt.Errorf("handshake: record pid: %w", err)
	}
	p, err := readProcess(filepath.Join(dir, pidFile))
	if err != nil {
		return fmt.Errorf("handshake: %w", err)
	}
	if p != self {
		return fmt.Errorf("handshake: the pid file records process %d, not this one (%d)", p.pid, self.pid)
	}
	return nil
}

// checkAliveFD checks that descriptor 3 is dir's alive.lock.
func checkAliveFD(dir string) error {
	var fd syscall.Stat_t
	if err := syscall.Fstat(aliveFD, &fd); err != nil {
		return fmt.Errorf("descriptor %d: %w", aliveFD, err)
	}
	info, err := os.Stat(filepath.Join(dir, aliveFile))
	if err != nil {
		return err
	}
	if st, ok := info.Sys().(*syscall.Stat_t); !ok || st.Dev != fd.Dev || st.Ino != fd.Ino {
		return fmt.Errorf("descriptor %d is not %s", aliveFD, filepath.Join(dir, aliveFile))
	}
	return nil
}

// awaitReady waits for the started entrypoint's ready byte on r. It fails
// when the entrypoint ended before it was ready, when ctx is done, or after
// startTimeout.
func awaitReady(ctx context.Context, r *os.File) error {
	got := make(chan error, 1)
	go func() {
		var b [1]byte
		n, err := r.Read(b[:])
		switch {
		case n == 1:
			got <- nil
		case err == nil || errors.Is(err, io.EOF) || errors.Is(err, fs.ErrClosed):
			got <- errors.New("entrypoint ended before it was ready; see " + outFile)
		default:
			got <- fmt.Errorf("wait for the entrypoint: %w", err)
		}
	}()
	timer := time.NewTimer(startTimeout)
	defer timer.Stop()
	select {
	case err := <-got:
		return err
	case <-ctx.Done():
		return fmt.Errorf("wait for the entrypoint: %w", ctx.Err())
	case <-timer.C:
		return fmt.Errorf("entrypoint not ready after %s; see %s", startTimeout, outFile)
	}
}
