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
)

// Tables are the files that list the namespace's TCP sockets; a test may
// point them elsewhere.
type Tables struct {
	TCP, TCP6 string
}

// ProcTables are the kernel's own.
var ProcTables = Tables{TCP: "/proc/net/tcp", TCP6: "/proc/net/tcp6"}

// Find is the Lookup that scans the tables.
func (t Tables) Find(self, peer *net.TCPAddr) (int, error) {
	for _, path := range []string{t.TCP, t.TCP6} {
		uid, err := findUID(path, self, peer)
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
		// "sl local rem st tx:rx tr:when retrnsmt uid timeout inode ..."
		fields := bytes.Fields(sc.Bytes())
		if len(fields) < 10 {
			continue
		}
		if !addrIs(fields[1], self) || !addrIs(fields[2], peer) {
			continue
		}
		if string(fields[9]) == "0" {
			return 0, ErrClosed // no inode: no owner
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
