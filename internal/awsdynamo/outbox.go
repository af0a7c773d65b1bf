package awsdynamo

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"hash/fnv"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/dynamodb/attributevalue"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/decap-ci/decap/internal/build"
)

// The event outbox (build.EventOutbox) of the builds table: every record
// write is one TransactWriteItems of the record's Put and its event's Put
// into the outbox table, so the event exists exactly when the change does.

// Limits of DynamoDB this package keeps (Amazon DynamoDB Developer Guide,
// "Quotas"; API reference of TransactWriteItems, BatchWriteItem,
// BatchGetItem).
const (
	// maxItemBytes is the largest item.
	maxItemBytes = 400 * 1024
	// maxTransactItems and maxTransactBytes bound one TransactWriteItems.
	maxTransactItems = 100
	maxTransactBytes = 4 * 1024 * 1024
	// maxBatchWrite and maxBatchGet bound one BatchWriteItem and one
	// BatchGetItem.
	maxBatchWrite = 25
	maxBatchGet   = 100
	// maxPending bounds the events one Pending returns: one Query page
	// (1 MB) holds that many records, and their predecessors one
	// BatchGetItem.
	maxPending = 100
)

// Outbox layout.
const (
	// outboxShards is how many partitions (shard "0" …) the outbox
	// spreads its events over, by a hash of the build ID: each build's
	// events stay in one. One partition takes 1000 writes a second, some
	// 300 record changes a second (each change writes its event in a
	// transaction, two units, and the forwarder deletes it); more shards
	// cost every poll of Pending one Query each.
	outboxShards = 1
	// outboxPoll is how often a waiting Pending looks again: other
	// processes' writes wake nobody here. Short, for the events'
	// latency target (DESIGN.md: a webhook gets a change within 500 ms).
	outboxPoll = 100 * time.Millisecond
	// versionDigits pads versions in the sort key so they sort as numbers.
	versionDigits = 10
	// maxWriteAttempts bounds a record write's reads and transactions when
	// other writers keep changing the record under it.
	maxWriteAttempts = 8
)

// outboxItem is one event as stored in the outbox table: the record as
// the change left it, once; Pending rebuilds the event from it
// (build.NewEvent), so the item is about the size of the record's.
type outboxItem struct {
	Shard string `dynamodbav:"shard"`
	// Event is the sort key: the build ID, "#", the version padded to
	// versionDigits. A shard's events sort by build, then version.
	Event   string     `dynamodbav:"event"`
	BuildID string     `dynamodbav:"buildId"`
	Version int        `dynamodbav:"version"`
	At      int64      `dynamodbav:"at"` // when the change was written, Unix nanoseconds
	Record  recordItem `dynamodbav:"record"`
}

func shardOf(id build.ID) string {
	h := fnv.New32a()
	h.Write([]byte(id))
	return strconv.Itoa(int(h.Sum32() % outboxShards))
}

func eventSortKey(id build.ID, version int) string {
	return fmt.Sprintf("%s#%0*d", id, versionDigits, version)
}

func outboxKey(id build.ID, version int) map[string]types.AttributeValue {
	return map[string]types.AttributeValue{"shard": str(shardOf(id)), "event": str(eventSortKey(id, version))}
}

// event rebuilds the event the item holds.
func (it outboxItem) event() (build.Event, error) {
	r, err := it.Record.record()
	if err != nil {
		return build.Event{}, err
	}
	if string(r.BuildID) != it.BuildID || it.Version < 1 {
		return build.Event{}, fmt.Errorf("outbox item %s holds record %s, version %d", it.Event, r.BuildID, it.Version)
	}
	return build.NewEvent(r, it.Version, time.Unix(0, it.At)), nil
}

// Errors of one record write (write), which the callers' loops act on.
var (
	// errChanged: another writer changed the record since it was read
	// (or created it since it was found missing).
	errChanged = errors.New("record changed meanwhile")
	// errBusy: another transaction held the record; try again shortly.
	errBusy = errors.New("record busy in another transaction")
)

