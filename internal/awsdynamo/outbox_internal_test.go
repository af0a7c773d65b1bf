package awsdynamo

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/dynamodb/attributevalue"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/decap-ci/decap/internal/build"
)

// TestRecordTooLargeForAnItem checks DynamoDB's 400 KB item limit, which
// moto does not enforce, before any call (the store has no client): a
// record that with its own event passes it is build.ErrInvalid; one that
// passes it only with the events not yet forwarded is
// build.ErrUnavailable (it fits once a forwarder catches up); one just
// under it is put.
func TestRecordTooLargeForAnItem(t *testing.T) {
	t.Parallel()
	base := time.Date(2025, time.March, 1, 12, 0, 0, 0, time.UTC)
	s := NewRecords(nil, "builds").WithEvents()
	r := build.Record{BuildID: build.NewID(base), Team: "t", Project: "p", Ref: "main", Status: build.StatusFailed, QueuedAt: base}

	r.Reason = strings.Repeat("x", maxItemBytes/2)
	if _, err := s.putWithEvent(r, nil, "token", base); !errors.Is(err, build.ErrInvalid) {
		t.Errorf("putWithEvent() of a %d-byte reason (twice in the item) error = %v, want ErrInvalid", len(r.Reason), err)
	}

	r.Reason = strings.Repeat("x", maxItemBytes/2-2048)
	in, err := s.putWithEvent(r, nil, "token", base)
	if err != nil {
		t.Fatalf("putWithEvent() of a record just under the limit error = %v", err)
	}
	if n := itemSize(in.Item); n > maxItemBytes || n < maxItemBytes-8192 {
		t.Errorf("the item just under the limit counts %d bytes, want %d to %d", n, maxItemBytes-8192, maxItemBytes)
	}

	// A build with many changes not forwarded: each a snapshot more.
	r.Reason = strings.Repeat("y", 4096)
	prev := storedRecord{outbox: outboxState{Version: 0, Pending: map[string]pendingEvent{}}}
	for v := 1; ; v++ {
		in, err := s.putWithEvent(r, &prev, "token", base)
		if errors.Is(err, build.ErrUnavailable) {
			if v < 50 {
				t.Errorf("refused at version %d with %d pending events of ~4 KB, want ~95", v, len(prev.outbox.Pending)+1)
			}
			break
		}
		if err != nil {
			t.Fatalf("putWithEvent() version %d error = %v", v, err)
		}
		if n := itemSize(in.Item); n > maxItemBytes {
			t.Fatalf("an item of %d bytes passed the check", n)
		}
		prev.outbox.Version = v
		prev.outbox.Pending[strconv.Itoa(v)] = pendingEvent{At: base.UnixNano(), Record: itemFor(r)}
	}
}

// laggingOutbox is a builds table whose outbox index lags: its Query
// names items, one of which has no pending events any more, and whose
// BatchGetItem leaves every other key unprocessed on its first answer, as
// DynamoDB may.
type laggingOutbox struct {
	recordsAPI
	items   map[string]map[string]types.AttributeValue // by build ID
	order   []string                                   // the index's order
	batches int
	keys    int
}

func (d *laggingOutbox) Query(_ context.Context, in *dynamodb.QueryInput, _ ...func(*dynamodb.Options)) (*dynamodb.QueryOutput, error) {
	if aws.ToString(in.IndexName) != indexOutbox {
		return nil, fmt.Errorf("query of index %q, want %q", aws.ToString(in.IndexName), indexOutbox)
	}
	out := &dynamodb.QueryOutput{}
	for _, id := range d.order {
		out.Items = append(out.Items, map[string]types.AttributeValue{attrBuildID: str(id)})
	}
	return out, nil
}

