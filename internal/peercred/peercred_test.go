package peercred_test

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/decap-ci/decap/internal/peercred"
)

// accept dials ln from this process and returns the server's side.
func accept(t *testing.T, ln net.Listener) net.Conn {
	t.Helper()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	server, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { server.Close() })
	return server
}

// lookups are the ways to find a peer, each tested alike.
var lookups = []struct {
	name string
	find peercred.Lookup
}{
	{"sock_diag", peercred.SockDiag},
	{"/proc/net/tcp", peercred.ProcTables.Find},
}

func TestUIDOfALocalPeer(t *testing.T) {
	t.Parallel()
	for _, network := range []string{"127.0.0.1:0", "[::1]:0"} {
		ln, err := net.Listen("tcp", network)
		if err != nil {
			t.Logf("skip %s: %v", network, err) // a machine without IPv6
			continue
		}
		defer ln.Close()
		conn := accept(t, ln)
		for _, l := range lookups {
			uid, err := peercred.UID(conn, l.find)
			if err != nil || uid != os.Getuid() {
				t.Errorf("%s, %s: UID = %d, %v; want this process's uid %d", l.name, network, uid, err, os.Getuid())
			}
		}
	}
}

// A peer that is not in the tables is not local; one without inode is
// closed; the tables are read as the kernel writes them (addresses as
// words in the machine's byte order).
func TestUIDFromTables(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	conn := accept(t, ln)
	local, remote := conn.LocalAddr().(*net.TCPAddr), conn.RemoteAddr().(*net.TCPAddr)
	enc := func(a *net.TCPAddr) string {
		var w [4]byte
		binary.BigEndian.PutUint32(w[:], binary.NativeEndian.Uint32(a.IP.To4()))
		return fmt.Sprintf("%08X:%04X", binary.BigEndian.Uint32(w[:]), a.Port)
	}
	dir := t.TempDir()
	write := func(name, lines string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte("  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"+lines), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	line := func(from, to *net.TCPAddr, uid, inode int) string {
		return fmt.Sprintf("   0: %s %s 01 00000000:00000000 00:00000000 00000000  %d        0 %d 1\n", enc(from), enc(to), uid, inode)
	}
	tests := []struct {
		name    string
		tcp     string
		wantUID int
		wantErr error
	}{
		{"the peer's socket", line(local, remote, 4242, 7) + line(remote, local, 1900000007, 12345), 1900000007, nil},
		{"the peer's socket, closed", line(local, remote, 4242, 7) + line(remote, local, 0, 0), 0, peercred.ErrClosed},
		{"only the server's own socket", line(local, remote, 4242, 7), 0, peercred.ErrNotLocal},
		{"empty", "", 0, peercred.ErrNotLocal},
	}
	for _, tt := range tests {
		tables := peercred.Tables{TCP: write(tt.name, tt.tcp), TCP6: filepath.Join(dir, "absent")}
		uid, err := peercred.UID(conn, tables.Find)
		if uid != tt.wantUID || !errors.Is(err, tt.wantErr) {
			t.Errorf("%s: UID = %d, %v; want %d, %v", tt.name, uid, err, tt.wantUID, tt.wantErr)
		}
	}
}

// The client of an IPv6 listener that reaches it over IPv4 (an
// IPv4-mapped peer), through an IPv4 or an IPv6 socket, is found too.
func TestUIDOfAnIPv4MappedPeer(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "[::]:0")
	if err != nil {
		t.Skipf("no dual-stack listener here: %v", err)
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	dialV6Socket := func() (net.Conn, error) {
		// Go dials an IPv4-mapped address over IPv4; this is an IPv6
		// socket that reaches an IPv4 address.
		fd, err := syscall.Socket(syscall.AF_INET6, syscall.SOCK_STREAM, 0)
		if err != nil {
			return nil, err
		}
		f := os.NewFile(uintptr(fd), "client")
		defer f.Close()
		sa := &syscall.SockaddrInet6{Port: port}
		copy(sa.Addr[:], net.ParseIP("::ffff:127.0.0.1").To16())
		if err := syscall.Connect(fd, sa); err != nil {
			return nil, err
		}
		return net.FileConn(f)
	}
	for _, tc := range []struct {
		name string
		dial func() (net.Conn, error)
	}{
		{"IPv4 socket", func() (net.Conn, error) { return net.Dial("tcp4", "127.0.0.1:"+strconv.Itoa(port)) }},
		{"IPv6 socket", dialV6Socket},
	} {
		client, err := tc.dial()
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		defer client.Close()
		server, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		defer server.Close()
		for _, l := range lookups {
			uid, err := peercred.UID(server, l.find)
			if err != nil || uid != os.Getuid() {
				t.Errorf("%s, %s from %v: UID = %d, %v; want this process's uid %d", l.name, tc.name, client.LocalAddr(), uid, err, os.Getuid())
			}
		}
	}
}

// addrs is a connection with made-up addresses.
type addrs struct {
	net.Conn
	local, remote net.Addr
}

func (a addrs) LocalAddr() net.Addr  { return a.local }
func (a addrs) RemoteAddr() net.Addr { return a.remote }

// A peer with no socket here is not local; one whose owner closed its
// socket is closed, whoever owned it.
func TestUIDOfNoSocket(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	conn := accept(t, ln)
	remote := *conn.RemoteAddr().(*net.TCPAddr)
	remote.Port ^= 1 // another port: no such socket
	far := &net.TCPAddr{IP: net.ParseIP("192.0.2.7"), Port: 40000}

	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	client.Write([]byte("GET / HTTP/1.0\r\n\r\n"))
	client.Close()
	closed, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer closed.Close()
	time.Sleep(50 * time.Millisecond) // the FIN is acknowledged by now

	for _, l := range lookups {
		if uid, err := peercred.UID(addrs{conn, conn.LocalAddr(), &remote}, l.find); !errors.Is(err, peercred.ErrNotLocal) {
			t.Errorf("%s, a peer with no socket: UID = %d, %v; want ErrNotLocal", l.name, uid, err)
		}
		if uid, err := peercred.UID(addrs{conn, conn.LocalAddr(), far}, l.find); !errors.Is(err, peercred.ErrNotLocal) {
			t.Errorf("%s, a remote peer: UID = %d, %v; want ErrNotLocal", l.name, uid, err)
		}
		if uid, err := peercred.UID(closed, l.find); !errors.Is(err, peercred.ErrClosed) {
			t.Errorf("%s, a peer whose owner closed its socket: UID = %d, %v; want ErrClosed", l.name, uid, err)
		}
	}
}

// A process of a refused uid connecting over loopback is dropped before
// anything of its request is read; this process's own connections pass.
func TestFilterRefusesAUserOverLoopback(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run a client as another uid")
	}
	const buildUID = 1900000999
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := make(chan error, 4)
	f := peercred.NewFilter(func(uid int) bool { return uid == buildUID })
	guarded := f.Listener(ln, func(err error) { refused <- err })
	defer guarded.Close()
	accepted := make(chan net.Conn, 4)
	go func() {
		for {
			c, err := guarded.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()

	// The refused user: bash's /dev/tcp connects, writes a request and
	// waits for an answer that must not come.
	cmd := exec.Command("bash", "-c", `trap '' PIPE; exec 3<>/dev/tcp/127.0.0.1/`+strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)+`; printf 'GET / HTTP/1.0\r\n\r\n' >&3 2>/dev/null; timeout 5 cat <&3 2>/dev/null; echo "closed"`)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: buildUID, Gid: buildUID, Groups: []uint32{}}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("client as uid %d: %v\n%s", buildUID, err, out)
	}
	if string(out) != "closed\n" {
		t.Errorf("client as uid %d read %q, want the connection closed with nothing", buildUID, out)
	}
	select {
	case err := <-refused:
		t.Logf("refused: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("the build user's connection was not refused")
	}
	select {
	case c := <-accepted:
		t.Errorf("a connection from uid %d was accepted: %v", buildUID, c.RemoteAddr())
	default:
	}

	// This process's own connection passes.
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	select {
	case s := <-accepted:
		s.Close()
	case err := <-refused:
		t.Errorf("this process's connection was refused: %v", err)
	case <-time.After(10 * time.Second):
		t.Error("this process's connection was not accepted")
	}
}

