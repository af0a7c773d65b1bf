package buildtest

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/decap-ci/decap/internal/build"
)

// NewWebhooksFunc returns a new, empty Webhooks that reads time from clock.
type NewWebhooksFunc func(t *testing.T, clock *Clock) Webhooks

// TestWebhooks runs the Webhooks contract. Subtests run in parallel.
func TestWebhooks(t *testing.T, newWebhooks NewWebhooksFunc) {
	for _, tc := range []struct {
		name string
		test func(*testing.T, NewWebhooksFunc)
	}{
		{"subscriptions", testWebhooksSubscriptions},
		{"invalid subscriptions", testWebhooksInvalid},
		{"deliveries in order", testWebhooksOrder},
		{"retry later", testWebhooksRetry},
		{"a lapsed claim", testWebhooksLapsedClaim},
		{"queue full", testWebhooksQueueFull},
		{"delete drops deliveries", testWebhooksDelete},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.test(t, newWebhooks)
		})
	}
}

// newSubscription returns a valid subscription created now, its ID made
// from n.
func newSubscription(clock *Clock, n int) build.Subscription {
	return build.Subscription{ID: fmt.Sprintf("sub-%024x", n), URL: fmt.Sprintf("https://hooks.example.com/%d?x=1", n),
		Secret: "0123456789abcdef-secret", CreatedAt: clock.Now()}
}

func newDelivery(sub string, event int) build.Delivery {
	id := build.ID("0190d7a4-0000-7000-8000-000000000001")
	return build.Delivery{Subscription: sub, EventID: build.EventID(id, event), EventType: build.EventQueued, BuildID: id,
		Body: fmt.Appendf(nil, `{"n":%d}`, event)}
}

func mustCreate(t *testing.T, w Webhooks, s build.Subscription) {
	t.Helper()
	if err := w.CreateSubscription(t.Context(), s); err != nil {
		t.Fatalf("CreateSubscription(%s) error = %v", s.ID, err)
	}
}

func mustClaim(t *testing.T, w Webhooks, sub string, lease time.Duration) (build.Delivery, bool) {
	t.Helper()
	d, ok, err := w.Claim(t.Context(), sub, lease)
	if err != nil {
		t.Fatalf("Claim(%s) error = %v", sub, err)
	}
	return d, ok
}

func testWebhooksSubscriptions(t *testing.T, newWebhooks NewWebhooksFunc) {
	clock := NewClock(time.Time{})
	w := newWebhooks(t, clock)
	a := newSubscription(clock, 1)
	a.Types = []build.EventType{build.EventSucceeded, build.EventFailed}
	a.Team, a.Project = "ae6rt", "dynamodb-lab"
	clock.Advance(time.Second)
	b := newSubscription(clock, 2)
	mustCreate(t, w, b)
	mustCreate(t, w, a)
	got, err := w.Subscriptions(t.Context())
	if err != nil {
		t.Fatalf("Subscriptions() error = %v", err)
	}
	if diff := cmp.Diff([]build.Subscription{a, b}, got); diff != "" {
		t.Errorf("Subscriptions() oldest first (-want +got):\n%s", diff)
	}
	dup := b
	dup.URL = "https://other.example.com/"
	if err := w.CreateSubscription(t.Context(), dup); !errors.Is(err, build.ErrConflict) {
		t.Errorf("CreateSubscription(taken id) error = %v, want ErrConflict", err)
	}
	if err := w.DeleteSubscription(t.Context(), a.ID); err != nil {
		t.Fatalf("DeleteSubscription() error = %v", err)
	}
	if err := w.DeleteSubscription(t.Context(), a.ID); !errors.Is(err, build.ErrNotFound) {
		t.Errorf("DeleteSubscription(gone) error = %v, want ErrNotFound", err)
	}
	got, _ = w.Subscriptions(t.Context())
	if diff := cmp.Diff([]build.Subscription{b}, got); diff != "" {
		t.Errorf("Subscriptions() after delete (-want +got):\n%s", diff)
	}
}

func testWebhooksInvalid(t *testing.T, newWebhooks NewWebhooksFunc) {
	clock := NewClock(time.Time{})
	w := newWebhooks(t, clock)
	for name, change := range map[string]func(*build.Subscription){
		"bad id":            func(s *build.Subscription) { s.ID = "sub-../../x" },
		"ftp url":           func(s *build.Subscription) { s.URL = "ftp://example.com/" },
		"url with user":     func(s *build.Subscription) { s.URL = "https://u:p@example.com/" },
		"short secret":      func(s *build.Subscription) { s.Secret = "short" },
		"unknown type":      func(s *build.Subscription) { s.Types = []build.EventType{"io.decap.build.exploded"} },
		"project sans team": func(s *build.Subscription) { s.Project = "p" },
		"hostile team":      func(s *build.Subscription) { s.Team = "../etc" },
	} {
		s := newSubscription(clock, 7)
		change(&s)
		if err := w.CreateSubscription(t.Context(), s); !errors.Is(err, build.ErrInvalid) {
			t.Errorf("%s: CreateSubscription() error = %v, want ErrInvalid", name, err)
		}
	}
	if got, _ := w.Subscriptions(t.Context()); len(got) != 0 {
		t.Errorf("Subscriptions() = %d after invalid creates, want 0", len(got))
	}
}

