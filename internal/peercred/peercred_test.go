package peercred_test

import (
	"encoding/binary"
	"errors"
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

func TestUIDOfALocalPeer(t *testing.T) {
	t.Parallel()
	for _, network := range []string{"127.0.0.1:0", "[::1]:0"} {
		ln, err := net.Listen("tcp", network)
		if err != nil {
			t.Logf("skip %s: %v", network, err) // a machine without IPv6
			continue
		}
		defer ln.Close()
		uid, err := peercred.ProcTables.UID(accept(t, ln))
		if err != nil || uid != os.Getuid() {
			t.Errorf("%s: UID = %d, %v; want this process's uid %d", network, uid, err, os.Getuid())
		}
	}
}

// A peer that is not in the tables is not local; the tables are read as
// the kernel writes them (addresses as words in the machine's byte order).
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
		return strconv.FormatUint(uint64(binary.BigEndian.Uint32(w[:])), 16) + ":" + strconv.FormatUint(uint64(a.Port), 16)
	}
	dir := t.TempDir()
	write := func(name, lines string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte("  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"+lines), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	line := func(from, to *net.TCPAddr, uid int) string {
		return "   0: " + pad(enc(from)) + " " + pad(enc(to)) + " 01 00000000:00000000 00:00000000 00000000  " + strconv.Itoa(uid) + "        0 12345 1\n"
	}
	tests := []struct {
		name    string
		tcp     string
		wantUID int
		wantErr error
	}{
		{"the peer's socket", line(local, remote, 4242) + line(remote, local, 1900000007), 1900000007, nil},
		{"only the server's own socket", line(local, remote, 4242), 0, peercred.ErrNotLocal},
		{"empty", "", 0, peercred.ErrNotLocal},
	}
	for _, tt := range tests {
		tables := peercred.Tables{TCP: write(tt.name, tt.tcp), TCP6: filepath.Join(dir, "absent")}
		uid, err := tables.UID(conn)
		if uid != tt.wantUID || !errors.Is(err, tt.wantErr) {
			t.Errorf("%s: UID = %d, %v; want %d, %v", tt.name, uid, err, tt.wantUID, tt.wantErr)
		}
	}
}

func pad(hexAddr string) string {
	ip, port, _ := cut(hexAddr)
	for len(ip) < 8 {
		ip = "0" + ip
	}
	for len(port) < 4 {
		port = "0" + port
	}
	return ip + ":" + port
}

func cut(s string) (string, string, bool) {
	for i := range s {
		if s[i] == ':' {
			return s[:i], s[i+1:], true
		}
	}
	return s, "", false
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
