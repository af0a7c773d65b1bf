package localexec

import (
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// The end of a build is an event, so that Watch need not wait for its next
// poll. The launcher of a build is decap-entrypoint's parent and waits for
// it (start); once it has reaped the process, which is then gone, result or
// not, it sends one byte to every watcher's socket in <RunDir>/.watch/, a
// directory of unix datagram sockets, whatever process the watcher runs
// in. Launch and Cancel do the same when they record the end of a build
// that never started. Each Watch binds a socket of its own there and scans
// at once when a byte arrives.
//
// An end nobody sends (the launcher died before its build ended, so the
// entrypoint was reparented), or a byte that is lost (no watcher bound yet,
// its buffer full, which means it has a scan pending anyway), is found by
// the next poll, every PollInterval: events make the end quick, the poll
// keeps it certain.
//
// The directory is the service user's alone (0700), like the sockets in
// it: a build user, who may pass through RunDir to its own directory,
// cannot wake anyone, and a byte only makes a watcher scan.
const watchDir = ".watch"

// maxSocketPath is the longest socket path bound or dialled directly;
// sun_path holds 108 bytes on Linux, the terminating NUL included. Longer
// paths go through /proc/self/fd/N/, a short path to the directory.
const maxSocketPath = 100

// sendTimeout bounds a send to one watcher's socket; a full buffer means
// that watcher has a wake-up pending already.
const sendTimeout = 50 * time.Millisecond

// watchSockets is the directory of watchers' sockets, opened for one
// listen or one round of sends.
type watchSockets struct {
	dir string
	f   *os.File // dir, for paths too long to use directly
}

// openWatchSockets opens RunDir's watch directory, creating it if create
// is set; fs.ErrNotExist without create means nobody watches.
func (e *Executor) openWatchSockets(create bool) (*watchSockets, error) {
	dir := filepath.Join(e.cfg.RunDir, watchDir)
	if create {
		if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
			return nil, err
		}
		if err := os.Chmod(dir, 0o700); err != nil {
			return nil, err
		}
	}
	f, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	return &watchSockets{dir: dir, f: f}, nil
}

func (w *watchSockets) close() { w.f.Close() }

// addr is the address of the socket name in the directory.
func (w *watchSockets) addr(name string) *net.UnixAddr {
	p := filepath.Join(w.dir, name)
	if len(p) > maxSocketPath {
		p = fmt.Sprintf("/proc/self/fd/%d/%s", w.f.Fd(), name)
	}
	return &net.UnixAddr{Name: p, Net: "unixgram"}
}

// listenEnds binds a socket of this watcher's in the watch directory and
// returns a channel that receives a value, coalesced, whenever a launcher
// sends an end; stop unbinds and removes the socket and returns once its
// reader has stopped. An error means no socket: Watch then polls only.
func (e *Executor) listenEnds() (wake <-chan struct{}, stop func(), err error) {
	w, err := e.openWatchSockets(true)
	if err != nil {
		return nil, nil, fmt.Errorf("watch directory: %w", err)
	}
	name := rand.Text() + ".sock"
	conn, err := net.ListenUnixgram("unixgram", w.addr(name))
	if err != nil {
		w.close()
		return nil, nil, fmt.Errorf("bind watch socket: %w", err)
	}
	c := make(chan struct{}, 1)
	var wg sync.WaitGroup
	wg.Go(func() {
		buf := make([]byte, 64)
		for {
			if _, _, err := conn.ReadFromUnix(buf); err != nil {
				if errors.Is(err, net.ErrClosed) {
					return
				}
				// Not expected of a datagram socket; the poll covers for it.
				e.log.Warn("read watch socket", "err", err)
				time.Sleep(time.Second)
				continue
			}
			select {
			case c <- struct{}{}:
			default: // a scan is pending already
			}
		}
	})
	return c, func() {
		conn.Close()
		wg.Wait()
		_ = os.Remove(filepath.Join(w.dir, name))
		w.close()
	}, nil
}

// notifyEnded tells every watcher, in any process, that a build ended. It
// never fails: a lost wake-up costs a poll interval, not an outcome.
func (e *Executor) notifyEnded() {
	w, err := e.openWatchSockets(false)
	if err != nil {
		return // nobody watches (yet)
	}
	defer w.close()
	names, err := w.f.Readdirnames(-1)
	if err != nil {
		return
	}
	for _, name := range names {
		if !strings.HasSuffix(name, ".sock") {
			continue
		}
		c, err := net.DialUnix("unixgram", nil, w.addr(name))
		if err != nil {
			if errors.Is(err, syscall.ECONNREFUSED) {
				// Its watcher is gone without removing it (killed).
				_ = os.Remove(filepath.Join(w.dir, name))
			}
			continue
		}
		_ = c.SetWriteDeadline(time.Now().Add(sendTimeout))
		_, _ = c.Write([]byte{1})
		_ = c.Close()
	}
}

// reap waits for the started entrypoint cmd, so that no zombie stays while
// this process lives, and then tells the watchers that its build ended.
func (e *Executor) reap(cmd *exec.Cmd) {
	_ = cmd.Wait() // how it ended is in result.json, or its absence
	e.notifyEnded()
}
