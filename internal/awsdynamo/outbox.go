package awsdynamo

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/dynamodb/attributevalue"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/decap-ci/decap/internal/build"
)

// The build-event outbox (build.EventOutbox, invariant 7), kept in the
// record items themselves ("the outbox in the item"), on for a Records
// made WithEvents:
//
//   - A record item carries version (1 for its creation, one more per
//     change) and pending, a map from version ("1", "2", …) to the event
//     of that change not yet forwarded: when it was written (at, Unix
//     nanoseconds) and the record as the change left it. While pending is
//     not empty the item also carries outboxShard ("0") and outboxSort
//     (its oldest pending event's time, then "#", then the build ID), the
//     keys of the sparse, keys-only global secondary index "outbox".
//
//   - A record write stays one conditional PutItem, no transaction: Save
//     and EndWaiting read the stored item consistently, decide as before
//     (rank, final, waiting, the launch claim; a Save that leaves the
//     record as it is, build.SameRecord, writes nothing), and put the
//     record with its version + 1, every pending event it read and its own
//     event, on condition that the stored item still has the version and
//     writeToken it read (for a create: that there is none). Another
//     writer's change in between fails the condition; the write reads
//     again and decides again. The change and its event are one item, so
//     they are written together or not at all.
//
//   - A retried put (the SDK's retry of a write whose first try landed)
//     fails its condition on an item bearing the call's writeToken: a
//     success, and the first try's event is the only one. A Save that
//     takes a create for a replace keeps the number its create counted
//     (nextNumber's numberedBy), as before.
//
//   - Pending queries the index (never a scan), oldest pending event
//     first, and then reads the items it names consistently
//     (BatchGetItem): the index lags the table, the items do not. All of a
//     build's pending events are in one item, so a consistent read sees
//     them all: a run from the lowest pending version has no predecessor
//     left in the outbox (build.EventOutbox's rule).
//
//   - Forwarded removes the forwarded versions from pending with an
//     UpdateItem on condition that the item's version and the number of
//     its pending events are still those it read (re-reading and trying
//     again otherwise), and drops outboxShard and outboxSort with the last
//     one, so the item leaves the index.
//
// At least once, never lost: a Save that read the item before a Forwarded
// removed some events, and writes after it, puts those events back (its
// condition is on the record's version, which Forwarded does not change).
// They are then published again, and the stream drops the second publish
// by its ID; their order is kept, as the put-back run starts at the
// lowest version. The opposite, an event removed before it was published,
// cannot happen: Forwarded removes only the versions it is given, which a
// forwarder gives after publishing them, and a Save never drops a pending
// event it read.
//
// Size: an item is at most 400 KB, and every pending event holds a copy of
// the record (some 1-2 KB). A build has a bounded number of changes
// (created, a few deferrals and launch claims, started, a cancel request,
// ended: usually under ten), but each new deferral of a build waiting
// behind a busy lock is one more. While no forwarder runs, they pile up
// in the item; a write whose item would pass the limit is refused before
// any call: build.ErrInvalid when the record with its own event alone is
// too large (it never fits), build.ErrUnavailable when the events waiting
// to be forwarded make it so (it fits again once a forwarder catches up,
// so callers retry it, and the message that asked for it is not lost).
// The outbox lag metric shows a stopped forwarder long before that.

// Limits of DynamoDB this package keeps (Amazon DynamoDB Developer Guide,
// "Quotas"; API reference of BatchGetItem).
const (
	// maxItemBytes is the largest item.
	maxItemBytes = 400 * 1024
	// maxBatchGet bounds the keys of one BatchGetItem.
	maxBatchGet = 100
	// maxPending bounds the events one Pending returns.
	maxPending = 100
)

