package awsdynamo

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/decap-ci/decap/internal/build"
)

// The outgoing webhooks (build.Webhooks) live in the builds table, as
// items no index sees (they have none of the indexes' keys), so every
// service that writes records may keep them with the calls it already
// has (GetItem, PutItem; no Scan, no DeleteItem, no new table):
//
//	buildId = "webhooks#subscriptions"   every subscription (at most
//	                                     build.MaxSubscriptions), secrets
//	                                     included, as JSON in doc
//	buildId = "webhooks#queue#<sub ID>"  the subscription's deliveries in
//	                                     order, as JSON in doc: pending ones
//	                                     with their bodies, the latest
//	                                     settled ones without
//
// Each is written by a compare-and-swap on its version (a consistent read,
// then a PutItem on condition of the version read), read again on a
// conflict. One item per queue keeps Claim's "oldest pending, one at a
// time" a single read and a single write; its size bounds it: past
// webhookQueueBytes of pending bodies new deliveries are dead-lettered
// ("queue full"), like past maxPending.
const (
	webhookSubsKey    = "webhooks#subscriptions"
	webhookQueuePre   = "webhooks#queue#"
	webhookQueueBytes = 300 << 10
	// webhookKeepDelivered and webhookKeepDead bound the settled
	// deliveries a queue item keeps.
	webhookKeepDelivered = 50
	webhookKeepDead      = 100
	webhookCASTries      = 50
)

// webhooksAPI lists the DynamoDB calls Webhooks makes.
type webhooksAPI interface {
	GetItem(ctx context.Context, in *dynamodb.GetItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.GetItemOutput, error)
	PutItem(ctx context.Context, in *dynamodb.PutItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.PutItemOutput, error)
}

// Webhooks stores the outgoing webhooks in the builds table
// (buildtest.TestWebhooks). It is safe for concurrent use by every
// process.
type Webhooks struct {
	client webhooksAPI
	table  string
	now    func() time.Time
}

// NewWebhooks returns the webhooks stored in the builds table table.
func NewWebhooks(client webhooksAPI, table string, now func() time.Time) *Webhooks {
	return &Webhooks{client: client, table: table, now: orNow(now)}
}

type webhookSub struct {
	ID        string            `json:"id"`
	URL       string            `json:"url"`
	Secret    string            `json:"secret"`
	Types     []build.EventType `json:"types,omitempty"`
	Team      string            `json:"team,omitempty"`
	Project   string            `json:"project,omitempty"`
	CreatedAt int64             `json:"createdAt"`
}

type webhookEntry struct {
	EventID   string `json:"e"`
	Type      string `json:"t"`
	BuildID   string `json:"b"`
	Body      []byte `json:"body,omitempty"`
	State     string `json:"s"`
	Attempts  int    `json:"a"`
	NextAt    int64  `json:"n"`
	LastError string `json:"r,omitempty"`
	Created   int64  `json:"c"`
	Updated   int64  `json:"u"`
	Claim     string `json:"k,omitempty"`
}

func (e webhookEntry) delivery(sub string) build.Delivery {
	return build.Delivery{Subscription: sub, EventID: e.EventID, EventType: build.EventType(e.Type), BuildID: build.ID(e.BuildID),
		Body: e.Body, State: build.DeliveryState(e.State), Attempts: e.Attempts, NextAttemptAt: fromNanos(e.NextAt),
		LastError: e.LastError, CreatedAt: fromNanos(e.Created), UpdatedAt: fromNanos(e.Updated), Claim: e.Claim}
}