// write puts r, bearing version and token, over prev (nil: create it) and
// its event into the outbox, in one transaction. The record's condition
// is that it is still prev, as read (its version and writeToken; for a
// create, that there is none); the event's that its item does not exist.
// A failed condition on a record that bears token is this call's own
// transaction, retried by the SDK after its first try landed (its event
// landed with it): a success. Another writer's record is errChanged; a
// transaction in progress on it errBusy.
func (s *Records) write(ctx context.Context, r build.Record, version int, prev *recordItem, token string) error {
	in, err := s.writeInput(r, version, prev, token)
	if err != nil {
		return err
	}
	for attempt := 0; ; attempt++ {
		_, err = s.client.TransactWriteItems(ctx, in)
		var busy *types.TransactionInProgressException
		if errors.As(err, &busy) && attempt < maxWriteAttempts {
			// The SDK retried this very request (same token) while its
			// first try was in progress: ask again for its outcome.
			if err := pause(ctx, attempt+1); err != nil {
				return err
			}
			continue
		}
		break
	}
	var canceled *types.TransactionCanceledException
	switch {
	case err == nil:
		s.wrote()
		return nil
	case conflicted(err):
		return errBusy
	case !errors.As(err, &canceled):
		return classify(err)
	}
	reasons := canceled.CancellationReasons
	code := func(i int) string {
		if i < len(reasons) {
			return aws.ToString(reasons[i].Code)
		}
		return ""
	}
	for i := range reasons {
		switch c := code(i); {
		case c == "TransactionConflict":
			return errBusy
		case unavailableCode(c) || c == "ThrottlingError":
			return fmt.Errorf("%w: %w", build.ErrUnavailable, err)
		}
	}
	if c := code(0); c != "" && c != "None" && c != "ConditionalCheckFailed" {
		return fmt.Errorf("write record: %w", err)
	}
	if code(0) == "None" {
		// The record's condition held, the event's did not: an event of
		// this version is in the outbox while its record is not.
		return fmt.Errorf("write record: event %s is in the outbox already, its record at version %d", build.EventID(r.BuildID, version), version-1)
	}
	var old map[string]types.AttributeValue
	if len(reasons) > 0 {
		old = reasons[0].Item
	}
	stored, err := s.stored(ctx, string(r.BuildID), old)
	if err != nil {
		return err
	}
	if bears(stored, attrWriteToken, token) {
		s.wrote()
		return nil
	}
	return errChanged
}

// writeInput is write's transaction, checked against DynamoDB's limits:
// an item larger than 400 KB gives build.ErrInvalid.
func (s *Records) writeInput(r build.Record, version int, prev *recordItem, token string) (*dynamodb.TransactWriteItemsInput, error) {
	it := itemFor(r)
	it.Version, it.WriteToken = version, token
	item, err := attributevalue.MarshalMap(it)
	if err != nil {
		return nil, err
	}
	names := map[string]string{"#id": attrBuildID}
	values := map[string]types.AttributeValue{}
	cond := "attribute_not_exists(#id)"
	if prev != nil {
		cond = "attribute_exists(#id)"
		names["#v"], names["#t"] = attrVersion, attrWriteToken
		if prev.Version == 0 {
			cond += " AND attribute_not_exists(#v)" // written before records had versions
		} else {
			cond += " AND #v = :v"
			values[":v"] = num(int64(prev.Version))
		}
		if prev.WriteToken == "" {
			cond += " AND attribute_not_exists(#t)"
		} else {
			cond += " AND #t = :t"
			values[":t"] = str(prev.WriteToken)
		}
	}
	put := &types.Put{
		TableName:                           aws.String(s.table),
		Item:                                item,
		ConditionExpression:                 aws.String(cond),
		ExpressionAttributeNames:            names,
		ReturnValuesOnConditionCheckFailure: types.ReturnValuesOnConditionCheckFailureAllOld,
	}
	if len(values) > 0 {
		put.ExpressionAttributeValues = values
	}
	items := []types.TransactWriteItem{{Put: put}}
	if s.outbox != "" {
		it.WriteToken = ""
		ev, err := attributevalue.MarshalMap(outboxItem{Shard: shardOf(r.BuildID), Event: eventSortKey(r.BuildID, version),
			BuildID: string(r.BuildID), Version: version, At: time.Now().UnixNano(), Record: it})
		if err != nil {
			return nil, err
		}
		items = append(items, types.TransactWriteItem{Put: &types.Put{
			TableName:                aws.String(s.outbox),
			Item:                     ev,
			ConditionExpression:      aws.String("attribute_not_exists(#e)"),
			ExpressionAttributeNames: map[string]string{"#e": "event"},
		}})
	}
	if err := checkTransaction(items); err != nil {
		return nil, fmt.Errorf("write record: %w", err)
	}
	return &dynamodb.TransactWriteItemsInput{
		TransactItems: items,
		// DynamoDB answers a repeated token within ten minutes with the
		// first try's outcome; emulators may not, hence write's check.
		ClientRequestToken: aws.String(rand.Text()),
	}, nil
}

