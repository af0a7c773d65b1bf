package config_test

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/decap-ci/decap/internal/config"
)

func TestLoadHTTP(t *testing.T) {
	t.Parallel()
	c, err := config.Load(env(nil))
	if err != nil {
		t.Fatal(err)
	}
	want := config.HTTP{
		ReadTimeout: 30 * time.Second, WriteTimeout: 60 * time.Second, IdleTimeout: 75 * time.Second,
		WebhookMaxBody: 5 << 20, BodyBudget: 16 << 20, ClientBodyBudget: 10 << 20,
		MaxFollowers: 256, ClientFollowers: 8, FollowMaxDuration: 30 * time.Minute,
	}
	if diff := cmp.Diff(want, c.HTTP, cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); diff != "" {
		t.Errorf("defaults (-want +got):\n%s", diff)
	}
	c, err = config.Load(env(map[string]string{
		"DECAP_HTTP_READ_TIMEOUT": "5s", "DECAP_HTTP_WRITE_TIMEOUT": "10s", "DECAP_HTTP_IDLE_TIMEOUT": "2s",
		"DECAP_WEBHOOK_MAX_BODY": "1MiB", "DECAP_BODY_BUDGET": "8MiB", "DECAP_BODY_BUDGET_PER_CLIENT": "1048576",
		"DECAP_MAX_FOLLOWERS": "10", "DECAP_MAX_FOLLOWERS_PER_CLIENT": "2", "DECAP_FOLLOW_MAX_DURATION": "1m",
		"DECAP_TRUSTED_PROXIES": "10.0.0.0/8, 192.0.2.7,fd00::/8",
	}))
	if err != nil {
		t.Fatal(err)
	}
	want = config.HTTP{
		ReadTimeout: 5 * time.Second, WriteTimeout: 10 * time.Second, IdleTimeout: 2 * time.Second,
		WebhookMaxBody: 1 << 20, BodyBudget: 8 << 20, ClientBodyBudget: 1 << 20,
		MaxFollowers: 10, ClientFollowers: 2, FollowMaxDuration: time.Minute,
		TrustedProxies: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("192.0.2.7/32"), netip.MustParsePrefix("fd00::/8")},
	}
	if diff := cmp.Diff(want, c.HTTP, cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); diff != "" {
		t.Errorf("set (-want +got):\n%s", diff)
	}
}

func TestLoadHTTPErrors(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{"DECAP_HTTP_READ_TIMEOUT": "0s"}, "DECAP_HTTP_READ_TIMEOUT: want a positive duration"},
		{map[string]string{"DECAP_HTTP_IDLE_TIMEOUT": "soon"}, "DECAP_HTTP_IDLE_TIMEOUT: want a positive duration"},
		{map[string]string{"DECAP_WEBHOOK_MAX_BODY": "5MB"}, "DECAP_WEBHOOK_MAX_BODY: want a size in bytes"},
		{map[string]string{"DECAP_WEBHOOK_MAX_BODY": "26MiB"}, "DECAP_WEBHOOK_MAX_BODY: want 1KiB to 25MiB"},
		{map[string]string{"DECAP_BODY_BUDGET_PER_CLIENT": "1MiB"}, "DECAP_BODY_BUDGET_PER_CLIENT: want at least DECAP_WEBHOOK_MAX_BODY"},
		{map[string]string{"DECAP_BODY_BUDGET": "6MiB"}, "DECAP_BODY_BUDGET: want at least DECAP_BODY_BUDGET_PER_CLIENT"},
		{map[string]string{"DECAP_BODY_BUDGET": "-1"}, "DECAP_BODY_BUDGET: want a size in bytes"},
		{map[string]string{"DECAP_MAX_FOLLOWERS": "0"}, "DECAP_MAX_FOLLOWERS: want a whole number >= 1"},
		{map[string]string{"DECAP_MAX_FOLLOWERS": "4"}, "DECAP_MAX_FOLLOWERS_PER_CLIENT: want at most DECAP_MAX_FOLLOWERS"},
		{map[string]string{"DECAP_FOLLOW_MAX_DURATION": "-1m"}, "DECAP_FOLLOW_MAX_DURATION: want a positive duration"},
		{map[string]string{"DECAP_TRUSTED_PROXIES": "10.0.0.0/33"}, "DECAP_TRUSTED_PROXIES: \"10.0.0.0/33\" is not a network"},
		{map[string]string{"DECAP_TRUSTED_PROXIES": "10.0.0.0/8,0.0.0.0/0"}, "DECAP_TRUSTED_PROXIES: \"0.0.0.0/0\" trusts every address"},
		{map[string]string{"DECAP_TRUSTED_PROXIES": "::/0"}, "DECAP_TRUSTED_PROXIES: \"::/0\" trusts every address"},
	} {
		_, err := config.Load(env(tc.env))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: got %v, want an error containing %q", tc.env, err, tc.want)
		}
	}
}
