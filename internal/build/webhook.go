package build

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"
	"unicode/utf8"
)

// Outgoing webhooks (DESIGN.md "Build events", issue 14): a Subscription
// asks for the build events of some types (and of one team or project)
// to be POSTed to a URL, signed with its secret; each event it matches
// becomes a Delivery, tried until the endpoint answers 2xx or the
// attempts run out (then it is dead-lettered with a reason).

// Limits of a subscription.
const (
	MaxSubscriptionURL    = 2048
	MinSubscriptionSecret = 16
	MaxSubscriptionSecret = 256
	// MaxSubscriptions bounds the subscriptions one Decap keeps: each
	// has a worker and every event is matched against all of them.
	MaxSubscriptions = 100
	// MaxDeliveryReason bounds a delivery's LastError.
	MaxDeliveryReason = 300
)

// Subscription is one outgoing webhook.
type Subscription struct {
	// ID is "sub-" and 24 hex digits (NewSubscriptionID).
	ID string
	// URL receives the events: https, or http where the operator allows
	// it (the deliverer checks where it may connect; internal/webhooks).
	URL string
	// Secret keys the body's HMAC-SHA256 (X-Decap-Signature-256). It is
	// written once and never shown back: no API answer, log or page
	// carries it.
	Secret string
	// Types are the event types sent; empty means every type.
	Types []EventType
	// Team and Project, when set, keep the events of that team's builds
	// (and of that project's: Project needs Team).
	Team, Project string
	CreatedAt     time.Time
}

// NewSubscriptionID returns a fresh random subscription ID.
func NewSubscriptionID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return "sub-" + hex.EncodeToString(b[:])
}

// ValidSubscriptionID reports whether id has the form NewSubscriptionID
// makes (safe in paths, keys and table rows).
func ValidSubscriptionID(id string) bool {
	rest, ok := strings.CutPrefix(id, "sub-")
	if !ok || len(rest) != 24 {
		return false
	}
	_, err := hex.DecodeString(rest)
	return err == nil && strings.ToLower(rest) == rest
}

// Validate checks a subscription's fields (not where its URL may
// connect: that is the deliverer's policy). Errors wrap ErrInvalid and
// never repeat the secret.
func (s Subscription) Validate() error {
	if !ValidSubscriptionID(s.ID) {
		return fmt.Errorf("%w: subscription id %q is not sub-<24 hex digits>", ErrInvalid, s.ID)
	}
	if err := ValidateSubscriptionURL(s.URL); err != nil {
		return err
	}
	if n := len(s.Secret); n < MinSubscriptionSecret || n > MaxSubscriptionSecret || !utf8.ValidString(s.Secret) ||
		strings.ContainsFunc(s.Secret, func(r rune) bool { return r < ' ' || r == 0x7f }) {
		return fmt.Errorf("%w: a subscription's secret is %d to %d characters of printable text", ErrInvalid, MinSubscriptionSecret, MaxSubscriptionSecret)
	}
	for _, t := range s.Types {
		if !t.Valid() {
			return fmt.Errorf("%w: event type %q is not one of io.decap.build.*", ErrInvalid, t)
		}
	}
	if s.Project != "" && s.Team == "" {
		return fmt.Errorf("%w: a subscription's project needs its team", ErrInvalid)
	}
	if s.Team != "" {
		if err := ValidateName("team", s.Team); err != nil {
			return err
		}
	}
	if s.Project != "" {
		if err := ValidateName("project", s.Project); err != nil {
			return err
		}
	}
	if s.CreatedAt.IsZero() {
		return fmt.Errorf("%w: subscription %s has no creation time", ErrInvalid, s.ID)
	}
	return nil
}

// ValidateSubscriptionURL checks the form of a subscription's URL: an
// absolute http or https URL with a host, no user or password (they
// would be shown back), no fragment, at most MaxSubscriptionURL bytes.
func ValidateSubscriptionURL(raw string) error {
	if len(raw) > MaxSubscriptionURL || strings.ContainsFunc(raw, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
		return fmt.Errorf("%w: a subscription's URL is at most %d bytes, without spaces or control characters", ErrInvalid, MaxSubscriptionURL)
	}
	u, err := url.Parse(raw)
	switch {
	case err != nil:
		return fmt.Errorf("%w: subscription URL: %v", ErrInvalid, err)
	case u.Scheme != "https" && u.Scheme != "http":
		return fmt.Errorf("%w: subscription URL %q is not https", ErrInvalid, raw)
	case u.Hostname() == "":
		return fmt.Errorf("%w: subscription URL %q has no host", ErrInvalid, raw)
	case u.User != nil:
		return fmt.Errorf("%w: subscription URL has a user or password: sign with the secret instead", ErrInvalid)
	case u.Fragment != "" || strings.Contains(raw, "#"):
		return fmt.Errorf("%w: subscription URL %q has a fragment", ErrInvalid, raw)
	}
	return nil
}

