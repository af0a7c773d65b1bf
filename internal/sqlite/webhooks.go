package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/decap-ci/decap/internal/build"
)

// schemaV10 adds the outgoing webhooks (Webhooks): the subscriptions, and
// their deliveries in enqueue order (seq: a rowid, above every row
// present), one per subscription and event, with the claim of the
// deliverer that holds one.
const schemaV10 = `
CREATE TABLE webhook_subscriptions (
	id         TEXT    PRIMARY KEY,
	url        TEXT    NOT NULL,
	secret     TEXT    NOT NULL,
	types      TEXT    NOT NULL, -- JSON list of event types; [] = all
	team       TEXT    NOT NULL,
	project    TEXT    NOT NULL,
	created_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE webhook_deliveries (
	seq             INTEGER PRIMARY KEY,
	subscription_id TEXT    NOT NULL,
	event_id        TEXT    NOT NULL,
	event_type      TEXT    NOT NULL,
	build_id        TEXT    NOT NULL,
	body            BLOB    NOT NULL,
	state           TEXT    NOT NULL, -- pending, delivered, dead
	attempts        INTEGER NOT NULL,
	next_at         INTEGER NOT NULL,
	last_error      TEXT    NOT NULL,
	created_at      INTEGER NOT NULL,
	updated_at      INTEGER NOT NULL,
	claim           TEXT    NOT NULL DEFAULT ''
);
CREATE UNIQUE INDEX webhook_deliveries_event ON webhook_deliveries (subscription_id, event_id);
CREATE INDEX webhook_deliveries_state ON webhook_deliveries (subscription_id, state, seq);
`

// How many settled deliveries a subscription keeps: its latest successes
// (for the API's recent deliveries) and its latest dead letters.
const (
	keepDelivered = 50
	keepDead      = 500
)

// Webhooks stores the outgoing webhooks' subscriptions and deliveries
// (build.Webhooks; buildtest.TestWebhooks). It is safe for concurrent use
// by every process sharing the database. Secrets are stored as they are:
// the database is the services' own (0600 in a 0700 directory, out of
// every build's reach), as the sessions and secrets key are.
type Webhooks struct {
	db *DB
}

// NewWebhooks returns the webhooks stored in db.
func NewWebhooks(db *DB) *Webhooks { return &Webhooks{db: db} }

// CreateSubscription implements build.Webhooks.
func (w *Webhooks) CreateSubscription(ctx context.Context, s build.Subscription) error {
	if err := s.Validate(); err != nil {
		return fmt.Errorf("create subscription: %w", err)
	}
	types, err := json.Marshal(typesOrEmpty(s.Types))
	if err != nil {
		return fmt.Errorf("create subscription: %w", err)
	}
	err = w.db.write(ctx, func(tx *Tx) error {
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM webhook_subscriptions`).Scan(&n); err != nil {
			return err
		}
		if n >= build.MaxSubscriptions {
			return fmt.Errorf("%w: there are %d subscriptions, the most Decap keeps", build.ErrInvalid, n)
		}
		res, err := tx.ExecContext(ctx, `
INSERT INTO webhook_subscriptions (id, url, secret, types, team, project, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (id) DO NOTHING`, s.ID, s.URL, s.Secret, string(types), s.Team, s.Project, nanos(s.CreatedAt))
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil {
			return err
		} else if n == 0 {
			return fmt.Errorf("%w: subscription %s exists", build.ErrConflict, s.ID)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("create subscription: %w", err)
	}
	return nil
}

func typesOrEmpty(t []build.EventType) []build.EventType {
	if t == nil {
		return []build.EventType{}
	}
	return t
}

// Subscriptions implements build.Webhooks.
func (w *Webhooks) Subscriptions(ctx context.Context) ([]build.Subscription, error) {
	rows, err := w.db.rdb.QueryContext(ctx,
		`SELECT id, url, secret, types, team, project, created_at FROM webhook_subscriptions ORDER BY created_at, id`)
	if err != nil {
		return nil, fmt.Errorf("list subscriptions: %w", classify(err))
	}
	defer rows.Close()
	var out []build.Subscription
	for rows.Next() {
		var (
			s       build.Subscription
			types   string
			created int64
		)
		if err := rows.Scan(&s.ID, &s.URL, &s.Secret, &types, &s.Team, &s.Project, &created); err != nil {
			return nil, fmt.Errorf("list subscriptions: %w", classify(err))
		}
		if err := json.Unmarshal([]byte(types), &s.Types); err != nil {
			return nil, fmt.Errorf("list subscriptions: subscription %s types: %w", s.ID, err)
		}
		if len(s.Types) == 0 {
			s.Types = nil
		}
		s.CreatedAt = fromNanos(created)
		out = append(out, s)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list subscriptions: %w", classify(err))
	}
	return out, nil
}

// DeleteSubscription implements build.Webhooks.
func (w *Webhooks) DeleteSubscription(ctx context.Context, id string) error {
	err := w.db.write(ctx, func(tx *Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM webhook_subscriptions WHERE id = ?`, id)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil {
			return err
		} else if n == 0 {
			return fmt.Errorf("subscription %q: %w", id, build.ErrNotFound)
		}
		_, err = tx.ExecContext(ctx, `DELETE FROM webhook_deliveries WHERE subscription_id = ?`, id)
		return err
	})
	if err != nil {
		return fmt.Errorf("delete subscription: %w", err)
	}
	return nil
}

