package api

import (
	"time"

	"github.com/decap-ci/decap/internal/build"
)

// SubscriptionRequest is the body of POST /api/v1/subscriptions: an
// outgoing webhook. Secret keys the signatures; it is never shown back.
// Types empty means every event type; Project needs Team.
type SubscriptionRequest struct {
	URL     string            `json:"url"`
	Secret  string            `json:"secret"`
	Types   []build.EventType `json:"types,omitempty"`
	Team    string            `json:"team,omitempty"`
	Project string            `json:"project,omitempty"`
}

// Subscription is an outgoing webhook as the API shows it: everything but
// its secret. Types is empty for every event type.
type Subscription struct {
	ID        string            `json:"id"`
	URL       string            `json:"url"`
	Types     []build.EventType `json:"types"`
	Team      string            `json:"team,omitempty"`
	Project   string            `json:"project,omitempty"`
	CreatedAt time.Time         `json:"createdAt"`
}

// SubscriptionOf returns s without its secret.
func SubscriptionOf(s build.Subscription) Subscription {
	types := s.Types
	if types == nil {
		types = []build.EventType{}
	}
	return Subscription{ID: s.ID, URL: s.URL, Types: types, Team: s.Team, Project: s.Project, CreatedAt: s.CreatedAt.UTC()}
}

// Subscriptions answers GET /api/v1/subscriptions, oldest first.
type Subscriptions struct {
	Subscriptions []Subscription `json:"subscriptions"`
}

// SubscriptionDeleted answers DELETE /api/v1/subscriptions/{id}.
type SubscriptionDeleted struct {
	ID      string `json:"id"`
	Deleted bool   `json:"deleted"`
}

// Delivery is one event's delivery to a subscription: pending (with its
// next attempt), delivered, or dead (a dead letter, with the reason in
// lastError).
type Delivery struct {
	EventID       string              `json:"eventId"`
	EventType     build.EventType     `json:"eventType"`
	BuildID       build.ID            `json:"buildId"`
	State         build.DeliveryState `json:"state"`
	Attempts      int                 `json:"attempts"`
	NextAttemptAt *time.Time          `json:"nextAttemptAt,omitempty"`
	LastError     string              `json:"lastError,omitempty"`
	CreatedAt     time.Time           `json:"createdAt"`
	UpdatedAt     time.Time           `json:"updatedAt"`
}

// DeliveryOf returns d as the API shows it.
func DeliveryOf(d build.Delivery) Delivery {
	out := Delivery{EventID: d.EventID, EventType: d.EventType, BuildID: d.BuildID, State: d.State, Attempts: d.Attempts,
		LastError: d.LastError, CreatedAt: d.CreatedAt.UTC(), UpdatedAt: d.UpdatedAt.UTC()}
	if d.State == build.DeliveryPending {
		next := d.NextAttemptAt.UTC()
		out.NextAttemptAt = &next
	}
	return out
}

// Deliveries answers GET /api/v1/subscriptions/{id}/deliveries: the
// subscription's latest deliveries, newest first.
type Deliveries struct {
	Subscription string     `json:"subscription"`
	Deliveries   []Delivery `json:"deliveries"`
}
