package backend

import (
	"context"

	"github.com/decap-ci/decap/internal/webhooks"
)

// WebhookPolicy returns where outgoing webhooks may connect, as the
// configuration says (DECAP_OUTGOING_WEBHOOKS_ALLOW_*).
func (s *Set) WebhookPolicy() webhooks.Policy {
	return webhooks.Policy{AllowHTTP: s.cfg.Outgoing.AllowHTTP, Allow: s.cfg.Outgoing.AllowNetworks}
}

// StartWebhooks runs the outgoing webhooks' deliverer (webhooks.Deliverer,
// the consumer group "webhooks" on Events) in the background, and returns
// a function that stops it and waits for it: call that before Close. It
// does nothing where the backend has no event stream or no webhook store
// yet, and says so in the log.
func (s *Set) StartWebhooks(ctx context.Context, obs webhooks.Observer) (stop func()) {
	if s.Events == nil || s.Webhooks == nil {
		s.log.Info("outgoing webhooks are not delivered on this backend yet", "backend", s.cfg.Backend)
		return func() {}
	}
	o := s.cfg.Outgoing
	d, err := webhooks.New(webhooks.Config{Attempts: o.Attempts, RetryBase: o.RetryBase, Timeout: o.Timeout, Policy: s.WebhookPolicy()},
		webhooks.Deps{Events: s.Events, Store: s.Webhooks, Observer: obs, Logger: s.log})
	if err != nil {
		s.log.Error("outgoing webhooks are not delivered", "err", err)
		return func() {}
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := d.Run(ctx); err != nil && ctx.Err() == nil {
			s.log.Error("outgoing webhooks stopped", "err", err)
		}
	}()
	return func() {
		cancel()
		<-done
	}
}