// Enqueue implements build.Webhooks.
func (w *Webhooks) Enqueue(ctx context.Context, maxPending int, ds ...build.Delivery) error {
	if len(ds) == 0 {
		return nil
	}
	now := nanos(w.db.now())
	err := w.db.write(ctx, func(tx *Tx) error {
		for _, d := range ds {
			var exists int
			if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM webhook_subscriptions WHERE id = ?`, d.Subscription).Scan(&exists); err != nil {
				return err
			}
			if exists == 0 {
				continue
			}
			var pending int
			if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM webhook_deliveries WHERE subscription_id = ? AND state = 'pending'`,
				d.Subscription).Scan(&pending); err != nil {
				return err
			}
			state, reason := build.DeliveryPending, ""
			if pending >= maxPending {
				state, reason = build.DeliveryDead, fmt.Sprintf("queue full: %d deliveries of this subscription were pending", pending)
			}
			if _, err := tx.ExecContext(ctx, `
INSERT INTO webhook_deliveries (subscription_id, event_id, event_type, build_id, body, state, attempts, next_at, last_error, created_at, updated_at)
VALUES (?, ?, ?, ?, ?, ?, 0, ?, ?, ?, ?)
ON CONFLICT (subscription_id, event_id) DO NOTHING`,
				d.Subscription, d.EventID, string(d.EventType), string(d.BuildID), d.Body, string(state), now, reason, now, now); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("enqueue deliveries: %w", err)
	}
	return nil
}

const deliveryColumns = `subscription_id, event_id, event_type, build_id, state, attempts, next_at, last_error, created_at, updated_at, claim`

func scanDelivery(sc interface{ Scan(...any) error }, body *[]byte) (build.Delivery, int64, error) {
	var (
		d                       build.Delivery
		seq, next, created, upd int64
		typ, id, state          string
	)
	dest := []any{&seq, &d.Subscription, &d.EventID, &typ, &id, &state, &d.Attempts, &next, &d.LastError, &created, &upd, &d.Claim}
	if body != nil {
		dest = append(dest, body)
	}
	if err := sc.Scan(dest...); err != nil {
		return build.Delivery{}, 0, err
	}
	d.EventType, d.BuildID, d.State = build.EventType(typ), build.ID(id), build.DeliveryState(state)
	d.NextAttemptAt, d.CreatedAt, d.UpdatedAt = fromNanos(next), fromNanos(created), fromNanos(upd)
	return d, seq, nil
}

// Claim implements build.Webhooks.
func (w *Webhooks) Claim(ctx context.Context, subscription string, lease time.Duration) (build.Delivery, bool, error) {
	// A read first: a worker's look at a queue with nothing due costs no
	// write.
	head, _, err := scanDelivery(w.db.rdb.QueryRowContext(ctx, `SELECT seq, `+deliveryColumns+` FROM webhook_deliveries
WHERE subscription_id = ? AND state = 'pending' ORDER BY seq LIMIT 1`, subscription), nil)
	if errors.Is(err, sql.ErrNoRows) {
		return build.Delivery{}, false, fmt.Errorf("claim delivery: pending delivery of %q: %w", subscription, build.ErrNotFound)
	} else if err != nil {
		return build.Delivery{}, false, fmt.Errorf("claim delivery: %w", classify(err))
	}
	if head.NextAttemptAt.After(w.db.now()) {
		head.Claim = ""
		return head, false, nil
	}
	var (
		d       build.Delivery
		claimed bool
	)
	err = w.db.write(ctx, func(tx *Tx) error {
		var (
			body []byte
			seq  int64
			err  error
		)
		d, seq, err = scanDelivery(tx.QueryRowContext(ctx, `SELECT seq, `+deliveryColumns+`, body FROM webhook_deliveries
WHERE subscription_id = ? AND state = 'pending' ORDER BY seq LIMIT 1`, subscription), &body)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("pending delivery of %q: %w", subscription, build.ErrNotFound)
		} else if err != nil {
			return err
		}
		d.Body = body
		now := w.db.now()
		if d.NextAttemptAt.After(now) {
			return nil
		}
		d.Claim, d.NextAttemptAt = token(), now.Add(lease)
		if _, err := tx.ExecContext(ctx, `UPDATE webhook_deliveries SET claim = ?, next_at = ? WHERE seq = ?`,
			d.Claim, nanos(d.NextAttemptAt), seq); err != nil {
			return err
		}
		claimed = true
		return nil
	})
	if err != nil {
		return build.Delivery{}, false, fmt.Errorf("claim delivery: %w", err)
	}
	return d, claimed, nil
}