func testWebhooksOrder(t *testing.T, newWebhooks NewWebhooksFunc) {
	clock := NewClock(time.Time{})
	w := newWebhooks(t, clock)
	s, other := newSubscription(clock, 1), newSubscription(clock, 2)
	mustCreate(t, w, s)
	mustCreate(t, w, other)
	ds := []build.Delivery{newDelivery(s.ID, 1), newDelivery(s.ID, 2), newDelivery(other.ID, 1), newDelivery(s.ID, 3),
		newDelivery("sub-000000000000000000000099", 1)}
	if err := w.Enqueue(t.Context(), 100, ds...); err != nil {
		t.Fatalf("Enqueue() error = %v", err)
	}
	// A redelivered event is dropped.
	if err := w.Enqueue(t.Context(), 100, newDelivery(s.ID, 2)); err != nil {
		t.Fatalf("Enqueue(again) error = %v", err)
	}
	for want := 1; want <= 3; want++ {
		d, ok := mustClaim(t, w, s.ID, time.Minute)
		if !ok || d.EventID != newDelivery(s.ID, want).EventID || string(d.Body) != fmt.Sprintf(`{"n":%d}`, want) {
			t.Fatalf("Claim() = %s %q claimed %v, want event %d claimed", d.EventID, d.Body, ok, want)
		}
		// Held: the next claim gets it back unclaimed, not the one behind it.
		if again, ok := mustClaim(t, w, s.ID, time.Minute); ok || again.EventID != d.EventID || !again.NextAttemptAt.After(clock.Now()) {
			t.Fatalf("Claim() while held = %s claimed %v next %v, want %s unclaimed", again.EventID, ok, again.NextAttemptAt, d.EventID)
		}
		d.State, d.Attempts = build.DeliveryDelivered, 1
		if err := w.Settle(t.Context(), d); err != nil {
			t.Fatalf("Settle() error = %v", err)
		}
		if err := w.Settle(t.Context(), d); !errors.Is(err, build.ErrConflict) {
			t.Errorf("Settle() twice error = %v, want ErrConflict", err)
		}
	}
	if _, _, err := w.Claim(t.Context(), s.ID, time.Minute); !errors.Is(err, build.ErrNotFound) {
		t.Errorf("Claim() of an empty queue error = %v, want ErrNotFound", err)
	}
	got, err := w.Deliveries(t.Context(), s.ID, 2)
	if err != nil {
		t.Fatalf("Deliveries() error = %v", err)
	}
	if len(got) != 2 || got[0].EventID != newDelivery(s.ID, 3).EventID || got[0].State != build.DeliveryDelivered ||
		got[0].Body != nil || got[0].Claim != "" || got[1].EventID != newDelivery(s.ID, 2).EventID {
		t.Errorf("Deliveries(limit 2) = %+v, want events 3 and 2, delivered, no bodies", got)
	}
	if d, ok := mustClaim(t, w, other.ID, time.Minute); !ok || d.EventID != newDelivery(other.ID, 1).EventID {
		t.Errorf("Claim(other) = %s %v, want its own event", d.EventID, ok)
	}
}

