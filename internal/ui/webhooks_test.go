package ui_test

import (
	"strings"
	"testing"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/decap-ci/decap/internal/build"
	"github.com/decap-ci/decap/internal/buildtest"
	"github.com/decap-ci/decap/internal/ui"
)

// sessionAuth lets every reader through (reads public) and says whether
// one is signed in.
type sessionAuth struct{ signedIn bool }

func (sessionAuth) Pages(next echo.HandlerFunc) echo.HandlerFunc { return next }
func (a sessionAuth) SignedIn(echo.Context) bool                 { return a.signedIn }

// TestWebhooksPage lists the subscriptions with their latest deliveries,
// dead letters' reasons escaped, never a secret; where reads are public,
// only a signed-in reader sees them.
func TestWebhooksPage(t *testing.T) {
	t.Parallel()
	clock := buildtest.NewClock(t0)
	store := buildtest.NewWebhooks(clock.Now)
	sub := build.Subscription{ID: "sub-0123456789abcdef01234567", URL: "https://hooks.example.com/decap?t=k",
		Secret: "ui-Secret-Never-Shown-42", Types: []build.EventType{build.EventSucceeded}, Team: "decap-ci", CreatedAt: t0.Add(-time.Hour)}
	if err := store.CreateSubscription(t.Context(), sub); err != nil {
		t.Fatal(err)
	}
	id := build.NewID(t0)
	if err := store.Enqueue(t.Context(), 10, build.Delivery{Subscription: sub.ID, EventID: build.EventID(id, 3),
		EventType: build.EventSucceeded, BuildID: id, Body: []byte("{}")}); err != nil {
		t.Fatal(err)
	}
	d, _, _ := store.Claim(t.Context(), sub.ID, time.Minute)
	d.State, d.Attempts, d.LastError = build.DeliveryDead, 5, "HTTP 500: "+hostile
	if err := store.Settle(t.Context(), d); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name     string
		auth     ui.Auth
		want     []string
		wantNone []string
	}{
		{"signed in", sessionAuth{signedIn: true},
			[]string{sub.ID, "https://hooks.example.com/decap?t=k", "succeeded", "of decap-ci", "1 dead letter", build.EventID(id, 3), "dead", "HTTP 500: &lt;script&gt;", `data-action="unsubscribe" data-url="/api/v1/subscriptions/` + sub.ID + `"`},
			[]string{sub.Secret}},
		{"public reader", sessionAuth{}, []string{"Sign in to see the webhooks"}, []string{sub.ID, "hooks.example.com", sub.Secret}},
	} {
		e := echo.New()
		ui.New(ui.Config{}, ui.Deps{Webhooks: store, Auth: tc.auth, Now: clock.Now}).Register(e)
		rec := get(t, e, "/ui/webhooks")
		if rec.Code != 200 {
			t.Fatalf("%s: GET /ui/webhooks = %d", tc.name, rec.Code)
		}
		body := checkHTML(t, rec)
		for _, w := range tc.want {
			if !strings.Contains(body, w) {
				t.Errorf("%s: page lacks %q", tc.name, w)
			}
		}
		for _, w := range tc.wantNone {
			if strings.Contains(body, w) {
				t.Errorf("%s: page shows %q", tc.name, w)
			}
		}
	}
	e := echo.New()
	ui.New(ui.Config{}, ui.Deps{Now: clock.Now}).Register(e)
	if body := checkHTML(t, get(t, e, "/ui/webhooks")); !strings.Contains(body, "not available") {
		t.Error("without a store the page does not say webhooks are not available")
	}
}