// Settle implements build.Webhooks.
func (w *Webhooks) Settle(ctx context.Context, d build.Delivery) error {
	if err := d.Settling(); err != nil {
		return err
	}
	err := w.db.write(ctx, func(tx *Tx) error {
		var claim string
		err := tx.QueryRowContext(ctx, `SELECT claim FROM webhook_deliveries WHERE subscription_id = ? AND event_id = ?`,
			d.Subscription, d.EventID).Scan(&claim)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("delivery %s to %s: %w", d.EventID, d.Subscription, build.ErrNotFound)
		} else if err != nil {
			return err
		}
		if claim == "" || claim != d.Claim {
			return fmt.Errorf("%w: delivery %s to %s is not held by this claim", build.ErrConflict, d.EventID, d.Subscription)
		}
		if _, err := tx.ExecContext(ctx, `UPDATE webhook_deliveries SET state = ?, attempts = ?, next_at = ?, last_error = ?,
	updated_at = ?, claim = '' WHERE subscription_id = ? AND event_id = ?`,
			string(d.State), d.Attempts, nanos(d.NextAttemptAt), d.LastError, nanos(w.db.now()), d.Subscription, d.EventID); err != nil {
			return err
		}
		keep := map[build.DeliveryState]int{build.DeliveryDelivered: keepDelivered, build.DeliveryDead: keepDead}[d.State]
		if keep == 0 {
			return nil
		}
		_, err = tx.ExecContext(ctx, `DELETE FROM webhook_deliveries WHERE seq IN (
	SELECT seq FROM webhook_deliveries WHERE subscription_id = ? AND state = ? ORDER BY seq DESC LIMIT -1 OFFSET ?)`,
			d.Subscription, string(d.State), keep)
		return err
	})
	if err != nil {
		return fmt.Errorf("settle delivery: %w", err)
	}
	return nil
}

// Deliveries implements build.Webhooks.
func (w *Webhooks) Deliveries(ctx context.Context, subscription string, limit int) ([]build.Delivery, error) {
	if limit <= 0 {
		return nil, nil
	}
	rows, err := w.db.rdb.QueryContext(ctx, `SELECT seq, `+deliveryColumns+` FROM webhook_deliveries
WHERE subscription_id = ? ORDER BY seq DESC LIMIT ?`, subscription, limit)
	if err != nil {
		return nil, fmt.Errorf("list deliveries: %w", classify(err))
	}
	defer rows.Close()
	var out []build.Delivery
	for rows.Next() {
		d, _, err := scanDelivery(rows, nil)
		if err != nil {
			return nil, fmt.Errorf("list deliveries: %w", classify(err))
		}
		d.Claim = ""
		out = append(out, d)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list deliveries: %w", classify(err))
	}
	return out, nil
}