// cas reads the item key's doc into v (left as it is when there is none)
// and calls change; if change returns true, it writes v back on condition
// that nobody wrote the item meanwhile, and tries again from the read if
// somebody did (a failed condition that meets this put's own item is its
// landed first try: see landed). An error from change is returned as it
// is.
func (w *Webhooks) cas(ctx context.Context, key string, v any, change func() (bool, error)) error {
	for try := 1; ; try++ {
		version, err := w.read(ctx, key, v)
		if err != nil {
			return err
		}
		write, err := change()
		if err != nil || !write {
			return err
		}
		doc, err := json.Marshal(v)
		if err != nil {
			return err
		}
		if len(doc) > 390<<10 {
			return fmt.Errorf("%w: item %s would be %d bytes, more than DynamoDB's 400 KB", build.ErrUnavailable, key, len(doc))
		}
		cond, vals := "attribute_not_exists(buildId)", map[string]types.AttributeValue(nil)
		if version > 0 {
			cond, vals = "version = :v", map[string]types.AttributeValue{":v": num(version)}
		}
		item := map[string]types.AttributeValue{"buildId": str(key), "version": num(version + 1), "doc": str(string(doc))}
		_, err = w.client.PutItem(ctx, &dynamodb.PutItemInput{
			TableName: aws.String(w.table), Item: item,
			ConditionExpression: aws.String(cond), ExpressionAttributeValues: vals,
			ReturnValuesOnConditionCheckFailure: types.ReturnValuesOnConditionCheckFailureAllOld,
		})
		stored, failed := conditionFailed(err)
		if failed && w.landed(ctx, key, item, stored) {
			return nil // the SDK's retry of this put, whose first try landed
		}
		if failed || conflicted(err) {
			if try >= webhookCASTries {
				return fmt.Errorf("%w: item %s: too many concurrent writes", build.ErrUnavailable, key)
			}
			if err := pause(ctx, try); err != nil {
				return err
			}
			continue
		}
		if err != nil {
			return classify(err)
		}
		return nil
	}
}

// landed reports whether the stored item (storedItem) is item itself,
// version and doc: the SDK retried a put whose first try landed but whose
// answer was lost or failed (a timeout, a 5xx, a response failing its
// checksum), and its retry met the item it wrote. Another writer's item
// differs at least in its doc (an entry's update time, a claim's token)
// unless it made the very same change.
func (w *Webhooks) landed(ctx context.Context, key string, item, old map[string]types.AttributeValue) bool {
	stored, err := storedItem(ctx, w.client, w.table, map[string]types.AttributeValue{"buildId": str(key)}, old)
	return err == nil && sameVersionAndDoc(stored, item)
}

// read reads key's doc into v (consistently) and returns its version, 0
// when there is no such item.
func (w *Webhooks) read(ctx context.Context, key string, v any) (int64, error) {
	out, err := w.client.GetItem(ctx, &dynamodb.GetItemInput{TableName: aws.String(w.table), ConsistentRead: aws.Bool(true),
		Key: map[string]types.AttributeValue{"buildId": str(key)}})
	if err != nil {
		return 0, classify(err)
	}
	if out.Item == nil {
		return 0, nil
	}
	doc, ok1 := out.Item["doc"].(*types.AttributeValueMemberS)
	ver, ok2 := out.Item["version"].(*types.AttributeValueMemberN)
	if !ok1 || !ok2 {
		return 0, fmt.Errorf("item %s is malformed", key)
	}
	version, err := strconv.ParseInt(ver.Value, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("item %s version: %w", key, err)
	}
	if err := json.Unmarshal([]byte(doc.Value), v); err != nil {
		return 0, fmt.Errorf("item %s: %w", key, err)
	}
	return version, nil
}

// CreateSubscription implements build.Webhooks.
func (w *Webhooks) CreateSubscription(ctx context.Context, s build.Subscription) error {
	if err := s.Validate(); err != nil {
		return fmt.Errorf("create subscription: %w", err)
	}
	mine := webhookSub{ID: s.ID, URL: s.URL, Secret: s.Secret, Types: s.Types, Team: s.Team, Project: s.Project, CreatedAt: nanos(s.CreatedAt)}
	var subs []webhookSub
	err := w.cas(ctx, webhookSubsKey, &subs, func() (bool, error) {
		if i := slices.IndexFunc(subs, func(o webhookSub) bool { return o.ID == s.ID }); i >= 0 {
			if slices.Equal(subs[i].Types, mine.Types) && subs[i].URL == mine.URL && subs[i].Secret == mine.Secret &&
				subs[i].CreatedAt == mine.CreatedAt {
				return false, nil // a retried write of ours that landed
			}
			return false, fmt.Errorf("%w: subscription %s exists", build.ErrConflict, s.ID)
		}
		if len(subs) >= build.MaxSubscriptions {
			return false, fmt.Errorf("%w: there are %d subscriptions, the most Decap keeps", build.ErrInvalid, len(subs))
		}
		subs = append(subs, mine)
		return true, nil
	})
	if err != nil {
		return fmt.Errorf("create subscription: %w", err)
	}
	return nil
}

