package config

import (
	"net/netip"
	"strings"
	"time"
)

// Outgoing configures the outgoing webhooks (internal/webhooks): where
// deliveries may connect and how they are retried.
type Outgoing struct {
	// AllowHTTP lets subscriptions use http:// URLs
	// (DECAP_OUTGOING_WEBHOOKS_ALLOW_HTTP; https only by default).
	AllowHTTP bool
	// AllowNetworks are networks deliveries may reach although they are
	// not public: loopback, private ranges
	// (DECAP_OUTGOING_WEBHOOKS_ALLOW_NETWORKS, comma-separated CIDRs).
	// Link-local and metadata addresses stay refused whatever it lists.
	AllowNetworks []netip.Prefix
	// Attempts, RetryBase and Timeout: DECAP_OUTGOING_WEBHOOKS_ATTEMPTS
	// (5), _RETRY_BASE (8s, doubling after each failure) and _TIMEOUT
	// (10s an attempt).
	Attempts  int
	RetryBase time.Duration
	Timeout   time.Duration
}

func loadOutgoing(getenv func(string) string, dur func(string, time.Duration) time.Duration,
	integer func(string, int, int) int, boolean func(string) bool, fail func(name, why string)) Outgoing {
	o := Outgoing{
		AllowHTTP: boolean("DECAP_OUTGOING_WEBHOOKS_ALLOW_HTTP"),
		Attempts:  integer("DECAP_OUTGOING_WEBHOOKS_ATTEMPTS", 5, 1),
		RetryBase: dur("DECAP_OUTGOING_WEBHOOKS_RETRY_BASE", 8*time.Second),
		Timeout:   dur("DECAP_OUTGOING_WEBHOOKS_TIMEOUT", 10*time.Second),
	}
	if o.Attempts > 50 {
		fail("DECAP_OUTGOING_WEBHOOKS_ATTEMPTS", "want 1 to 50")
	}
	if o.Timeout > 5*time.Minute {
		fail("DECAP_OUTGOING_WEBHOOKS_TIMEOUT", "want at most 5m")
	}
	for _, f := range strings.Split(getenv("DECAP_OUTGOING_WEBHOOKS_ALLOW_NETWORKS"), ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		p, err := netip.ParsePrefix(f)
		if err != nil {
			a, aerr := netip.ParseAddr(f)
			if aerr != nil {
				fail("DECAP_OUTGOING_WEBHOOKS_ALLOW_NETWORKS", "want comma-separated networks such as 10.0.0.0/8 or addresses")
				continue
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		o.AllowNetworks = append(o.AllowNetworks, p.Masked())
	}
	return o
}
