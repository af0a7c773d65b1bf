package buildtest

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/decap-ci/decap/internal/build"
)

// Webhooks is the port TestWebhooks checks.
type Webhooks = build.Webhooks

// FakeWebhooks is an in-memory build.Webhooks measured by an injected
// clock. It is safe for concurrent use.
type FakeWebhooks struct {
	now func() time.Time

	mu     sync.Mutex
	subs   []build.Subscription
	queue  []build.Delivery // every delivery, in enqueue order
	claims int
}

// NewWebhooks returns a FakeWebhooks with no subscriptions.
func NewWebhooks(now func() time.Time) *FakeWebhooks { return &FakeWebhooks{now: now} }

// CreateSubscription implements build.Webhooks.
func (f *FakeWebhooks) CreateSubscription(_ context.Context, s build.Subscription) error {
	if err := s.Validate(); err != nil {
		return fmt.Errorf("create subscription: %w", err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.subs) >= build.MaxSubscriptions {
		return fmt.Errorf("create subscription: %w: too many subscriptions", build.ErrInvalid)
	}
	if f.sub(s.ID) >= 0 {
		return fmt.Errorf("create subscription: %w: subscription %s exists", build.ErrConflict, s.ID)
	}
	s.Types = slices.Clone(s.Types)
	f.subs = append(f.subs, s)
	slices.SortStableFunc(f.subs, func(a, b build.Subscription) int {
		if c := a.CreatedAt.Compare(b.CreatedAt); c != 0 {
			return c
		}
		return compareStrings(a.ID, b.ID)
	})
	return nil
}

func compareStrings(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func (f *FakeWebhooks) sub(id string) int {
	return slices.IndexFunc(f.subs, func(s build.Subscription) bool { return s.ID == id })
}

// Subscriptions implements build.Webhooks.
func (f *FakeWebhooks) Subscriptions(context.Context) ([]build.Subscription, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]build.Subscription, len(f.subs))
	for i, s := range f.subs {
		s.Types = slices.Clone(s.Types)
		out[i] = s
	}
	return out, nil
}

// DeleteSubscription implements build.Webhooks.
func (f *FakeWebhooks) DeleteSubscription(_ context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	i := f.sub(id)
	if i < 0 {
		return fmt.Errorf("delete subscription: subscription %q: %w", id, build.ErrNotFound)
	}
	f.subs = slices.Delete(f.subs, i, i+1)
	f.queue = slices.DeleteFunc(f.queue, func(d build.Delivery) bool { return d.Subscription == id })
	return nil
}

// Enqueue implements build.Webhooks.
func (f *FakeWebhooks) Enqueue(_ context.Context, maxPending int, ds ...build.Delivery) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	now := f.now()
	for _, d := range ds {
		if f.sub(d.Subscription) < 0 || f.find(d.Subscription, d.EventID) >= 0 {
			continue
		}
		pending := 0
		for _, q := range f.queue {
			if q.Subscription == d.Subscription && q.State == build.DeliveryPending {
				pending++
			}
		}
		d.State, d.LastError = build.DeliveryPending, ""
		if pending >= maxPending {
			d.State, d.LastError = build.DeliveryDead, fmt.Sprintf("queue full: %d deliveries of this subscription were pending", pending)
		}
		d.Attempts, d.NextAttemptAt, d.CreatedAt, d.UpdatedAt, d.Claim = 0, now, now, now, ""
		d.Body = slices.Clone(d.Body)
		f.queue = append(f.queue, d)
	}
	return nil
}

func (f *FakeWebhooks) find(sub, event string) int {
	return slices.IndexFunc(f.queue, func(d build.Delivery) bool { return d.Subscription == sub && d.EventID == event })
}

// Claim implements build.Webhooks.
func (f *FakeWebhooks) Claim(_ context.Context, sub string, lease time.Duration) (build.Delivery, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	i := slices.IndexFunc(f.queue, func(d build.Delivery) bool { return d.Subscription == sub && d.State == build.DeliveryPending })
	if i < 0 {
		return build.Delivery{}, false, fmt.Errorf("claim delivery: pending delivery of %q: %w", sub, build.ErrNotFound)
	}
	now := f.now()
	if f.queue[i].NextAttemptAt.After(now) {
		d := f.queue[i]
		d.Body = slices.Clone(d.Body)
		return d, false, nil
	}
	f.claims++
	f.queue[i].Claim, f.queue[i].NextAttemptAt = fmt.Sprintf("claim-%d", f.claims), now.Add(lease)
	d := f.queue[i]
	d.Body = slices.Clone(d.Body)
	return d, true, nil
}

// Settle implements build.Webhooks.
func (f *FakeWebhooks) Settle(_ context.Context, d build.Delivery) error {
	if err := d.Settling(); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	i := f.find(d.Subscription, d.EventID)
	if i < 0 {
		return fmt.Errorf("settle delivery: delivery %s to %s: %w", d.EventID, d.Subscription, build.ErrNotFound)
	}
	q := &f.queue[i]
	if q.Claim == "" || q.Claim != d.Claim {
		return fmt.Errorf("settle delivery: %w: delivery %s to %s is not held by this claim", build.ErrConflict, d.EventID, d.Subscription)
	}
	q.State, q.Attempts, q.NextAttemptAt, q.LastError, q.UpdatedAt, q.Claim = d.State, d.Attempts, d.NextAttemptAt, d.LastError, f.now(), ""
	return nil
}

// Deliveries implements build.Webhooks.
func (f *FakeWebhooks) Deliveries(_ context.Context, sub string, limit int) ([]build.Delivery, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []build.Delivery
	for i := len(f.queue) - 1; i >= 0 && len(out) < limit; i-- {
		if d := f.queue[i]; d.Subscription == sub {
			d.Body, d.Claim = nil, ""
			out = append(out, d)
		}
	}
	return out, nil
}