// checkTransaction enforces TransactWriteItems' limits: at most 100
// items, each at most 400 KB, 4 MB in all. Larger input gives
// build.ErrInvalid, before any call.
func checkTransaction(items []types.TransactWriteItem) error {
	if len(items) > maxTransactItems {
		return fmt.Errorf("%w: a transaction of %d items, more than %d", build.ErrInvalid, len(items), maxTransactItems)
	}
	total := 0
	for _, ti := range items {
		if ti.Put == nil {
			continue
		}
		n := itemSize(ti.Put.Item)
		if n > maxItemBytes {
			return fmt.Errorf("%w: an item of %d bytes in %s, more than DynamoDB's %d", build.ErrInvalid, n, aws.ToString(ti.Put.TableName), maxItemBytes)
		}
		total += n
	}
	if total > maxTransactBytes {
		return fmt.Errorf("%w: a transaction of %d bytes, more than %d", build.ErrInvalid, total, maxTransactBytes)
	}
	return nil
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

// wrote wakes this process's waiting Pending calls.
func (s *Records) wrote() {
	s.mu.Lock()
	defer s.mu.Unlock()
	close(s.written)
	s.written = make(chan struct{})
}

// Outbox returns the store's event outbox (see WithOutbox); without an
// outbox table its calls fail.
func (s *Records) Outbox() build.EventOutbox { return outbox{s} }

// outbox is the outbox table of Records, read and emptied by forwarders.
//
// A shard's Query returns its events by build, then version, consistently
// read; a build's first event found is its oldest in the outbox. Its
// predecessor is then gone (forwarded), except that a Query is not a
// snapshot: a page read at one moment may show version v, written after
// v-1, but not v-1 (read just before). So Pending reads the predecessor
// of each build's first event by key (BatchGetItem, consistent: it sees
// every write acknowledged before it) and leaves out builds whose
// predecessor is still there.
type outbox struct{ s *Records }

var errNoOutbox = errors.New("the build records have no outbox table (Records.WithOutbox)")

// Pending returns up to limit events (at most maxPending), each build's in version order and
// oldest builds first (by build ID), only runs whose predecessor left the
// outbox; it waits up to wait for one, looking again every outboxPoll
// and when this process writes one. See build.EventOutbox.
func (o outbox) Pending(ctx context.Context, limit int, wait time.Duration) ([]build.Event, error) {
	if o.s.outbox == "" {
		return nil, errNoOutbox
	}
	limit = min(max(limit, 1), maxPending)
	deadline := time.Now().Add(wait)
	for {
		o.s.mu.Lock()
		written := o.s.written
		o.s.mu.Unlock()
		evs, err := o.pending(ctx, limit)
		if err != nil || len(evs) > 0 {
			return evs, err
		}
		left := time.Until(deadline)
		if left <= 0 {
			return nil, nil
		}
		t := time.NewTimer(min(left, outboxPoll))
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

// pending reads the shards once.
func (o outbox) pending(ctx context.Context, limit int) ([]build.Event, error) {
	var candidates []outboxItem
	for shard := range outboxShards {
		items, err := o.queryShard(ctx, strconv.Itoa(shard), limit-len(candidates))
		if err != nil {
			return nil, err
		}
		candidates = append(candidates, items...)
		if len(candidates) >= limit {
			break
		}
	}
	// Each build's run: consecutive versions from its first found.
	next := map[string]int{}
	var run []outboxItem
	for _, it := range candidates {
		want, seen := next[it.BuildID]
		if seen && it.Version != want {
			next[it.BuildID] = -1 // a gap: the rest waits
			continue
		}
		next[it.BuildID] = it.Version + 1
		run = append(run, it)
	}
	blocked, err := o.predecessorsPending(ctx, run)
	if err != nil {
		return nil, err
	}
	var out []build.Event
	for _, it := range run {
		if blocked[it.BuildID] {
			continue
		}
		e, err := it.event()
		if err != nil {
			return nil, fmt.Errorf("read the outbox: %w", err)
		}
		out = append(out, e)
	}
	return out, nil
}

// queryShard returns up to limit of a shard's events in sort order, read
// consistently.
func (o outbox) queryShard(ctx context.Context, shard string, limit int) ([]outboxItem, error) {
	in := &dynamodb.QueryInput{
		TableName:                 aws.String(o.s.outbox),
		KeyConditionExpression:    aws.String("#s = :s"),
		ExpressionAttributeNames:  map[string]string{"#s": "shard"},
		ExpressionAttributeValues: map[string]types.AttributeValue{":s": str(shard)},
		ConsistentRead:            aws.Bool(true),
	}
	var out []outboxItem
	for len(out) < limit {
		in.Limit = aws.Int32(int32(limit - len(out)))
		page, err := o.s.client.Query(ctx, in)
		if err != nil {
			return nil, fmt.Errorf("read the outbox: %w", classify(err))
		}
		for _, av := range page.Items {
			var it outboxItem
			if err := attributevalue.UnmarshalMap(av, &it); err != nil {
				return nil, fmt.Errorf("read the outbox: decode: %w", err)
			}
			out = append(out, it)
		}
		if len(page.LastEvaluatedKey) == 0 {
			break
		}
		in.ExclusiveStartKey = page.LastEvaluatedKey
	}
	return out, nil
}

// predecessorsPending returns the builds among run whose first event's
// predecessor is still in the outbox, read by key, consistently.
func (o outbox) predecessorsPending(ctx context.Context, run []outboxItem) (map[string]bool, error) {
	var keys []map[string]types.AttributeValue
	first := map[string]bool{}
	for _, it := range run {
		if first[it.BuildID] {
			continue
		}
		first[it.BuildID] = true
		if it.Version > 1 {
			keys = append(keys, outboxKey(build.ID(it.BuildID), it.Version-1))
		}
	}
	blocked := map[string]bool{}
	for attempt := 0; len(keys) > 0; attempt++ {
		if attempt > 0 {
			if attempt > maxWriteAttempts {
				return nil, fmt.Errorf("read the outbox: %w: keys left unprocessed", build.ErrUnavailable)
			}
			if err := pause(ctx, attempt); err != nil {
				return nil, fmt.Errorf("read the outbox: %w", err)
			}
		}
		batch := keys[:min(len(keys), maxBatchGet)]
		out, err := o.s.client.BatchGetItem(ctx, &dynamodb.BatchGetItemInput{RequestItems: map[string]types.KeysAndAttributes{
			o.s.outbox: {Keys: batch, ConsistentRead: aws.Bool(true), ProjectionExpression: aws.String("buildId")},
		}})
		if err != nil {
			return nil, fmt.Errorf("read the outbox: %w", classify(err))
		}
		for _, av := range out.Responses[o.s.outbox] {
			if id, ok := av[attrBuildID].(*types.AttributeValueMemberS); ok {
				blocked[id.Value] = true
			}
		}
		keys = append(out.UnprocessedKeys[o.s.outbox].Keys, keys[len(batch):]...)
	}
	return blocked, nil
}

// Forwarded deletes the events from the outbox (BatchWriteItem, 25 at a
// time); deleting one that is gone is no error. An event whose ID is not
// "<subject>:<version>" gives build.ErrInvalid and nothing is deleted.
func (o outbox) Forwarded(ctx context.Context, events ...build.Event) error {
	if o.s.outbox == "" {
		return errNoOutbox
	}
	seen := map[string]bool{}
	var deletes []types.WriteRequest
	for _, e := range events {
		v, ok := strings.CutPrefix(e.ID, string(e.Subject)+":")
		version, err := strconv.Atoi(v)
		if e.Subject == "" || !ok || err != nil || version < 1 || build.EventID(e.Subject, version) != e.ID {
			return fmt.Errorf("forwarded events: %w: event %q of build %q", build.ErrInvalid, e.ID, e.Subject)
		}
		if seen[e.ID] {
			continue // a batch's keys must be distinct
		}
		seen[e.ID] = true
		deletes = append(deletes, types.WriteRequest{DeleteRequest: &types.DeleteRequest{Key: outboxKey(e.Subject, version)}})
	}
	for attempt := 0; len(deletes) > 0; attempt++ {
		if attempt > 0 {
			if attempt > 4*maxWriteAttempts {
				return fmt.Errorf("forwarded events: %w: %d deletes left unprocessed", build.ErrUnavailable, len(deletes))
			}
			if err := pause(ctx, attempt); err != nil {
				return fmt.Errorf("forwarded events: %w", err)
			}
		}
		batch := deletes[:min(len(deletes), maxBatchWrite)]
		out, err := o.s.client.BatchWriteItem(ctx, &dynamodb.BatchWriteItemInput{
			RequestItems: map[string][]types.WriteRequest{o.s.outbox: batch},
		})
		if err != nil {
			return fmt.Errorf("forwarded events: %w", classify(err))
		}
		left := out.UnprocessedItems[o.s.outbox]
		if len(left) == 0 {
			attempt = -1 // progress: the next batch goes at once
		}
		deletes = append(left, deletes[len(batch):]...)
	}
	return nil
}
