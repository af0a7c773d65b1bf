package ingest

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/decap-ci/decap/internal/build"
)

// A client is its address, an IPv6 client its /64; behind trusted proxies
// the nearest address in X-Forwarded-For that is not theirs, and nothing
// a client that is not a trusted proxy says about itself.
func TestClientKey(t *testing.T) {
	t.Parallel()
	proxies := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("fd00::/8")}
	for _, tc := range []struct {
		name    string
		trusted []netip.Prefix
		remote  string
		xff     string
		want    string
	}{
		{"IPv4 peer", nil, "203.0.113.7:4242", "", "203.0.113.7"},
		{"IPv4 peer's X-Forwarded-For is ignored", nil, "203.0.113.7:4242", "198.51.100.1", "203.0.113.7"},
		{"IPv4-mapped IPv6 peer", nil, "[::ffff:203.0.113.7]:4242", "", "203.0.113.7"},
		{"IPv6 peer: its /64", nil, "[2001:db8:1:2:3:4:5:6]:4242", "", "2001:db8:1:2::/64"},
		{"another address of the same /64", nil, "[2001:db8:1:2:ffff::1]:4242", "", "2001:db8:1:2::/64"},
		{"through a trusted proxy", proxies, "10.1.2.3:4242", "198.51.100.1", "198.51.100.1"},
		{"through two trusted proxies", proxies, "10.1.2.3:4242", "198.51.100.1, 10.9.9.9", "198.51.100.1"},
		{"a forged entry left of the real client", proxies, "10.1.2.3:4242", "192.0.2.66, 198.51.100.1", "198.51.100.1"},
		{"an untrusted peer's X-Forwarded-For", proxies, "203.0.113.7:4242", "198.51.100.1", "203.0.113.7"},
		{"through a trusted IPv6 proxy", proxies, "[fd00::1]:4242", "2001:db8:1:2::9", "2001:db8:1:2::/64"},
		{"loopback is not trusted unless configured", proxies, "127.0.0.1:4242", "198.51.100.1", "127.0.0.1"},
		{"no address", nil, "pipe", "", "unknown"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := echo.New()
			e.IPExtractor = ipExtractor(tc.trusted)
			r := httptest.NewRequest(http.MethodGet, "/", nil)
			r.RemoteAddr = tc.remote
			if tc.xff != "" {
				r.Header.Set("X-Forwarded-For", tc.xff)
			}
			if got := clientKey(e.NewContext(r, httptest.NewRecorder())); got != tc.want {
				t.Errorf("clientKey: got %q, want %q", got, tc.want)
			}
		})
	}
}

// The limiter refuses a client over its share, then everyone over the
// total, gives units back once per release, and forgets clients that
// hold nothing, so that its map stays as small as what is held.
func TestLimiter(t *testing.T) {
	t.Parallel()
	l := newLimiter(10, 6)
	a1, err := l.acquire("a", 4)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.acquire("a", 3); !errors.Is(err, errClientShare) {
		t.Errorf("a over its share: got %v, want errClientShare", err)
	}
	b1, err := l.acquire("b", 6)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.acquire("c", 1); !errors.Is(err, errAllTaken) {
		t.Errorf("c with everything taken: got %v, want errAllTaken", err)
	}
	a1()
	a1() // a second release gives nothing back
	if held, clients := l.inUse(); held != 6 || clients != 1 {
		t.Errorf("after a's release: %d held by %d clients, want 6 by 1", held, clients)
	}
	c1, err := l.acquire("c", 4)
	if err != nil {
		t.Errorf("c after a's release: %v", err)
	}
	b1()
	c1()
	if held, clients := l.inUse(); held != 0 || clients != 0 {
		t.Errorf("after every release: %d held by %d clients, want none", held, clients)
	}
}

func TestLimitsDefaults(t *testing.T) {
	t.Parallel()
	got := Limits{ClientBodyBytes: 1 << 20}.orDefaults(5 << 20)
	if got.ClientBodyBytes != 5<<20 {
		t.Errorf("ClientBodyBytes = %d, want the webhook limit (5 MiB): one client must be able to send one webhook", got.ClientBodyBytes)
	}
	if got.BodyBytes != defaultBodyBytes || got.Followers != defaultFollowers || got.ClientFollowers != defaultClientFollowers ||
		got.SmallBodyBytes != defaultSmallBodyBytes || got.FollowFor != defaultFollowFor || got.StreamWriteTimeout != defaultStreamWrite {
		t.Errorf("defaults: got %+v", got)
	}
	if got := (Limits{Followers: 4, ClientFollowers: 8}).orDefaults(0); got.ClientFollowers != 4 {
		t.Errorf("ClientFollowers over Followers: got %d, want 4", got.ClientFollowers)
	}
}

// The hub polls a build while it has followers, and forgets it when the
// last one leaves.
func TestFollowHubForgetsBuilds(t *testing.T) {
	t.Parallel()
	h := newFollowHub(nopRecords{}, time.Hour, nopObserver{})
	a, b := build.Record{BuildID: "a"}, build.Record{BuildID: "b"}
	fa1, fa2, fb := h.join(a), h.join(a), h.join(b)
	if fa1 != fa2 {
		t.Error("two followers of one build got two polls")
	}
	if n := h.count(); n != 2 {
		t.Errorf("%d builds followed, want 2", n)
	}
	h.leave(fa1)
	h.leave(fb)
	if n := h.count(); n != 1 {
		t.Errorf("after b's only follower left: %d builds followed, want 1", n)
	}
	h.leave(fa2)
	if n := h.count(); n != 0 {
		t.Errorf("after every follower left: %d builds followed, want none", n)
	}
}

// nopRecords is a Records that never answers; the hub under test never
// polls (its interval is an hour).
type nopRecords struct{ Records }

func (nopRecords) Get(context.Context, build.ID) (build.Record, error) {
	return build.Record{}, build.ErrNotFound
}

// A handler that panics after reading a body gives its body budget back:
// kept, each such request would hold its share for ever, and a few would
// have every webhook refused with 429.
func TestBodyBudgetReleasedOnPanic(t *testing.T) {
	t.Parallel()
	s := New(Config{}, Deps{})
	s.Echo().Logger.SetOutput(io.Discard) // the recovered panic's stack
	s.Echo().POST("/panics", func(c echo.Context) error {
		if _, err := s.readBody(c); err != nil {
			return err
		}
		panic("a bug")
	})
	for range 5 {
		w := httptest.NewRecorder()
		s.ServeHTTP(w, httptest.NewRequest(http.MethodPost, "/panics", strings.NewReader(strings.Repeat("x", 32<<10))))
		if w.Code != http.StatusInternalServerError {
			t.Fatalf("status %d, want 500", w.Code)
		}
	}
	if held, clients := s.edge.bodies.inUse(); held != 0 || clients != 0 {
		t.Errorf("after 5 panicking handlers the body budget holds %d bytes of %d clients, want none", held, clients)
	}
}
