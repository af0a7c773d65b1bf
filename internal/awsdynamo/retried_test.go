package awsdynamo_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb"

	"github.com/decap-ci/decap/internal/awsdynamo"
	"github.com/decap-ci/decap/internal/build"
	"github.com/decap-ci/decap/internal/buildtest"
)

// retriedWrites is a DynamoDB client that sends every write twice and
// answers with the second try: what the SDK does when a write's first
// try landed but its answer was lost or failed (a timeout, a 5xx, a
// response failing its checksum; moto under load gives these). So every
// conditional write's retry meets the item its own first try wrote. A
// first try that fails did not land and is answered as it is.
type retriedWrites struct{ *dynamodb.Client }

func (c retriedWrites) PutItem(ctx context.Context, in *dynamodb.PutItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.PutItemOutput, error) {
	if _, err := c.Client.PutItem(ctx, in, opts...); err != nil {
		return nil, err
	}
	return c.Client.PutItem(ctx, in, opts...)
}

func (c retriedWrites) UpdateItem(ctx context.Context, in *dynamodb.UpdateItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.UpdateItemOutput, error) {
	if _, err := c.Client.UpdateItem(ctx, in, opts...); err != nil {
		return nil, err
	}
	return c.Client.UpdateItem(ctx, in, opts...)
}

func (c retriedWrites) DeleteItem(ctx context.Context, in *dynamodb.DeleteItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.DeleteItemOutput, error) {
	if _, err := c.Client.DeleteItem(ctx, in, opts...); err != nil {
		return nil, err
	}
	return c.Client.DeleteItem(ctx, in, opts...)
}

// The contract suites again, with every write retried after its first try
// landed: the answers must be the same (no spurious conflict, no second
// build number).

func TestRecordsWithRetriedWrites(t *testing.T) {
	t.Parallel()
	client := newClient(t)
	buildtest.TestRecords(t, func(t *testing.T) buildtest.Records {
		return awsdynamo.NewRecords(serialized{&sync.Mutex{}, retriedWrites{client}}, newTables(t, client, buildsOnly).Builds)
	})
}

func TestRecordsNumbersWithRetriedWrites(t *testing.T) {
	t.Parallel()
	client := newClient(t)
	table := newTables(t, client, buildsOnly).Builds
	var mu sync.Mutex // see serialized
	buildtest.CheckConcurrentNumbers(t, []buildtest.Records{
		awsdynamo.NewRecords(serialized{&mu, retriedWrites{client}}, table),
		awsdynamo.NewRecords(serialized{&mu, retriedWrites{newClient(t)}}, table),
	})
}

func TestIdempotencyWithRetriedWrites(t *testing.T) {
	t.Parallel()
	client := newClient(t)
	buildtest.TestIdempotency(t, func(t *testing.T, clock *buildtest.Clock) buildtest.Idempotency {
		return awsdynamo.NewIdempotency(retriedWrites{client}, newTables(t, client, idempotencyOnly).Idempotency, clock.Now)
	})
}

func TestPullRequestsWithRetriedWrites(t *testing.T) {
	t.Parallel()
	client := newClient(t)
	buildtest.TestPullRequests(t, func(t *testing.T) build.PullRequests {
		return awsdynamo.NewPullRequests(retriedWrites{client}, newTables(t, client, buildsOnly).Builds)
	})
}

func TestGateWithRetriedWrites(t *testing.T) {
	t.Parallel()
	client := newClient(t)
	buildtest.TestGate(t, func(t *testing.T) buildtest.Gate {
		return awsdynamo.NewGate(retriedWrites{client}, newTables(t, client, locksOnly).Locks)
	})
}

func TestSessionsWithRetriedWrites(t *testing.T) {
	t.Parallel()
	client := newClient(t)
	buildtest.TestSessions(t, func(t *testing.T, clock *buildtest.Clock) buildtest.Sessions {
		return awsdynamo.NewSessions(retriedWrites{client}, newTables(t, client, sessionsOnly).Sessions, clock.Now)
	})
}

func TestLocksWithRetriedWrites(t *testing.T) {
	t.Parallel()
	client := newClient(t)
	buildtest.TestLocks(t, func(t *testing.T, clock *buildtest.Clock) buildtest.Locks {
		return awsdynamo.NewLocks(retriedWrites{client}, newTables(t, client, locksOnly).Locks, clock.Now)
	})
}

func TestConcurrentLocksWithRetriedWrites(t *testing.T) {
	t.Parallel()
	client := newClient(t)
	table := newTables(t, client, locksOnly).Locks
	clock := buildtest.NewClock(time.Time{})
	var stores []buildtest.Locks
	for range 3 {
		stores = append(stores, awsdynamo.NewLocks(retriedWrites{newClient(t)}, table, clock.Now))
	}
	buildtest.CheckConcurrentLocks(t, stores, clock)
}

func TestWebhooksWithRetriedWrites(t *testing.T) {
	t.Parallel()
	client := newClient(t)
	buildtest.TestWebhooks(t, func(t *testing.T, clock *buildtest.Clock) buildtest.Webhooks {
		return awsdynamo.NewWebhooks(retriedWrites{client}, newTables(t, client, buildsOnly).Builds, clock.Now)
	})
}
