package sqlite

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"
)

// maxSocketPath is the longest socket path bound directly; sun_path holds
// 108 bytes on Linux and 104 on the BSDs, the terminating NUL included.
const maxSocketPath = 100

// A waker wakes queue receivers when messages may have become receivable.
//
// In-process, waiting receivers hold the current generation channel, which
// notify closes and replaces. Across processes, every DB that has received
// binds a unix datagram socket <dir>/<random>.sock; notify sends one byte to
// every other socket in dir (from a goroutine, coalescing bursts), removing
// socket files nobody is bound to. A datagram closes the receiver's current
// generation channel. Lost datagrams cost latency, not correctness: Receive
// rechecks the database at least every few seconds.
type waker struct {
	dir     string
	dirFile *os.File // open when socket paths in dir are too long to bind directly

	mu     sync.Mutex
	gen    chan struct{} // closed on wake
	conn   *net.UnixConn // this DB's socket, nil until listen
	name   string        // its file name in dir
	closed bool

	kick chan struct{} // a cross-process wake-up is pending
	stop chan struct{}
	wg   sync.WaitGroup
}

func newWaker(dir string) (*waker, error) {
	if err := ensureDir(dir); err != nil {
		return nil, fmt.Errorf("wake directory: %w", err)
	}
	w := &waker{
		dir:  dir,
		gen:  make(chan struct{}),
		kick: make(chan struct{}, 1),
		stop: make(chan struct{}),
	}
	if len(filepath.Join(dir, "0123456789abcdef.sock")) > maxSocketPath {
		if runtime.GOOS != "linux" {
			return nil, fmt.Errorf("wake directory %s: path too long for unix sockets", dir)
		}
		// Address sockets through /proc/self/fd/N/, a short path to dir.
		f, err := os.Open(dir)
		if err != nil {
			return nil, fmt.Errorf("wake directory: %w", err)
		}
		w.dirFile = f
	}
	w.wg.Go(w.sendLoop)
	return w, nil
}

// addr is the path through which to bind or reach the socket file name.
func (w *waker) addr(name string) *net.UnixAddr {
	p := filepath.Join(w.dir, name)
	if w.dirFile != nil {
		p = fmt.Sprintf("/proc/self/fd/%d/%s", w.dirFile.Fd(), name)
	}
	return &net.UnixAddr{Name: p, Net: "unixgram"}
}

// wait returns a channel that is closed at the next wake-up. Take it before
// looking for messages, so that a wake-up in between is not missed.
func (w *waker) wait() <-chan struct{} {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.gen
}

// wakeLocal wakes this process's receivers.
func (w *waker) wakeLocal() {
	w.mu.Lock()
	defer w.mu.Unlock()
	close(w.gen)
	w.gen = make(chan struct{})
}

// notify wakes receivers here at once and in other processes soon.
func (w *waker) notify() {
	w.wakeLocal()
	select {
	case w.kick <- struct{}{}:
	default: // one is pending already
	}
}

// listen binds this DB's socket, once, so other processes can wake it.
func (w *waker) listen() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.conn != nil {
		return nil
	}
	if w.closed {
		return errors.New("database is closed")
	}
	name := token()[:16] + ".sock"
	conn, err := net.ListenUnixgram("unixgram", w.addr(name))
	if err != nil {
		return fmt.Errorf("bind wake socket: %w", err)
	}
	w.conn, w.name = conn, name
	w.wg.Go(func() { w.readLoop(conn) })
	return nil
}

func (w *waker) readLoop(conn *net.UnixConn) {
	buf := make([]byte, 16)
	for {
		if _, _, err := conn.ReadFromUnix(buf); err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Anything else is unexpected for a datagram socket; back off
			// rather than spin, and let the periodic recheck cover for it.
			select {
			case <-w.stop:
				return
			case <-time.After(time.Second):
			}
			continue
		}
		w.wakeLocal()
	}
}

func (w *waker) sendLoop() {
	for {
		select {
		case <-w.stop:
			return
		case <-w.kick:
			w.sendAll()
		}
	}
}

// sendAll sends one byte to every other socket in dir, ignoring errors and
// removing socket files that nobody is bound to.
func (w *waker) sendAll() {
	entries, err := os.ReadDir(w.dir)
	if err != nil {
		return
	}
	w.mu.Lock()
	own := w.name
	w.mu.Unlock()
	for _, e := range entries {
		name := e.Name()
		if name == own || !strings.HasSuffix(name, ".sock") {
			continue
		}
		c, err := net.DialUnix("unixgram", nil, w.addr(name))
		if err != nil {
			if errors.Is(err, syscall.ECONNREFUSED) {
				_ = os.Remove(filepath.Join(w.dir, name)) // its process is gone
			}
			continue
		}
		// A full receive buffer means a wake-up is pending there already.
		_ = c.SetWriteDeadline(time.Now().Add(50 * time.Millisecond))
		_, _ = c.Write([]byte{1})
		_ = c.Close()
	}
}

// close unbinds and removes this DB's socket and stops the goroutines.
// Receivers waiting in this process are woken so they notice.
func (w *waker) close() {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return
	}
	w.closed = true
	close(w.stop)
	if w.conn != nil {
		_ = w.conn.Close()
		_ = os.Remove(filepath.Join(w.dir, w.name))
	}
	w.mu.Unlock()
	w.wg.Wait()
	if w.dirFile != nil {
		_ = w.dirFile.Close()
	}
	w.wakeLocal()
}