// Outbox layout and behaviour.
const (
	// indexOutbox is the sparse index of the items with pending events.
	indexOutbox = "outbox"
	// outboxShardValue is the index's one partition: it takes 1000 writes
	// a second, some 300 record changes a second (a change enters or
	// moves in the index, its forward moves or removes it).
	outboxShardValue = "0"
	// outboxPoll is how often a waiting Pending looks again for
	// outboxSettle after this process wrote an event: the index lags the
	// table (on AWS usually well under a second), so the first look after
	// a write may not show it. Short, for the events' latency target.
	outboxPoll   = 150 * time.Millisecond
	outboxSettle = 3 * time.Second
	// maxWriteAttempts bounds the reads and writes of one change (or one
	// build's Forwarded) while other writers keep changing the record.
	maxWriteAttempts = 8
)

// Attributes of the outbox in a record item.
const (
	attrVersion     = "version"
	attrPending     = "pending"
	attrOutboxShard = "outboxShard"
	attrOutboxSort  = "outboxSort"
)

// pendingEvent is one pending event in a record item: when its change
// was written and the record as the change left it (no writeToken).
type pendingEvent struct {
	At     int64      `dynamodbav:"at"`
	Record recordItem `dynamodbav:"record"`
}

// outboxState is the outbox part of a record item.
type outboxState struct {
	Version int                     `dynamodbav:"version,omitempty"`
	Pending map[string]pendingEvent `dynamodbav:"pending,omitempty"`
}

// version is the stored record's version: a record written before events
// were on counts as version 1, its creation.
func (o outboxState) version() int { return max(o.Version, 1) }

// versions returns the pending versions, ascending; a key that is not a
// version is an error.
func (o outboxState) versions() ([]int, error) {
	out := make([]int, 0, len(o.Pending))
	for k := range o.Pending {
		v, err := strconv.Atoi(k)
		if err != nil || v < 1 || strconv.Itoa(v) != k {
			return nil, fmt.Errorf("pending event key %q is not a version", k)
		}
		out = append(out, v)
	}
	slices.Sort(out)
	return out, nil
}

// oldest returns the time of the oldest pending event (0 when none).
func (o outboxState) oldest() int64 {
	var at int64
	for _, e := range o.Pending {
		if at == 0 || e.At < at {
			at = e.At
		}
	}
	return at
}

// outboxSortKey is the index's range key of a build whose oldest pending
// event was written at at: the time, fixed width in UTC, "#", the ID.
func outboxSortKey(at int64, id string) string {
	return time.Unix(0, at).UTC().Format(queuedLayout) + "#" + id
}

// storedRecord is a record item as read for a change: the record (with
// its writeToken) and its outbox state.
type storedRecord struct {
	item   recordItem
	outbox outboxState
}

// WithEvents turns on the store's event outbox (see Outbox) and returns
// s: every change of a record is then written with its event. Without it
// the store writes no events and its writes are as they always were. Call
// it before the store is used.
func (s *Records) WithEvents() *Records {
	s.events = true
	s.written = make(chan struct{})
	return s
}

// Outbox returns the store's event outbox (build.EventOutbox); a store
// without WithEvents gives an outbox whose calls fail.
func (s *Records) Outbox() build.EventOutbox { return outbox{s} }

var errNoEvents = errors.New("the build records keep no events (Records.WithEvents)")

// errChanged: another writer changed the record since it was read (or
// created it since it was found missing).
var errChanged = errors.New("record changed meanwhile")

// wrote wakes this process's waiting Pending calls.
func (s *Records) wrote() {
	s.mu.Lock()
	defer s.mu.Unlock()
	close(s.written)
	s.written = make(chan struct{})
	s.wroteAt = time.Now()
}

// lastWrite returns when this process last wrote an event.
func (s *Records) lastWrite() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.wroteAt
}

// signal returns the channel the next write closes.
func (s *Records) signal() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.written
}

