// Package peercred tells which local user is at the other end of a TCP
// connection a server accepted: a connection from a process of this
// machine (its network namespace) has its client socket in the kernel's
// socket table, with the uid that owns it. The services use it to refuse
// connections from local builds, which run under users of their own
// (internal/localexec), so that a build has no network path to them even
// over loopback.
package peercred

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"time"
)

// ErrNotLocal means the peer is not a socket of this network namespace: a
// client on another machine (or in another namespace, such as a Pod).
var ErrNotLocal = errors.New("peer is not a local socket")

// ErrClosed means the peer's socket is local but closed by its owner,
// who is no longer known: a client that sent its request and left. (The
// kernel keeps such a socket, without owner, until its connection ends,
// and lists it with uid 0, whoever owned it.)
var ErrClosed = errors.New("peer socket is closed by its owner")

// A Lookup returns the uid owning the TCP socket of this network
// namespace whose local address is self and whose remote address is peer:
// ErrNotLocal when there is none, ErrClosed when its owner closed it.
// SockDiag and Tables.Find are Lookups.
type Lookup func(self, peer *net.TCPAddr) (int, error)

// UID returns the uid owning the client socket of conn, a TCP connection
// this process accepted, as find finds it.
func UID(conn net.Conn, find Lookup) (int, error) {
	local, ok1 := conn.LocalAddr().(*net.TCPAddr)
	remote, ok2 := conn.RemoteAddr().(*net.TCPAddr)
	if !ok1 || !ok2 {
		return 0, fmt.Errorf("peer of %T: not a TCP connection", conn)
	}
	return find(remote, local)
}

// Filter refuses connections from local processes whose uid refuse
// names. Accepted connections are checked before anything of them is
// read, so a refused client cannot have a request served.
type Filter struct {
	find   Lookup
	refuse func(uid int) bool
	// own caches this machine's addresses: a peer from one of them, or
	// from a loopback address, is local, and is refused when its socket
	// cannot be found (it closed at once: fail closed).
	mu       sync.Mutex
	own      map[string]bool
	ownUntil time.Time
	now      func() time.Time
}

// NewFilter returns a Filter that looks peers up with SockDiag, one
// question to the kernel per connection, or, where SockDiag does not
// work (a kernel without tcp_diag), in ProcTables, which the kernel
// writes by walking its whole socket hash on every read: milliseconds per
// connection, in the server's accept loop.
func NewFilter(refuse func(uid int) bool) *Filter {
	find := Lookup(ProcTables.Find)
	if sockDiagWorks() {
		find = SockDiag
	}
	return &Filter{find: find, refuse: refuse, now: time.Now}
}

// sockDiagWorks reports whether SockDiag finds a connection of this
// process's own.
func sockDiagWorks() bool {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return false
	}
	defer ln.Close()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		return false
	}
	defer client.Close()
	server, err := ln.Accept()
	if err != nil {
		return false
	}
	defer server.Close()
	_, err = UID(server, SockDiag)
	return err == nil
}

// Check returns an error for a connection to refuse: from a local process
// running as a refused uid; from a local socket whose owner closed it, and
// so is unknown (a build may send a request and close at once, if it does
// not want the answer); or from a local address whose socket is not found
// (it was reset at once: fail closed). A remote peer passes.
func (f *Filter) Check(conn net.Conn) error {
	remote, ok := conn.RemoteAddr().(*net.TCPAddr)
	if !ok {
		return nil
	}
	uid, err := UID(conn, f.find)
	switch {
	case errors.Is(err, ErrClosed):
		return fmt.Errorf("connection from %s: %w", remote, err)
	case errors.Is(err, ErrNotLocal):
		if f.isOwn(remote.IP) {
			return fmt.Errorf("connection from %s: a local peer whose socket is gone", remote)
		}
		return nil
	case err != nil:
		if f.isOwn(remote.IP) {
			return fmt.Errorf("connection from %s: %w", remote, err)
		}
		return nil
	case f.refuse(uid):
		return fmt.Errorf("connection from %s: a local process of uid %d, which runs builds", remote, uid)
	}
	return nil
}

// isOwn reports whether ip is a loopback address or one of this machine's,
// read at most every 30 seconds.
func (f *Filter) isOwn(ip net.IP) bool {
	if ip.IsLoopback() {
		return true
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if now := f.now(); now.After(f.ownUntil) {
		f.own = map[string]bool{}
		if addrs, err := net.InterfaceAddrs(); err == nil {
			for _, a := range addrs {
				if n, ok := a.(*net.IPNet); ok {
					f.own[n.IP.To16().String()] = true
				}
			}
		}
		f.ownUntil = now.Add(30 * time.Second)
	}
	return f.own[ip.To16().String()]
}

// Listener wraps ln so that Accept drops the connections f refuses; each
// refusal is handed to refused (e.g. to log it).
func (f *Filter) Listener(ln net.Listener, refused func(error)) net.Listener {
	return &listener{Listener: ln, f: f, refused: refused}
}

type listener struct {
	net.Listener
	f       *Filter
	refused func(error)
}

func (l *listener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if err := l.f.Check(c); err != nil {
			c.Close()
			if l.refused != nil {
				l.refused(err)
			}
			continue
		}
		return c, nil
	}
}