// Subscriptions implements build.Webhooks.
func (w *Webhooks) Subscriptions(ctx context.Context) ([]build.Subscription, error) {
	var subs []webhookSub
	if _, err := w.read(ctx, webhookSubsKey, &subs); err != nil {
		return nil, fmt.Errorf("list subscriptions: %w", err)
	}
	out := make([]build.Subscription, 0, len(subs))
	for _, s := range subs {
		out = append(out, build.Subscription{ID: s.ID, URL: s.URL, Secret: s.Secret, Types: s.Types, Team: s.Team,
			Project: s.Project, CreatedAt: fromNanos(s.CreatedAt)})
	}
	slices.SortStableFunc(out, func(a, b build.Subscription) int {
		if c := a.CreatedAt.Compare(b.CreatedAt); c != 0 {
			return c
		}
		switch {
		case a.ID < b.ID:
			return -1
		case a.ID > b.ID:
			return 1
		}
		return 0
	})
	if len(out) == 0 {
		return nil, nil
	}
	return out, nil
}

// DeleteSubscription implements build.Webhooks: the subscription leaves
// the list, then its queue is emptied.
func (w *Webhooks) DeleteSubscription(ctx context.Context, id string) error {
	var subs []webhookSub
	err := w.cas(ctx, webhookSubsKey, &subs, func() (bool, error) {
		n := len(subs)
		subs = slices.DeleteFunc(subs, func(o webhookSub) bool { return o.ID == id })
		if len(subs) == n {
			return false, fmt.Errorf("subscription %q: %w", id, build.ErrNotFound)
		}
		return true, nil
	})
	if err != nil {
		return fmt.Errorf("delete subscription: %w", err)
	}
	var q []webhookEntry
	if err := w.cas(ctx, webhookQueuePre+id, &q, func() (bool, error) {
		if len(q) == 0 {
			return false, nil
		}
		q = []webhookEntry{}
		return true, nil
	}); err != nil {
		return fmt.Errorf("delete subscription %s: empty its queue: %w", id, err)
	}
	return nil
}

// Enqueue implements build.Webhooks.
func (w *Webhooks) Enqueue(ctx context.Context, maxPending int, ds ...build.Delivery) error {
	if len(ds) == 0 {
		return nil
	}
	subs, err := w.Subscriptions(ctx)
	if err != nil {
		return fmt.Errorf("enqueue deliveries: %w", err)
	}
	now := nanos(w.now())
	var order []string
	bySub := map[string][]build.Delivery{}
	for _, d := range ds {
		if !slices.ContainsFunc(subs, func(s build.Subscription) bool { return s.ID == d.Subscription }) {
			continue
		}
		if _, ok := bySub[d.Subscription]; !ok {
			order = append(order, d.Subscription)
		}
		bySub[d.Subscription] = append(bySub[d.Subscription], d)
	}
	for _, sub := range order {
		var q []webhookEntry
		err := w.cas(ctx, webhookQueuePre+sub, &q, func() (bool, error) {
			pending, size, added := 0, 0, false
			for _, e := range q {
				if e.State == string(build.DeliveryPending) {
					pending++
					size += len(e.Body)
				}
			}
			for _, d := range bySub[sub] {
				if slices.ContainsFunc(q, func(e webhookEntry) bool { return e.EventID == d.EventID }) {
					continue
				}
				e := webhookEntry{EventID: d.EventID, Type: string(d.EventType), BuildID: string(d.BuildID), Body: d.Body,
					State: string(build.DeliveryPending), NextAt: now, Created: now, Updated: now}
				if pending >= maxPending || size+len(d.Body) > webhookQueueBytes {
					e.State, e.Body = string(build.DeliveryDead), nil
					e.LastError = fmt.Sprintf("queue full: %d deliveries of this subscription were pending", pending)
				} else {
					pending++
					size += len(d.Body)
				}
				q, added = append(q, e), true
			}
			q = trimSettled(q)
			return added, nil
		})
		if err != nil {
			return fmt.Errorf("enqueue deliveries: %w", err)
		}
	}
	return nil
}

