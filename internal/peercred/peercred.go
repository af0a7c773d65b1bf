// Package peercred tells which local user is at the other end of a TCP
// connection a server accepted: a connection from a process of this
// machine (its network namespace) has its client socket listed in
// /proc/net/tcp or /proc/net/tcp6, with the uid that owns it. The services
// use it to refuse connections from local builds, which run under users
// of their own (internal/localexec), so that a build has no network path
// to them even over loopback.
package peercred

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"sync"
	"time"
)

// ErrNotLocal means the peer is not a socket of this network namespace: a
// client on another machine (or in another namespace, such as a Pod).
var ErrNotLocal = errors.New("peer is not a local socket")

// Tables are the files that list the namespace's TCP sockets; a test may
// point them elsewhere.
type Tables struct {
	TCP, TCP6 string
}

// ProcTables are the kernel's own.
var ProcTables = Tables{TCP: "/proc/net/tcp", TCP6: "/proc/net/tcp6"}

// UID returns the uid owning the client socket of conn, a TCP connection
// this process accepted, as the kernel lists it in t. It fails with
// ErrNotLocal when no socket of the namespace has conn's remote address as
// its local address and conn's local address as its remote one.
func (t Tables) UID(conn net.Conn) (int, error) {
	local, ok1 := conn.LocalAddr().(*net.TCPAddr)
	remote, ok2 := conn.RemoteAddr().(*net.TCPAddr)
	if !ok1 || !ok2 {
		return 0, fmt.Errorf("peer of %T: not a TCP connection", conn)
	}
	for _, path := range []string{t.TCP, t.TCP6} {
		uid, err := findUID(path, remote, local)
		if err == nil || !errors.Is(err, ErrNotLocal) {
			return uid, err
		}
	}
	return 0, ErrNotLocal
}

// findUID scans one table for the socket whose local address is self and
// whose remote address is peer.
func findUID(path string, self, peer *net.TCPAddr) (int, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return 0, ErrNotLocal // no IPv6 on this machine, say
	}
	if err != nil {
		return 0, fmt.Errorf("peer lookup: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Scan() // the header
	for sc.Scan() {
		// "sl local rem st tx:rx tr:when retrnsmt uid ..."
		fields := bytes.Fields(sc.Bytes())
		if len(fields) < 8 {
			continue
		}
		if !addrIs(fields[1], self) || !addrIs(fields[2], peer) {
			continue
		}
		uid, err := strconv.Atoi(string(fields[7]))
		if err != nil {
			return 0, fmt.Errorf("peer lookup: %s: uid %q", path, fields[7])
		}
		return uid, nil
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("peer lookup: %s: %w", path, err)
	}
	return 0, ErrNotLocal
}

// addrIs reports whether field, an address of a /proc/net/tcp{,6} line
// ("0100007F:1F90": the address as 32-bit words in the machine's byte
// order, a colon, the port), is a.
func addrIs(field []byte, a *net.TCPAddr) bool {
	i := bytes.IndexByte(field, ':')
	if i < 0 {
		return false
	}
	port, err := strconv.ParseUint(string(field[i+1:]), 16, 16)
	if err != nil || int(port) != a.Port {
		return false
	}
	hexIP := field[:i]
	if len(hexIP) != 8 && len(hexIP) != 32 {
		return false
	}
	raw := make([]byte, len(hexIP)/2)
	if _, err := hex.Decode(raw, hexIP); err != nil {
		return false
	}
	ip := make(net.IP, len(raw))
	for w := 0; w < len(raw); w += 4 {
		binary.NativeEndian.PutUint32(ip[w:], binary.BigEndian.Uint32(raw[w:]))
	}
	return ip.Equal(a.IP) // an IPv4-mapped IPv6 address equals its IPv4 one
}

// Filter refuses connections from local processes whose uid refuse
// names. Accepted connections are checked before anything of them is
// read, so a refused client cannot have a request served.
type Filter struct {
	tables Tables
	refuse func(uid int) bool
	// own caches this machine's addresses: a peer from one of them, or
	// from a loopback address, is local, and is refused when its socket
	// cannot be found (it closed at once: fail closed).
	mu       sync.Mutex
	own      map[string]bool
	ownUntil time.Time
	now      func() time.Time
}

// NewFilter returns a Filter over the kernel's tables.
func NewFilter(refuse func(uid int) bool) *Filter {
	return &Filter{tables: ProcTables, refuse: refuse, now: time.Now}
}

// Check returns an error for a connection to refuse: from a local process
// running as a refused uid, or from a local address whose socket is not
// found. A remote peer passes.
func (f *Filter) Check(conn net.Conn) error {
	remote, ok := conn.RemoteAddr().(*net.TCPAddr)
	if !ok {
		return nil
	}
	uid, err := f.tables.UID(conn)
	switch {
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