func (d *laggingOutbox) BatchGetItem(_ context.Context, in *dynamodb.BatchGetItemInput, _ ...func(*dynamodb.Options)) (*dynamodb.BatchGetItemOutput, error) {
	d.batches++
	out := &dynamodb.BatchGetItemOutput{Responses: map[string][]map[string]types.AttributeValue{}, UnprocessedKeys: map[string]types.KeysAndAttributes{}}
	for table, ka := range in.RequestItems {
		if !aws.ToBool(ka.ConsistentRead) {
			return nil, errors.New("BatchGetItem without ConsistentRead")
		}
		if len(ka.Keys) > maxBatchGet {
			return nil, fmt.Errorf("BatchGetItem of %d keys, more than %d", len(ka.Keys), maxBatchGet)
		}
		var left []map[string]types.AttributeValue
		for i, k := range ka.Keys {
			d.keys++
			if d.batches == 1 && i%2 == 1 {
				left = append(left, k)
				continue
			}
			out.Responses[table] = append(out.Responses[table], d.items[k[attrBuildID].(*types.AttributeValueMemberS).Value])
		}
		if len(left) > 0 {
			out.UnprocessedKeys[table] = types.KeysAndAttributes{Keys: left, ConsistentRead: aws.Bool(true)}
		}
	}
	return out, nil
}

// TestPendingReadsItemsByKey: Pending takes the index only as a list of
// names; the items, read consistently (keys left unprocessed asked
// again), decide: the builds with the oldest pending event first, each a
// run from its lowest pending version cut at a gap, an item whose events
// are gone since the index named it left out.
func TestPendingReadsItemsByKey(t *testing.T) {
	t.Parallel()
	base := time.Date(2025, time.March, 1, 12, 0, 0, 0, time.UTC)
	d := &laggingOutbox{items: map[string]map[string]types.AttributeValue{}}
	item := func(id build.ID, at time.Time, versions ...int) {
		st := outboxState{Version: versions[len(versions)-1], Pending: map[string]pendingEvent{}}
		for i, v := range versions {
			r := build.Record{BuildID: id, Team: "t", Project: "p", Ref: "main", Status: build.StatusQueued, QueuedAt: base, Number: 1}
			st.Pending[strconv.Itoa(v)] = pendingEvent{At: at.Add(time.Duration(i) * time.Second).UnixNano(), Record: itemFor(r)}
		}
		av, err := attributevalue.MarshalMap(st)
		if err != nil {
			t.Fatal(err)
		}
		av[attrBuildID] = str(string(id))
		d.items[string(id)] = av
		d.order = append(d.order, string(id))
	}
	gap, old, forwarded, fresh := build.NewID(base), build.NewID(base.Add(time.Second)), build.NewID(base.Add(2*time.Second)), build.NewID(base.Add(3*time.Second))
	item(gap, base.Add(time.Minute), 3, 4, 6) // 5 forwarded while a Save put 3, 4 back
	item(old, base, 1, 2)                     // the oldest event, though the index lists it second
	d.items[string(forwarded)] = map[string]types.AttributeValue{attrBuildID: str(string(forwarded)), attrVersion: num(3)}
	d.order = append(d.order, string(forwarded))
	item(fresh, base.Add(time.Hour), 1)

	evs, err := NewRecords(d, "builds").WithEvents().Outbox().Pending(t.Context(), 10, 0)
	if err != nil {
		t.Fatalf("Pending() error = %v", err)
	}
	var got []string
	for _, e := range evs {
		got = append(got, e.ID)
	}
	want := []string{build.EventID(old, 1), build.EventID(old, 2), build.EventID(gap, 3), build.EventID(gap, 4), build.EventID(fresh, 1)}
	if !slices.Equal(got, want) {
		t.Errorf("Pending() = %v, want %v", got, want)
	}
	if d.batches < 2 || d.keys != 4+2 {
		t.Errorf("Pending() made %d BatchGetItem calls asking %d keys, want 2 calls (the unprocessed keys again), 6 keys", d.batches, d.keys)
	}
	if evs, err := NewRecords(d, "builds").WithEvents().Outbox().Pending(t.Context(), 3, 0); err != nil || len(evs) != 3 || evs[0].ID != build.EventID(old, 1) {
		t.Errorf("Pending(max 3) = %v, %v; want 3 events from %s", evs, err, build.EventID(old, 1))
	}
}