// trimSettled drops the oldest settled deliveries past the bounds.
func trimSettled(q []webhookEntry) []webhookEntry {
	keep := map[string]int{string(build.DeliveryDelivered): webhookKeepDelivered, string(build.DeliveryDead): webhookKeepDead}
	seen := map[string]int{}
	out := make([]webhookEntry, 0, len(q))
	for i := len(q) - 1; i >= 0; i-- {
		e := q[i]
		if bound, settled := keep[e.State]; settled {
			if seen[e.State]++; seen[e.State] > bound {
				continue
			}
		}
		out = append(out, e)
	}
	slices.Reverse(out)
	return out
}

// Claim implements build.Webhooks.
func (w *Webhooks) Claim(ctx context.Context, sub string, lease time.Duration) (build.Delivery, bool, error) {
	var (
		q       []webhookEntry
		d       build.Delivery
		claimed bool
	)
	err := w.cas(ctx, webhookQueuePre+sub, &q, func() (bool, error) {
		claimed = false
		i := slices.IndexFunc(q, func(e webhookEntry) bool { return e.State == string(build.DeliveryPending) })
		if i < 0 {
			return false, fmt.Errorf("pending delivery of %q: %w", sub, build.ErrNotFound)
		}
		now := w.now()
		if fromNanos(q[i].NextAt).After(now) {
			d = q[i].delivery(sub)
			d.Claim = ""
			return false, nil
		}
		q[i].Claim, q[i].NextAt = rand.Text(), nanos(now.Add(lease))
		d, claimed = q[i].delivery(sub), true
		return true, nil
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
	var q []webhookEntry
	err := w.cas(ctx, webhookQueuePre+d.Subscription, &q, func() (bool, error) {
		i := slices.IndexFunc(q, func(e webhookEntry) bool { return e.EventID == d.EventID })
		if i < 0 {
			return false, fmt.Errorf("delivery %s to %s: %w", d.EventID, d.Subscription, build.ErrNotFound)
		}
		e := &q[i]
		if e.Claim == "" || e.Claim != d.Claim {
			return false, fmt.Errorf("%w: delivery %s to %s is not held by this claim", build.ErrConflict, d.EventID, d.Subscription)
		}
		e.State, e.Attempts, e.NextAt, e.LastError = string(d.State), d.Attempts, nanos(d.NextAttemptAt), d.LastError
		e.Updated, e.Claim = nanos(w.now()), ""
		if d.State != build.DeliveryPending {
			e.Body = nil
		}
		q = trimSettled(q)
		return true, nil
	})
	if err != nil {
		return fmt.Errorf("settle delivery: %w", err)
	}
	return nil
}

// Deliveries implements build.Webhooks.
func (w *Webhooks) Deliveries(ctx context.Context, sub string, limit int) ([]build.Delivery, error) {
	var q []webhookEntry
	if _, err := w.read(ctx, webhookQueuePre+sub, &q); err != nil {
		return nil, fmt.Errorf("list deliveries: %w", err)
	}
	var out []build.Delivery
	for i := len(q) - 1; i >= 0 && len(out) < limit; i-- {
		d := q[i].delivery(sub)
		d.Body, d.Claim = nil, ""
		out = append(out, d)
	}
	return out, nil
}

var _ build.Webhooks = (*Webhooks)(nil)