// saveWithEvent is Save with events on: see the outbox's comment above
// and Save's. r is valid.
func (s *Records) saveWithEvent(ctx context.Context, r build.Record) error {
	token := rand.Text()
	create := r.Number == 0 && r.Status == build.StatusQueued
	number := 0 // counted once per call, kept across tries
	for attempt := range maxWriteAttempts {
		if attempt > 0 && !create {
			if err := pause(ctx, attempt); err != nil {
				return err
			}
		}
		if create {
			if number == 0 {
				n, err := s.nextNumber(ctx, r.Team, r.Project, token)
				if err != nil {
					return err
				}
				number = n
			}
			c := r
			c.Number = number
			err := s.writeWithEvent(ctx, c, nil, token)
			if !errors.Is(err, errChanged) {
				return err
			}
			create = false // a record exists: replace it
			continue
		}
		prev, found, err := s.readStored(ctx, r.BuildID)
		switch {
		case err != nil:
			return err
		case !found:
			create = true
			continue
		case prev.item.Kind != "" || prev.item.Status == "":
			return fmt.Errorf("%w: an item of the ID that is no record", build.ErrConflict)
		}
		stored, err := prev.item.record()
		if err != nil {
			return err
		}
		if stored.Status.Final() || stored.Status.Rank() > r.Status.Rank() {
			return fmt.Errorf("%w: stored status %s, new status %s", build.ErrConflict, stored.Status, r.Status)
		}
		c := r
		c.Number = stored.Number
		c.KeepClaim(stored)
		if build.SameRecord(stored, c) {
			return nil
		}
		if err := s.writeWithEvent(ctx, c, &prev, token); !errors.Is(err, errChanged) {
			return err
		}
	}
	return fmt.Errorf("%w: the record changed under %d writes", build.ErrUnavailable, maxWriteAttempts)
}

// endWaitingWithEvent is EndWaiting with events on. r is final.
func (s *Records) endWaitingWithEvent(ctx context.Context, r build.Record) error {
	token := rand.Text()
	for attempt := range maxWriteAttempts {
		if attempt > 0 {
			if err := pause(ctx, attempt); err != nil {
				return err
			}
		}
		prev, found, err := s.readStored(ctx, r.BuildID)
		if err != nil {
			return err
		}
		if !found || prev.item.Status == "" || prev.item.Kind != "" {
			return build.ErrNotFound
		}
		stored, err := prev.item.record()
		if err != nil {
			return err
		}
		if !stored.Waiting() || !stored.LaunchingAt.IsZero() {
			return fmt.Errorf("%w: stored status %s, launching since %q", build.ErrConflict, stored.Status, prev.item.LaunchingAt)
		}
		c := r
		c.Number = stored.Number
		c.KeepClaim(stored)
		if err := s.writeWithEvent(ctx, c, &prev, token); !errors.Is(err, errChanged) {
			return err
		}
	}
	return fmt.Errorf("%w: the record changed under %d writes", build.ErrUnavailable, maxWriteAttempts)
}

// readStored returns the item under id, read consistently; found is false
// when there is none.
func (s *Records) readStored(ctx context.Context, id build.ID) (storedRecord, bool, error) {
	item, err := s.stored(ctx, string(id), nil)
	if err != nil || item == nil {
		return storedRecord{}, false, err
	}
	var st storedRecord
	if err := attributevalue.UnmarshalMap(item, &st.item); err != nil {
		return storedRecord{}, false, fmt.Errorf("decode record %s: %w", id, err)
	}
	if err := attributevalue.UnmarshalMap(item, &st.outbox); err != nil {
		return storedRecord{}, false, fmt.Errorf("decode record %s: %w", id, err)
	}
	return st, true, nil
}

// writeWithEvent puts r, bearing token, with its event and the pending
// events of prev (nil: create it). Its condition is that the stored item
// is still prev, as read (its version and writeToken; for a create, that
// there is none). A failed condition on an item that bears token is this
// call's own put, retried by the SDK after its first try landed: a
// success. Another writer's item is errChanged.
func (s *Records) writeWithEvent(ctx context.Context, r build.Record, prev *storedRecord, token string) error {
	in, err := s.putWithEvent(r, prev, token, time.Now())
	if err != nil {
		return err
	}
	_, err = s.client.PutItem(ctx, in)
	if old, ok := conditionFailed(err); ok {
		stored, err := s.stored(ctx, string(r.BuildID), old)
		if err != nil {
			return err
		}
		if !bears(stored, attrWriteToken, token) {
			return errChanged
		}
	} else if err != nil {
		return classify(err)
	}
	s.wrote()
	return nil
}

