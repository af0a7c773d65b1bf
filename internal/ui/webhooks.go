package ui

import (
	"context"
	"net/http"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/decap-ci/decap/internal/build"
)

// Webhooks lists the outgoing webhooks and their latest deliveries (the
// build.Webhooks store; the page never shows a secret).
type Webhooks interface {
	Subscriptions(ctx context.Context) ([]build.Subscription, error)
	Deliveries(ctx context.Context, subscription string, limit int) ([]build.Delivery, error)
}

// webhookDeliveriesShown is how many of a subscription's latest
// deliveries its part of the page lists.
const webhookDeliveriesShown = 20

type webhookRow struct {
	ID, URL, Types, Of string
	CreatedAt          time.Time
	Deliveries         []build.Delivery
	Dead, Pending      int
}

type webhooksView struct {
	panel[[]webhookRow]
	// SignIn says the page needs a session: a subscription's URL may be
	// a credential, not for readers of public pages.
	SignIn bool
}

// webhooks is /ui/webhooks: the subscriptions and, for each, its latest
// deliveries with the dead letters' reasons. Only a signed-in reader
// (or anyone where auth is off) sees them, as only the token reads them
// through the API.
func (u *UI) webhooks(c echo.Context) error {
	v := webhooksView{panel: panel[[]webhookRow]{Unavailable: notAvailable}}
	switch {
	case u.deps.Auth != nil && !u.cfg.AuthDisabled && !u.deps.Auth.SignedIn(c):
		v = webhooksView{SignIn: true}
	case u.deps.Webhooks != nil:
		ctx, cancel := u.ctx(c)
		defer cancel()
		subs, err := u.deps.Webhooks.Subscriptions(ctx)
		if err != nil {
			v.panel = failed[[]webhookRow]("webhooks", err)
			break
		}
		rows := make([]webhookRow, 0, len(subs))
		for _, s := range subs {
			r := webhookRow{ID: s.ID, URL: s.URL, Types: "every type", Of: "every project", CreatedAt: s.CreatedAt}
			if len(s.Types) > 0 {
				short := make([]string, len(s.Types))
				for i, t := range s.Types {
					short[i] = strings.TrimPrefix(string(t), build.EventTypePrefix)
				}
				r.Types = strings.Join(short, ", ")
			}
			if s.Team != "" {
				r.Of = s.Team
				if s.Project != "" {
					r.Of += "/" + s.Project
				}
			}
			if r.Deliveries, err = u.deps.Webhooks.Deliveries(ctx, s.ID, webhookDeliveriesShown); err != nil {
				v.panel = failed[[]webhookRow]("webhook deliveries", err)
				break
			}
			for _, d := range r.Deliveries {
				switch d.State {
				case build.DeliveryDead:
					r.Dead++
				case build.DeliveryPending:
					r.Pending++
				}
			}
			rows = append(rows, r)
		}
		if v.Unavailable == notAvailable {
			v.panel = panel[[]webhookRow]{Data: rows}
		}
	}
	return u.render(c, http.StatusOK, "webhooks", "Webhooks", "webhooks", v)
}
