package peercred

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"syscall"
)

// The kernel's sock_diag interface (linux/sock_diag.h, linux/inet_diag.h):
// a request for one TCP socket by its four addresses and ports is answered
// from the socket hash at once, whatever the number of sockets, where
// /proc/net/tcp walks every bucket of the hash (hundreds of thousands on
// a server) on each read.
const (
	sockDiagByFamily = 20 // SOCK_DIAG_BY_FAMILY
	// inetDiagReqV2Len is sizeof(struct inet_diag_req_v2): family,
	// protocol, ext, pad, states, and the 48-byte struct inet_diag_sockid.
	inetDiagReqV2Len = 56
	// inetDiagMsgLen is sizeof(struct inet_diag_msg): family, state,
	// timer, retrans, the sockid, expires, rqueue, wqueue, uid, inode.
	inetDiagMsgLen = 72
	inetDiagUIDOff = 64
	inetDiagInoOff = 68
)

// SockDiag is the Lookup that asks the kernel, through sock_diag, for
// the one socket.
func SockDiag(self, peer *net.TCPAddr) (int, error) {
	req, err := diagRequest(self, peer)
	if err != nil {
		return 0, err
	}
	fd, err := syscall.Socket(syscall.AF_NETLINK, syscall.SOCK_DGRAM|syscall.SOCK_CLOEXEC, syscall.NETLINK_INET_DIAG)
	if err != nil {
		return 0, fmt.Errorf("peer lookup: %w", err)
	}
	defer syscall.Close(fd)
	if err := syscall.Sendto(fd, req, 0, &syscall.SockaddrNetlink{Family: syscall.AF_NETLINK}); err != nil {
		return 0, fmt.Errorf("peer lookup: %w", err)
	}
	buf := make([]byte, 4096)
	for {
		n, _, err := syscall.Recvfrom(fd, buf, 0)
		if errors.Is(err, syscall.EINTR) {
			continue
		}
		if err != nil {
			return 0, fmt.Errorf("peer lookup: %w", err)
		}
		return diagAnswer(buf[:n])
	}
}

// diagRequest is the netlink message that asks for the socket from self
// to peer: an exact lookup (no NLM_F_DUMP), IPv4 when both addresses are,
// so that an IPv6 listener's IPv4-mapped peers are found too.
func diagRequest(self, peer *net.TCPAddr) ([]byte, error) {
	family, src, dst := byte(syscall.AF_INET6), self.IP.To16(), peer.IP.To16()
	if s4, d4 := self.IP.To4(), peer.IP.To4(); s4 != nil && d4 != nil {
		family, src, dst = syscall.AF_INET, s4, d4
	}
	if src == nil || dst == nil || self.Port <= 0 || self.Port > 0xffff || peer.Port <= 0 || peer.Port > 0xffff {
		return nil, fmt.Errorf("peer lookup: no TCP endpoint: %v to %v", self, peer)
	}
	msg := make([]byte, syscall.SizeofNlMsghdr+inetDiagReqV2Len)
	binary.NativeEndian.PutUint32(msg[0:], uint32(len(msg)))
	binary.NativeEndian.PutUint16(msg[4:], sockDiagByFamily)
	binary.NativeEndian.PutUint16(msg[6:], syscall.NLM_F_REQUEST)
	r := msg[syscall.SizeofNlMsghdr:]
	r[0], r[1] = family, syscall.IPPROTO_TCP
	binary.NativeEndian.PutUint32(r[4:], ^uint32(0)) // every state
	id := r[8:]
	binary.BigEndian.PutUint16(id[0:], uint16(self.Port))
	binary.BigEndian.PutUint16(id[2:], uint16(peer.Port))
	copy(id[4:20], src)
	copy(id[20:36], dst)
	// id[36:40], the interface: any. The cookie: none (INET_DIAG_NOCOOKIE).
	binary.NativeEndian.PutUint32(id[40:], ^uint32(0))
	binary.NativeEndian.PutUint32(id[44:], ^uint32(0))
	return msg, nil
}

// diagAnswer reads the kernel's answer to diagRequest.
func diagAnswer(data []byte) (int, error) {
	msgs, err := syscall.ParseNetlinkMessage(data)
	if err != nil {
		return 0, fmt.Errorf("peer lookup: %w", err)
	}
	for _, m := range msgs {
		switch m.Header.Type {
		case syscall.NLMSG_ERROR:
			if len(m.Data) < 4 {
				return 0, errors.New("peer lookup: short netlink error")
			}
			errno := syscall.Errno(-int32(binary.NativeEndian.Uint32(m.Data)))
			if errno == syscall.ENOENT {
				return 0, ErrNotLocal
			}
			return 0, fmt.Errorf("peer lookup: %w", errno)
		case sockDiagByFamily:
			if len(m.Data) < inetDiagMsgLen {
				return 0, errors.New("peer lookup: short sock_diag answer")
			}
			// A socket its owner closed has no inode any more (and the
			// kernel reports uid 0 for it, whoever owned it).
			if binary.NativeEndian.Uint32(m.Data[inetDiagInoOff:]) == 0 {
				return 0, ErrClosed
			}
			return int(binary.NativeEndian.Uint32(m.Data[inetDiagUIDOff:])), nil
		}
	}
	return 0, errors.New("peer lookup: no answer from the kernel")
}
