package ingest

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/decap-ci/decap/internal/api"
	"github.com/decap-ci/decap/internal/build"
)

// WebhookStore keeps the outgoing webhooks' subscriptions and shows their
// deliveries (the part of build.Webhooks ingest uses; the reaper
// delivers).
type WebhookStore interface {
	CreateSubscription(ctx context.Context, s build.Subscription) error
	Subscriptions(ctx context.Context) ([]build.Subscription, error)
	DeleteSubscription(ctx context.Context, id string) error
	Deliveries(ctx context.Context, subscription string, limit int) ([]build.Delivery, error)
}

// WebhookURLs checks a new subscription's URL against where deliveries
// may connect (webhooks.Policy.CheckURL): an error wraps build.ErrInvalid.
type WebhookURLs interface {
	CheckURL(raw string) error
}

// Deliveries listed at most, and by default.
const (
	maxDeliveriesListed     = 200
	defaultDeliveriesListed = 50
)

// registerSubscriptionRoutes adds the outgoing webhooks' API. Every route
// needs the token (or a session), reads too: a subscription's URL may
// itself be a credential (many chat services' webhook URLs are), so it is
// not for DECAP_READ_AUTH=public readers. No route returns a secret.
func (s *Server) registerSubscriptionRoutes(api *echo.Group) {
	api.GET("/subscriptions", s.listSubscriptions, s.requireToken)
	api.POST("/subscriptions", s.createSubscription, s.requireToken)
	api.DELETE("/subscriptions/:id", s.deleteSubscription, s.requireToken)
	api.GET("/subscriptions/:id/deliveries", s.subscriptionDeliveries, s.requireToken)
}

func (s *Server) webhookStore() (WebhookStore, error) {
	if s.deps.Webhooks == nil || s.deps.WebhookURLs == nil {
		return nil, &publicError{status: http.StatusNotImplemented, msg: "this ingest has no outgoing webhooks",
			cause: errors.New("no webhook store")}
	}
	return s.deps.Webhooks, nil
}

func (s *Server) listSubscriptions(c echo.Context) error {
	store, err := s.webhookStore()
	if err != nil {
		return err
	}
	subs, err := store.Subscriptions(c.Request().Context())
	if err != nil {
		return fmt.Errorf("list subscriptions: %w", err)
	}
	out := api.Subscriptions{Subscriptions: make([]api.Subscription, 0, len(subs))}
	for _, sub := range subs {
		out.Subscriptions = append(out.Subscriptions, api.SubscriptionOf(sub))
	}
	return c.JSON(http.StatusOK, out)
}

// createSubscription stores a new subscription; the answer and the logs
// never repeat its secret, and the logs name its URL's host only (the
// rest of a URL may be a credential).
func (s *Server) createSubscription(c echo.Context) error {
	store, err := s.webhookStore()
	if err != nil {
		return err
	}
	body, err := s.readBody(c)
	if err != nil {
		return err
	}
	var in api.SubscriptionRequest
	if err := decodeStrict(body, &in, `{"url": "https://…", "secret": "…", "types": ["io.decap.build.succeeded"]}`); err != nil {
		return err
	}
	clear(body)
	sub := build.Subscription{ID: build.NewSubscriptionID(), URL: in.URL, Secret: in.Secret, Types: in.Types,
		Team: in.Team, Project: in.Project, CreatedAt: s.now().UTC().Truncate(time.Millisecond)}
	if err := sub.Validate(); err != nil {
		return err
	}
	if err := s.deps.WebhookURLs.CheckURL(sub.URL); err != nil {
		return err
	}
	if err := store.CreateSubscription(c.Request().Context(), sub); err != nil {
		return fmt.Errorf("create subscription: %w", err)
	}
	host := ""
	if u, err := url.Parse(sub.URL); err == nil {
		host = u.Host
	}
	s.log.Info("subscription created", "subscription", sub.ID, "host", host, "types", sub.Types, "by", actor(c))
	return c.JSON(http.StatusCreated, api.SubscriptionOf(sub))
}

// subscriptionID reads a subscription ID from the path; one of another
// form is not found.
func subscriptionID(c echo.Context) (string, error) {
	id, err := pathValue(c, "id")
	if err != nil {
		return "", err
	}
	if !build.ValidSubscriptionID(id) {
		return "", fmt.Errorf("subscription: %w", build.ErrNotFound)
	}
	return id, nil
}

func (s *Server) deleteSubscription(c echo.Context) error {
	store, err := s.webhookStore()
	if err != nil {
		return err
	}
	id, err := subscriptionID(c)
	if err != nil {
		return err
	}
	if err := store.DeleteSubscription(c.Request().Context(), id); err != nil {
		return fmt.Errorf("delete subscription %s: %w", id, err)
	}
	s.log.Info("subscription deleted", "subscription", id, "by", actor(c))
	return c.JSON(http.StatusOK, api.SubscriptionDeleted{ID: id, Deleted: true})
}

// subscriptionDeliveries lists a subscription's latest deliveries
// (?limit=, 1 to 200, default 50): pending, delivered and dead letters.
func (s *Server) subscriptionDeliveries(c echo.Context) error {
	store, err := s.webhookStore()
	if err != nil {
		return err
	}
	id, err := subscriptionID(c)
	if err != nil {
		return err
	}
	limit := defaultDeliveriesListed
	if v := c.QueryParam("limit"); v != "" {
		if limit, err = strconv.Atoi(v); err != nil || limit < 1 || limit > maxDeliveriesListed {
			return fmt.Errorf("%w: limit is 1 to %d", build.ErrInvalid, maxDeliveriesListed)
		}
	}
	ctx := c.Request().Context()
	subs, err := store.Subscriptions(ctx)
	if err != nil {
		return fmt.Errorf("list subscriptions: %w", err)
	}
	found := false
	for _, sub := range subs {
		found = found || sub.ID == id
	}
	if !found {
		return fmt.Errorf("subscription %s: %w", id, build.ErrNotFound)
	}
	list, err := store.Deliveries(ctx, id, limit)
	if err != nil {
		return fmt.Errorf("deliveries of %s: %w", id, err)
	}
	out := api.Deliveries{Subscription: id, Deliveries: make([]api.Delivery, 0, len(list))}
	for _, d := range list {
		out.Deliveries = append(out.Deliveries, api.DeliveryOf(d))
	}
	return c.JSON(http.StatusOK, out)
}
