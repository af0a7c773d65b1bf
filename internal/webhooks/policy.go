package webhooks

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strings"
	"syscall"

	"github.com/decap-ci/decap/internal/build"
)

// ErrRefused is why a delivery was not even tried: its URL's scheme or
// address is one the Policy refuses. Such a delivery is dead-lettered at
// once (trying again cannot help); errors wrap it with the reason.
var ErrRefused = errors.New("refused by the webhook policy")

// Policy says where outgoing webhooks may connect. A subscription's URL is
// chosen by whoever holds the API token, and the deliverer runs inside
// the cluster: without a policy a URL could make Decap POST to the cloud's
// metadata endpoint or to a service only the cluster reaches (SSRF). So
// the deliverer connects only to public unicast addresses, checked on the
// address actually dialled (after DNS: a name that resolves, or later
// re-resolves, to a refused address is refused), never through a proxy,
// never following a redirect. Allow opens networks besides (a receiver on
// loopback or a private network); link-local addresses (169.254.0.0/16,
// fe80::/10, with the metadata endpoints 169.254.169.254 and
// fd00:ec2::254) are refused whatever Allow says, as are unspecified,
// multicast and broadcast addresses.
type Policy struct {
	// AllowHTTP lets URLs be http://; otherwise they must be https://.
	AllowHTTP bool
	// Allow lists networks that may be reached although they are not
	// public (loopback, private, shared or unique-local ranges).
	Allow []netip.Prefix
}

// alwaysRefused are never reached, whatever Policy.Allow lists.
var alwaysRefused = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),
	netip.MustParsePrefix("169.254.0.0/16"), // link-local; 169.254.169.254 is the metadata endpoint
	netip.MustParsePrefix("224.0.0.0/4"),
	netip.MustParsePrefix("240.0.0.0/4"), // reserved, and 255.255.255.255
	netip.MustParsePrefix("::/128"),
	netip.MustParsePrefix("fe80::/10"),
	netip.MustParsePrefix("fd00:ec2::254/128"), // EC2's IPv6 metadata endpoint (also in fc00::/7)
	netip.MustParsePrefix("ff00::/8"),
}

// notPublic are refused unless Policy.Allow lists them.
var notPublic = []netip.Prefix{
	netip.MustParsePrefix("127.0.0.0/8"),
	netip.MustParsePrefix("10.0.0.0/8"),
	netip.MustParsePrefix("172.16.0.0/12"),
	netip.MustParsePrefix("192.168.0.0/16"),
	netip.MustParsePrefix("100.64.0.0/10"), // shared address space (carrier-grade NAT)
	netip.MustParsePrefix("192.0.0.0/24"),
	netip.MustParsePrefix("198.18.0.0/15"),
	netip.MustParsePrefix("::1/128"),
	netip.MustParsePrefix("fc00::/7"),
	netip.MustParsePrefix("64:ff9b::/96"), // NAT64: an IPv4 address, maybe a private one, behind an IPv6 one
	netip.MustParsePrefix("2002::/16"),    // 6to4: likewise
}

// CheckAddr returns nil when the policy lets the deliverer connect to a,
// an error wrapping ErrRefused otherwise.
func (p Policy) CheckAddr(a netip.Addr) error {
	a = a.Unmap()
	if !a.IsValid() {
		return fmt.Errorf("%w: no address", ErrRefused)
	}
	for _, n := range alwaysRefused {
		if n.Contains(a) {
			return fmt.Errorf("%w: %s is a link-local, metadata, multicast or unspecified address", ErrRefused, a)
		}
	}
	for _, n := range p.Allow {
		if n.Contains(a) {
			return nil
		}
	}
	for _, n := range notPublic {
		if n.Contains(a) {
			return fmt.Errorf("%w: %s is not a public address (DECAP_OUTGOING_WEBHOOKS_ALLOW_NETWORKS may allow it)", ErrRefused, a)
		}
	}
	return nil
}

// CheckURL checks a subscription's URL when it is created: its form
// (build.ValidateSubscriptionURL), its scheme, and its host when that is
// an address or "localhost". A name is checked again on every connection
// (CheckAddr on the address dialled). Errors wrap build.ErrInvalid.
func (p Policy) CheckURL(raw string) error {
	if err := build.ValidateSubscriptionURL(raw); err != nil {
		return err
	}
	u, _ := url.Parse(raw)
	if u.Scheme == "http" && !p.AllowHTTP {
		return fmt.Errorf("%w: subscription URL %q is not https (DECAP_OUTGOING_WEBHOOKS_ALLOW_HTTP allows http)", build.ErrInvalid, raw)
	}
	host := strings.TrimSuffix(strings.ToLower(u.Hostname()), ".")
	if host == "localhost" || strings.HasSuffix(host, ".localhost") {
		host = "127.0.0.1"
	}
	if a, err := netip.ParseAddr(host); err == nil {
		if err := p.CheckAddr(a); err != nil {
			return fmt.Errorf("%w: subscription URL: %v", build.ErrInvalid, err)
		}
	}
	return nil
}

// control is a net.Dialer's Control: it refuses a connection to an address
// the policy refuses, after name resolution, before the connection is
// made.
func (p Policy) control(_, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("%w: dial %q: %v", ErrRefused, address, err)
	}
	return p.CheckAddr(ap.Addr())
}

// dialContext dials through the policy.
func (p Policy) dialer() *net.Dialer {
	return &net.Dialer{Control: p.control}
}

// DialContext is a net.Dialer's DialContext that refuses what the policy
// refuses (for an http.Transport).
func (p Policy) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	return p.dialer().DialContext(ctx, network, addr)
}