func testWebhooksRetry(t *testing.T, newWebhooks NewWebhooksFunc) {
	clock := NewClock(time.Time{})
	w := newWebhooks(t, clock)
	s := newSubscription(clock, 1)
	mustCreate(t, w, s)
	if err := w.Enqueue(t.Context(), 100, newDelivery(s.ID, 1), newDelivery(s.ID, 2)); err != nil {
		t.Fatal(err)
	}
	d, _ := mustClaim(t, w, s.ID, time.Minute)
	d.State, d.Attempts, d.NextAttemptAt, d.LastError = build.DeliveryPending, 1, clock.Now().Add(10*time.Second), "HTTP 503"
	if err := w.Settle(t.Context(), d); err != nil {
		t.Fatalf("Settle(retry) error = %v", err)
	}
	// Not due: the head comes back unclaimed, and nothing behind it passes.
	if got, ok := mustClaim(t, w, s.ID, time.Minute); ok || got.EventID != d.EventID || got.Attempts != 1 || got.LastError != "HTTP 503" {
		t.Fatalf("Claim() before due = %+v claimed %v, want %s unclaimed with its attempt", got, ok, d.EventID)
	}
	clock.Advance(10 * time.Second)
	got, ok := mustClaim(t, w, s.ID, time.Minute)
	if !ok || got.EventID != d.EventID || got.Attempts != 1 {
		t.Fatalf("Claim() when due = %s attempts %d claimed %v, want %s", got.EventID, got.Attempts, ok, d.EventID)
	}
	got.State, got.Attempts, got.LastError = build.DeliveryDead, 2, string(make([]byte, 2*build.MaxDeliveryReason))
	if err := w.Settle(t.Context(), got); err != nil {
		t.Fatalf("Settle(dead) error = %v", err)
	}
	if next, ok := mustClaim(t, w, s.ID, time.Minute); !ok || next.EventID != newDelivery(s.ID, 2).EventID {
		t.Errorf("Claim() after a dead letter = %s, want the next event", next.EventID)
	}
	list, _ := w.Deliveries(t.Context(), s.ID, 10)
	if len(list) != 2 || list[1].State != build.DeliveryDead || len(list[1].LastError) > build.MaxDeliveryReason {
		t.Errorf("Deliveries() = %+v, want the dead letter with a bounded reason", list)
	}
}

func testWebhooksLapsedClaim(t *testing.T, newWebhooks NewWebhooksFunc) {
	clock := NewClock(time.Time{})
	w := newWebhooks(t, clock)
	s := newSubscription(clock, 1)
	mustCreate(t, w, s)
	if err := w.Enqueue(t.Context(), 100, newDelivery(s.ID, 1)); err != nil {
		t.Fatal(err)
	}
	first, _ := mustClaim(t, w, s.ID, 30*time.Second)
	clock.Advance(31 * time.Second)
	second, ok := mustClaim(t, w, s.ID, 30*time.Second)
	if !ok || second.Claim == first.Claim {
		t.Fatalf("Claim() after the lease = claimed %v claim %q, want a new claim", ok, second.Claim)
	}
	first.State = build.DeliveryDelivered
	if err := w.Settle(t.Context(), first); !errors.Is(err, build.ErrConflict) {
		t.Errorf("Settle(lapsed claim) error = %v, want ErrConflict", err)
	}
	second.State = build.DeliveryDelivered
	if err := w.Settle(t.Context(), second); err != nil {
		t.Errorf("Settle(current claim) error = %v", err)
	}
}

func testWebhooksQueueFull(t *testing.T, newWebhooks NewWebhooksFunc) {
	clock := NewClock(time.Time{})
	w := newWebhooks(t, clock)
	s := newSubscription(clock, 1)
	mustCreate(t, w, s)
	if err := w.Enqueue(t.Context(), 2, newDelivery(s.ID, 1), newDelivery(s.ID, 2), newDelivery(s.ID, 3)); err != nil {
		t.Fatal(err)
	}
	list, _ := w.Deliveries(t.Context(), s.ID, 10)
	if len(list) != 3 || list[0].State != build.DeliveryDead || list[0].LastError == "" ||
		list[1].State != build.DeliveryPending || list[2].State != build.DeliveryPending {
		t.Errorf("Deliveries() = %+v, want the third dead (queue full), two pending", list)
	}
}

func testWebhooksDelete(t *testing.T, newWebhooks NewWebhooksFunc) {
	clock := NewClock(time.Time{})
	w := newWebhooks(t, clock)
	s := newSubscription(clock, 1)
	mustCreate(t, w, s)
	if err := w.Enqueue(t.Context(), 100, newDelivery(s.ID, 1)); err != nil {
		t.Fatal(err)
	}
	d, _ := mustClaim(t, w, s.ID, time.Minute)
	if err := w.DeleteSubscription(t.Context(), s.ID); err != nil {
		t.Fatal(err)
	}
	d.State = build.DeliveryDelivered
	if err := w.Settle(t.Context(), d); !errors.Is(err, build.ErrNotFound) {
		t.Errorf("Settle() after delete error = %v, want ErrNotFound", err)
	}
	if list, _ := w.Deliveries(t.Context(), s.ID, 10); len(list) != 0 {
		t.Errorf("Deliveries() after delete = %d, want 0", len(list))
	}
	// A new subscription under the same ID starts with no deliveries.
	mustCreate(t, w, s)
	if _, _, err := w.Claim(t.Context(), s.ID, time.Minute); !errors.Is(err, build.ErrNotFound) {
		t.Errorf("Claim() after re-create error = %v, want ErrNotFound", err)
	}
}
