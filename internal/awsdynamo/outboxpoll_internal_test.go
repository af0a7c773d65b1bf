package awsdynamo

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
)

// emptyOutbox is a builds table whose outbox index names nothing; it counts
// the queries.
type emptyOutbox struct {
	recordsAPI
	queries atomic.Int32
}

func (d *emptyOutbox) Query(context.Context, *dynamodb.QueryInput, ...func(*dynamodb.Options)) (*dynamodb.QueryOutput, error) {
	d.queries.Add(1)
	return &dynamodb.QueryOutput{}, nil
}

// TestPendingPollsOnlyAfterOwnWrites: an idle forwarder's Pending (one in
// every service) queries the index at the start and the end of its wait,
// not every outboxPoll; after this process wrote an event it polls for a
// while, as the index lags the table.
func TestPendingPollsOnlyAfterOwnWrites(t *testing.T) {
	t.Parallel()
	const wait = time.Second
	d := &emptyOutbox{}
	s := NewRecords(d, "builds").WithEvents()
	if evs, err := s.Outbox().Pending(t.Context(), 10, wait); err != nil || len(evs) != 0 {
		t.Fatalf("Pending() = %v, %v", evs, err)
	}
	if n := d.queries.Load(); n > 2 {
		t.Errorf("an idle Pending(wait %v) made %d queries, want at most 2 (no polling)", wait, n)
	}

	d.queries.Store(0)
	s.wrote() // as a Save does
	if _, err := s.Outbox().Pending(t.Context(), 10, wait); err != nil {
		t.Fatal(err)
	}
	if n := d.queries.Load(); n < 4 {
		t.Errorf("Pending(wait %v) right after a write made %d queries, want it to poll every %v (the index lags)", wait, n, outboxPoll)
	}
}