// putWithEvent is writeWithEvent's PutItem, checked against the item
// limit: build.ErrInvalid when r with its own event is larger than an
// item, build.ErrUnavailable when the pending events of prev make it so.
func (s *Records) putWithEvent(r build.Record, prev *storedRecord, token string, now time.Time) (*dynamodb.PutItemInput, error) {
	st := outboxState{Version: 1, Pending: map[string]pendingEvent{}}
	if prev != nil {
		st.Version = prev.outbox.version() + 1
		for k, e := range prev.outbox.Pending {
			st.Pending[k] = e
		}
	}
	snapshot := itemFor(r)
	st.Pending[strconv.Itoa(st.Version)] = pendingEvent{At: now.UnixNano(), Record: snapshot}
	it := itemFor(r)
	it.WriteToken = token
	item, err := attributevalue.MarshalMap(it)
	if err != nil {
		return nil, err
	}
	state, err := attributevalue.MarshalMap(st)
	if err != nil {
		return nil, err
	}
	for k, v := range state {
		item[k] = v
	}
	item[attrOutboxShard] = str(outboxShardValue)
	item[attrOutboxSort] = str(outboxSortKey(st.oldest(), string(r.BuildID)))
	if n := itemSize(item); n > maxItemBytes {
		alone := withOnlyEvent(item, st.Version)
		if len(st.Pending) == 1 || itemSize(alone) > maxItemBytes {
			return nil, fmt.Errorf("%w: the record with its event is %d bytes, more than DynamoDB's %d-byte item", build.ErrInvalid, itemSize(alone), maxItemBytes)
		}
		return nil, fmt.Errorf("%w: the record with its %d events not yet forwarded would be %d bytes, more than DynamoDB's %d-byte item: is the event forwarder running?",
			build.ErrUnavailable, len(st.Pending), n, maxItemBytes)
	}
	names := map[string]string{"#id": attrBuildID}
	values := map[string]types.AttributeValue{}
	cond := "attribute_not_exists(#id)"
	if prev != nil {
		cond = "attribute_exists(#id)"
		names["#v"], names["#t"] = attrVersion, attrWriteToken
		if prev.outbox.Version == 0 {
			cond += " AND attribute_not_exists(#v)" // written before events were on
		} else {
			cond += " AND #v = :v"
			values[":v"] = num(int64(prev.outbox.Version))
		}
		if prev.item.WriteToken == "" {
			cond += " AND attribute_not_exists(#t)"
		} else {
			cond += " AND #t = :t"
			values[":t"] = str(prev.item.WriteToken)
		}
	}
	in := &dynamodb.PutItemInput{
		TableName:                           aws.String(s.table),
		Item:                                item,
		ConditionExpression:                 aws.String(cond),
		ExpressionAttributeNames:            names,
		ReturnValuesOnConditionCheckFailure: types.ReturnValuesOnConditionCheckFailureAllOld,
	}
	if len(values) > 0 {
		in.ExpressionAttributeValues = values
	}
	return in, nil
}

// withOnlyEvent returns item with only the pending event of version v:
// the record and its own event.
func withOnlyEvent(item map[string]types.AttributeValue, v int) map[string]types.AttributeValue {
	out := make(map[string]types.AttributeValue, len(item))
	for k, a := range item {
		out[k] = a
	}
	if p, ok := item[attrPending].(*types.AttributeValueMemberM); ok {
		k := strconv.Itoa(v)
		out[attrPending] = &types.AttributeValueMemberM{Value: map[string]types.AttributeValue{k: p.Value[k]}}
	}
	return out
}

// itemSize is the size DynamoDB counts for an item (Developer Guide,
// "Item sizes and formats"): each attribute's name plus its value, a
// string in UTF-8 bytes, a number about one byte per two digits plus one,
// a boolean or null one byte, a list or map three bytes plus one per
// element plus the elements (and a map's names). Rounding up, never down.
func itemSize(item map[string]types.AttributeValue) int {
	n := 0
	for name, v := range item {
		n += len(name) + valueSize(v)
	}
	return n
}