// A refused user that writes its request and closes its socket before the
// server accepts (it gives up the answer, but a request with effects
// needs none) is refused too: its closed socket lingers, owned by nobody
// (the kernel lists it with uid 0), and must not pass for root's.
func TestFilterRefusesABlindRequest(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run a client as another uid")
	}
	const buildUID = 1900000998
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := make(chan error, 4)
	f := peercred.NewFilter(func(uid int) bool { return uid == buildUID })
	guarded := f.Listener(ln, func(err error) { refused <- err })
	defer guarded.Close()

	// Sent and closed before anything is accepted.
	cmd := exec.Command("bash", "-c", `exec 3<>/dev/tcp/127.0.0.1/`+strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)+`; printf 'POST /api/v1/dispatch/pause HTTP/1.0\r\n\r\n' >&3; exec 3>&-`)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: buildUID, Gid: buildUID, Groups: []uint32{}}}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("client as uid %d: %v\n%s", buildUID, err, out)
	}
	time.Sleep(100 * time.Millisecond) // the client's socket is closed by now

	accepted := make(chan net.Conn, 4)
	go func() {
		for {
			c, err := guarded.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	select {
	case err := <-refused:
		t.Logf("refused: %v", err)
	case c := <-accepted:
		buf := make([]byte, 64)
		n, _ := c.Read(buf)
		t.Errorf("the closed connection of uid %d was accepted, and its request read: %q", buildUID, buf[:n])
		c.Close()
	case <-time.After(10 * time.Second):
		t.Fatal("the build user's connection was neither refused nor accepted")
	}
}

// BenchmarkLookup is what a service's accept loop spends on each local
// connection, by lookup, before it can accept the next.
func BenchmarkLookup(b *testing.B) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	defer client.Close()
	conn, err := ln.Accept()
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	for _, l := range lookups {
		b.Run(l.name, func(b *testing.B) {
			for b.Loop() {
				if _, err := peercred.UID(conn, l.find); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
