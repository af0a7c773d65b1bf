package awsdynamo

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/feature/dynamodb/attributevalue"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/decap-ci/decap/internal/build"
)

// TestRecordTooLargeForAnItem checks DynamoDB's 400 KB item limit, which
// moto does not enforce: a record whose item (or its event's) would be
// larger is refused with ErrInvalid before any write (a nil client
// panics if called after the read), one just under it passes the check.
func TestRecordTooLargeForAnItem(t *testing.T) {
	t.Parallel()
	base := time.Date(2025, time.March, 1, 12, 0, 0, 0, time.UTC)
	r := build.Record{BuildID: build.NewID(base), Team: "t", Project: "p", Ref: "main", Status: build.StatusFailed, QueuedAt: base}
	s := NewRecords(nil, "builds").WithOutbox("outbox")
	r.Reason = strings.Repeat("x", maxItemBytes)
	if _, err := s.writeInput(r, 2, &recordItem{Version: 1}, "token"); !errors.Is(err, build.ErrInvalid) {
		t.Errorf("writeInput() of a %d-byte reason error = %v, want ErrInvalid", len(r.Reason), err)
	}
	r.Reason = strings.Repeat("x", maxItemBytes-2048)
	in, err := s.writeInput(r, 2, &recordItem{Version: 1}, "token")
	if err != nil {
		t.Fatalf("writeInput() of a record just under the limit error = %v", err)
	}
	for _, ti := range in.TransactItems {
		if n := itemSize(ti.Put.Item); n > maxItemBytes {
			t.Errorf("item of %d bytes passed the check", n)
		}
	}
	many := make([]types.TransactWriteItem, maxTransactItems+1)
	if err := checkTransaction(many); !errors.Is(err, build.ErrInvalid) {
		t.Errorf("checkTransaction() of %d items error = %v, want ErrInvalid", len(many), err)
	}
}

// unsnapshotted is an outbox whose Query shows a build's version 2 but
// not its version 1, which BatchGetItem still finds: a Query is not a
// snapshot, a read by key is consistent.
type unsnapshotted struct {
	recordsAPI
	query []map[string]types.AttributeValue
	held  []map[string]types.AttributeValue
}

func (d *unsnapshotted) Query(context.Context, *dynamodb.QueryInput, ...func(*dynamodb.Options)) (*dynamodb.QueryOutput, error) {
	return &dynamodb.QueryOutput{Items: d.query}, nil
}

func (d *unsnapshotted) BatchGetItem(_ context.Context, in *dynamodb.BatchGetItemInput, _ ...func(*dynamodb.Options)) (*dynamodb.BatchGetItemOutput, error) {
	out := &dynamodb.BatchGetItemOutput{Responses: map[string][]map[string]types.AttributeValue{}}
	for table, ka := range in.RequestItems {
		for _, k := range ka.Keys {
			for _, it := range d.held {
				if it["event"].(*types.AttributeValueMemberS).Value == k["event"].(*types.AttributeValueMemberS).Value {
					out.Responses[table] = append(out.Responses[table], map[string]types.AttributeValue{attrBuildID: it[attrBuildID]})
				}
			}
		}
	}
	return out, nil
}

// TestPendingChecksPredecessorByKey checks the predecessor rule where the
// Query alone would break it: a build whose first event found is v2
// while v1 is still in the outbox is left out; a build whose v1 is gone,
// and one at v1, are returned; a gap cuts a build's run.
func TestPendingChecksPredecessorByKey(t *testing.T) {
	t.Parallel()
	base := time.Date(2025, time.March, 1, 12, 0, 0, 0, time.UTC)
	item := func(id build.ID, v int) map[string]types.AttributeValue {
		r := build.Record{BuildID: id, Team: "t", Project: "p", Ref: "main", Status: build.StatusQueued, QueuedAt: base}
		av, err := attributevalue.MarshalMap(outboxItem{Shard: shardOf(id), Event: eventSortKey(id, v), BuildID: string(id), Version: v,
			At: base.UnixNano(), Record: itemFor(r)})
		if err != nil {
			t.Fatal(err)
		}
		return av
	}
	blocked, forwarded, fresh := build.NewID(base), build.NewID(base.Add(time.Second)), build.NewID(base.Add(2*time.Second))
	d := &unsnapshotted{
		query: []map[string]types.AttributeValue{item(blocked, 2), item(forwarded, 3), item(forwarded, 4), item(forwarded, 6), item(fresh, 1)},
		held:  []map[string]types.AttributeValue{item(blocked, 1)},
	}
	evs, err := NewRecords(d, "builds").WithOutbox("outbox").Outbox().Pending(t.Context(), 10, 0)
	if err != nil {
		t.Fatalf("Pending() error = %v", err)
	}
	var got []string
	for _, e := range evs {
		got = append(got, e.ID)
	}
	want := []string{build.EventID(forwarded, 3), build.EventID(forwarded, 4), build.EventID(fresh, 1)}
	if !slices.Equal(got, want) {
		t.Errorf("Pending() = %v, want %v", got, want)
	}
}