func valueSize(v types.AttributeValue) int {
	switch v := v.(type) {
	case *types.AttributeValueMemberS:
		return len(v.Value)
	case *types.AttributeValueMemberN:
		return (len(strings.TrimLeft(v.Value, "-0"))+1)/2 + 1
	case *types.AttributeValueMemberB:
		return len(v.Value)
	case *types.AttributeValueMemberBOOL, *types.AttributeValueMemberNULL:
		return 1
	case *types.AttributeValueMemberSS:
		n := 0
		for _, s := range v.Value {
			n += len(s)
		}
		return n
	case *types.AttributeValueMemberNS:
		n := 0
		for _, s := range v.Value {
			n += valueSize(&types.AttributeValueMemberN{Value: s})
		}
		return n
	case *types.AttributeValueMemberL:
		n := 3
		for _, e := range v.Value {
			n += 1 + valueSize(e)
		}
		return n
	case *types.AttributeValueMemberM:
		n := 3
		for k, e := range v.Value {
			n += 1 + len(k) + valueSize(e)
		}
		return n
	}
	return 0
}

// outbox is the event outbox of Records, read and emptied by forwarders.
type outbox struct{ s *Records }

// Pending returns up to limit events (at most maxPending): the builds
// with the oldest pending events first, each build's a run of consecutive
// versions from its lowest pending one. It waits up to wait for one,
// looking again when this process writes one, every outboxPoll for
// outboxSettle after such a write (the index lags), and at the end of the
// wait. Another process's writes wake nobody here, and need not: that
// process's own forwarder publishes them, and the wait (the forwarder's
// sweep) bounds how long the events of a process that died before it
// forwarded them wait. An idle forwarder, one in every service, thus
// costs a Query per sweep, not one per outboxPoll. See build.EventOutbox.
func (o outbox) Pending(ctx context.Context, limit int, wait time.Duration) ([]build.Event, error) {
	if !o.s.events {
		return nil, errNoEvents
	}
	limit = min(max(limit, 1), maxPending)
	deadline := time.Now().Add(wait)
	for {
		written := o.s.signal()
		evs, err := o.pending(ctx, limit)
		if err != nil || len(evs) > 0 {
			return evs, err
		}
		left := time.Until(deadline)
		if left <= 0 {
			return nil, nil
		}
		if recent := time.Since(o.s.lastWrite()) < outboxSettle; recent {
			left = min(left, outboxPoll)
		}
		t := time.NewTimer(left)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("read the outbox: %w", ctx.Err())
		case <-written:
			t.Stop()
		case <-t.C:
		}
	}
}

// pending reads the outbox once.
func (o outbox) pending(ctx context.Context, limit int) ([]build.Event, error) {
	keys, err := o.query(ctx, limit)
	if err != nil {
		return nil, err
	}
	items, err := o.s.batchGet(ctx, keys)
	if err != nil {
		return nil, fmt.Errorf("read the outbox: %w", err)
	}
	type build1 struct {
		id     string
		oldest int64
		st     outboxState
	}
	var builds []build1
	for _, av := range items {
		var b build1
		var it recordItem
		if err := attributevalue.UnmarshalMap(av, &it); err != nil {
			return nil, fmt.Errorf("read the outbox: decode: %w", err)
		}
		if err := attributevalue.UnmarshalMap(av, &b.st); err != nil {
			return nil, fmt.Errorf("read the outbox: decode %s: %w", it.BuildID, err)
		}
		if len(b.st.Pending) == 0 { // forwarded since the index showed it
			continue
		}
		b.id, b.oldest = it.BuildID, b.st.oldest()
		builds = append(builds, b)
	}
	slices.SortFunc(builds, func(a, b build1) int {
		if a.oldest != b.oldest {
			return compareInt64(a.oldest, b.oldest)
		}
		return strings.Compare(a.id, b.id)
	})
	var out []build.Event
	for _, b := range builds {
		vs, err := b.st.versions()
		if err != nil {
			return nil, fmt.Errorf("read the outbox: build %s: %w", b.id, err)
		}
		for i, v := range vs {
			if len(out) == limit || i > 0 && v != vs[i-1]+1 {
				break // the limit, or a gap: the rest waits
			}
			pe := b.st.Pending[strconv.Itoa(v)]
			r, err := pe.Record.record()
			if err != nil {
				return nil, fmt.Errorf("read the outbox: %w", err)
			}
			if string(r.BuildID) != b.id {
				return nil, fmt.Errorf("read the outbox: build %s holds an event of record %s", b.id, r.BuildID)
			}
			out = append(out, build.NewEvent(r, v, time.Unix(0, pe.At)))
		}
		if len(out) == limit {
			break
		}
	}
	return out, nil
}