// Matches reports whether the subscription wants event e.
func (s Subscription) Matches(e Event) bool {
	if len(s.Types) > 0 && !slices.Contains(s.Types, e.Type) {
		return false
	}
	if s.Team != "" && e.Record.Team != s.Team {
		return false
	}
	return s.Project == "" || e.Record.Project == s.Project
}

// DeliveryState is where a delivery stands.
type DeliveryState string

// Delivery states.
const (
	// DeliveryPending is waiting for its (next) attempt.
	DeliveryPending DeliveryState = "pending"
	// DeliveryDelivered was answered 2xx.
	DeliveryDelivered DeliveryState = "delivered"
	// DeliveryDead ran out of attempts (or was refused outright), its
	// reason in LastError: a dead letter.
	DeliveryDead DeliveryState = "dead"
)

// Delivery is one event on its way to one subscription.
type Delivery struct {
	Subscription string
	// EventID, EventType and BuildID are the event's (Event.ID, Type,
	// Subject); Body is the event as sent (EncodeEvent).
	EventID   string
	EventType EventType
	BuildID   ID
	Body      []byte
	State     DeliveryState
	// Attempts counts the attempts made.
	Attempts int
	// NextAttemptAt is when a pending delivery is tried next; while a
	// deliverer holds it (Claim) the end of its claim.
	NextAttemptAt time.Time
	// LastError is why the last attempt failed ("" after success).
	LastError string
	CreatedAt time.Time
	UpdatedAt time.Time
	// Claim is the token of the deliverer holding the delivery (set by
	// Claim, checked by Settle).
	Claim string
}

// Webhooks is where the outgoing webhooks' subscriptions and deliveries
// are kept. Errors: ErrInvalid for a bad subscription, ErrNotFound for an
// unknown one, ErrConflict for a taken ID or a lost claim, ErrUnavailable
// when the store cannot be reached.
type Webhooks interface {
	// CreateSubscription stores s (ErrConflict if its ID is taken,
	// ErrInvalid past MaxSubscriptions).
	CreateSubscription(ctx context.Context, s Subscription) error
	// Subscriptions lists every subscription, oldest first, secrets
	// included (for the deliverer: callers showing them drop the secret).
	Subscriptions(ctx context.Context) ([]Subscription, error)
	// DeleteSubscription removes a subscription and its deliveries.
	DeleteSubscription(ctx context.Context, id string) error
	// Enqueue adds pending deliveries, due at once, in order. One whose
	// (subscription, event) is present already is dropped (a redelivered
	// event), as is one of a subscription that is gone. Past maxPending
	// pending deliveries of a subscription, a new one is stored dead
	// ("queue full") instead.
	Enqueue(ctx context.Context, maxPending int, ds ...Delivery) error
	// Claim takes the subscription's oldest pending delivery for lease:
	// claimed is true when it was due and nobody held it; then its Claim
	// is set and NextAttemptAt is the lease's end (a deliverer that dies
	// lets it lapse). When it is not due, it is returned unclaimed (wait
	// until its NextAttemptAt). ErrNotFound when none is pending. A
	// subscription's deliveries are claimed one at a time, in order.
	Claim(ctx context.Context, subscription string, lease time.Duration) (d Delivery, claimed bool, err error)
	// Settle writes the outcome of a claimed delivery: d's State,
	// Attempts, NextAttemptAt and LastError. ErrConflict when d.Claim no
	// longer holds it; ErrNotFound when it is gone (its subscription was
	// deleted).
	Settle(ctx context.Context, d Delivery) error
	// Deliveries returns up to limit of the subscription's deliveries
	// (pending, recent successes and dead letters), newest first, without
	// their bodies.
	Deliveries(ctx context.Context, subscription string, limit int) ([]Delivery, error)
}

// Settling checks d's state for Webhooks.Settle (pending, delivered or
// dead; ErrInvalid otherwise) and bounds its LastError to
// MaxDeliveryReason bytes of valid UTF-8: what every store does before it
// settles a delivery.
func (d *Delivery) Settling() error {
	switch d.State {
	case DeliveryPending, DeliveryDelivered, DeliveryDead:
	default:
		return fmt.Errorf("settle delivery: %w: state %q", ErrInvalid, d.State)
	}
	d.LastError = BoundReason(d.LastError)
	return nil
}

// BoundReason cuts a delivery's reason to MaxDeliveryReason bytes of valid
// UTF-8.
func BoundReason(s string) string {
	if len(s) > MaxDeliveryReason {
		s = strings.ToValidUTF8(s[:MaxDeliveryReason], "")
	}
	return s
}
