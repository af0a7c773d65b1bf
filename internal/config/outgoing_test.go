package config_test

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/decap-ci/decap/internal/config"
)

func TestLoadOutgoingWebhooks(t *testing.T) {
	t.Parallel()
	c, err := config.Load(env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if o := c.Outgoing; o.AllowHTTP || o.AllowNetworks != nil || o.Attempts != 5 || o.RetryBase != 8*time.Second || o.Timeout != 10*time.Second {
		t.Errorf("defaults: %+v, want https only, no networks, 5 attempts from 8s, 10s timeout", o)
	}
	c, err = config.Load(env(map[string]string{"DECAP_OUTGOING_WEBHOOKS_ALLOW_HTTP": "true",
		"DECAP_OUTGOING_WEBHOOKS_ALLOW_NETWORKS": " 127.0.0.0/8, 10.1.2.3 ,", "DECAP_OUTGOING_WEBHOOKS_ATTEMPTS": "3",
		"DECAP_OUTGOING_WEBHOOKS_RETRY_BASE": "1s", "DECAP_OUTGOING_WEBHOOKS_TIMEOUT": "2s"}))
	if err != nil {
		t.Fatal(err)
	}
	want := []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("10.1.2.3/32")}
	if o := c.Outgoing; !o.AllowHTTP || len(o.AllowNetworks) != 2 || o.AllowNetworks[0] != want[0] || o.AllowNetworks[1] != want[1] ||
		o.Attempts != 3 || o.RetryBase != time.Second || o.Timeout != 2*time.Second {
		t.Errorf("set: %+v", o)
	}
	for name, bad := range map[string]string{
		"DECAP_OUTGOING_WEBHOOKS_ALLOW_NETWORKS": "not-a-network",
		"DECAP_OUTGOING_WEBHOOKS_ATTEMPTS":       "0",
		"DECAP_OUTGOING_WEBHOOKS_TIMEOUT":        "1h",
		"DECAP_OUTGOING_WEBHOOKS_ALLOW_HTTP":     "maybe",
	} {
		if _, err := config.Load(env(map[string]string{name: bad})); err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("%s=%s: error %v, want one naming it", name, bad, err)
		}
	}
}