func compareInt64(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// query returns the keys of up to limit items of the outbox index, those
// with the oldest pending events first.
func (o outbox) query(ctx context.Context, limit int) ([]map[string]types.AttributeValue, error) {
	in := &dynamodb.QueryInput{
		TableName:                 aws.String(o.s.table),
		IndexName:                 aws.String(indexOutbox),
		KeyConditionExpression:    aws.String("#s = :s"),
		ExpressionAttributeNames:  map[string]string{"#s": attrOutboxShard},
		ExpressionAttributeValues: map[string]types.AttributeValue{":s": str(outboxShardValue)},
	}
	var keys []map[string]types.AttributeValue
	seen := map[string]bool{}
	for len(keys) < limit {
		in.Limit = aws.Int32(int32(limit - len(keys)))
		page, err := o.s.client.Query(ctx, in)
		if err != nil {
			return nil, fmt.Errorf("read the outbox: %w", classify(err))
		}
		for _, av := range page.Items {
			id, ok := av[attrBuildID].(*types.AttributeValueMemberS)
			if !ok || seen[id.Value] {
				continue
			}
			seen[id.Value] = true
			keys = append(keys, map[string]types.AttributeValue{attrBuildID: id})
		}
		if len(page.LastEvaluatedKey) == 0 {
			break
		}
		in.ExclusiveStartKey = page.LastEvaluatedKey
	}
	return keys, nil
}

// batchGet reads the items under keys consistently, maxBatchGet keys a
// call, asking again for the keys DynamoDB left unprocessed.
func (s *Records) batchGet(ctx context.Context, keys []map[string]types.AttributeValue) ([]map[string]types.AttributeValue, error) {
	var items []map[string]types.AttributeValue
	for attempt := 0; len(keys) > 0; attempt++ {
		if attempt > 0 {
			if attempt > 4*maxWriteAttempts {
				return nil, fmt.Errorf("%w: %d keys left unprocessed", build.ErrUnavailable, len(keys))
			}
			if err := pause(ctx, attempt); err != nil {
				return nil, err
			}
		}
		batch := keys[:min(len(keys), maxBatchGet)]
		out, err := s.client.BatchGetItem(ctx, &dynamodb.BatchGetItemInput{RequestItems: map[string]types.KeysAndAttributes{
			s.table: {
				Keys:                     batch,
				ConsistentRead:           aws.Bool(true),
				ProjectionExpression:     aws.String("#id, #v, #p"),
				ExpressionAttributeNames: map[string]string{"#id": attrBuildID, "#v": attrVersion, "#p": attrPending},
			},
		}})
		if err != nil {
			return nil, classify(err)
		}
		items = append(items, out.Responses[s.table]...)
		left := out.UnprocessedKeys[s.table].Keys
		if len(left) == 0 {
			attempt = 0 // progress: the next batch goes at once
		}
		keys = append(left, keys[len(batch):]...)
	}
	return items, nil
}

// Forwarded removes the events from their records' items: per build one
// UpdateItem that removes the forwarded versions still pending (and the
// index keys with the last one), on condition that the item's version and
// number of pending events are those read, read again and tried again
// otherwise. Removing one that is gone is no error. An event whose ID is
// not "<subject>:<version>" gives build.ErrInvalid and nothing is
// removed.
func (o outbox) Forwarded(ctx context.Context, events ...build.Event) error {
	if !o.s.events {
		return errNoEvents
	}
	byBuild := map[build.ID][]int{}
	var order []build.ID
	for _, e := range events {
		v, ok := strings.CutPrefix(e.ID, string(e.Subject)+":")
		version, err := strconv.Atoi(v)
		if e.Subject == "" || !ok || err != nil || version < 1 || build.EventID(e.Subject, version) != e.ID {
			return fmt.Errorf("forwarded events: %w: event %q of build %q", build.ErrInvalid, e.ID, e.Subject)
		}
		if _, ok := byBuild[e.Subject]; !ok {
			order = append(order, e.Subject)
		}
		byBuild[e.Subject] = append(byBuild[e.Subject], version)
	}
	for _, id := range order {
		if err := o.forwarded(ctx, id, byBuild[id]); err != nil {
			return fmt.Errorf("forwarded events of %s: %w", id, err)
		}
	}
	return nil
}

// forwarded removes versions of build id from its item's pending events.
func (o outbox) forwarded(ctx context.Context, id build.ID, versions []int) error {
	var old map[string]types.AttributeValue // the item a failed condition returned
	for attempt := range maxWriteAttempts {
		if attempt > 0 {
			if err := pause(ctx, attempt); err != nil {
				return err
			}
		}
		item, err := o.s.stored(ctx, string(id), old)
		if err != nil {
			return err
		}
		if item == nil {
			return nil
		}
		var st outboxState
		if err := attributevalue.UnmarshalMap(item, &st); err != nil {
			return fmt.Errorf("decode: %w", err)
		}
		in := o.removeInput(id, st, versions)
		if in == nil {
			return nil // none of them pending
		}
		_, err = o.s.client.UpdateItem(ctx, in)
		if o2, ok := conditionFailed(err); ok {
			old = o2
			continue
		}
		return classify(err)
	}
	return fmt.Errorf("%w: the record changed under %d removals", build.ErrUnavailable, maxWriteAttempts)
}

// removeInput is forwarded's UpdateItem for the item's outbox state st;
// nil when none of versions is pending.
func (o outbox) removeInput(id build.ID, st outboxState, versions []int) *dynamodb.UpdateItemInput {
	names := map[string]string{"#v": attrVersion, "#p": attrPending}
	values := map[string]types.AttributeValue{":n": num(int64(len(st.Pending))), ":v": num(int64(st.Version))}
	left := outboxState{Pending: map[string]pendingEvent{}}
	for k, e := range st.Pending {
		left.Pending[k] = e
	}
	var remove []string
	for _, v := range versions {
		k := strconv.Itoa(v)
		if _, ok := left.Pending[k]; !ok {
			continue
		}
		delete(left.Pending, k)
		names["#k"+k] = k
		remove = append(remove, "#p.#k"+k)
	}
	if len(remove) == 0 {
		return nil
	}
	update := ""
	names["#sort"] = attrOutboxSort
	if len(left.Pending) == 0 {
		// The last ones: the whole map goes, and the item leaves the index.
		for k := range names {
			if strings.HasPrefix(k, "#k") {
				delete(names, k)
			}
		}
		names["#shard"] = attrOutboxShard
		update = "REMOVE #p, #shard, #sort"
	} else {
		update = "SET #sort = :sort REMOVE " + strings.Join(remove, ", ")
		values[":sort"] = str(outboxSortKey(left.oldest(), string(id)))
	}
	return &dynamodb.UpdateItemInput{
		TableName:        aws.String(o.s.table),
		Key:              map[string]types.AttributeValue{attrBuildID: str(string(id))},
		UpdateExpression: aws.String(update),
		// attribute_exists first: moto fails size() of a missing attribute.
		ConditionExpression:                 aws.String("#v = :v AND attribute_exists(#p) AND size(#p) = :n"),
		ExpressionAttributeNames:            names,
		ExpressionAttributeValues:           values,
		ReturnValuesOnConditionCheckFailure: types.ReturnValuesOnConditionCheckFailureAllOld,
	}
}
