//go:build !linux

package peercred

import "net"

// SockDiag finds no local socket outside Linux, where Decap's services
// only run for development (builds run under users of their own only on
// Linux).
func SockDiag(self, peer *net.TCPAddr) (int, error) { return 0, ErrNotLocal }
