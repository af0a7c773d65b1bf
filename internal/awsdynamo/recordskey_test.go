package awsdynamo_test

import (
	"context"
	"sync"
	"testing"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb"

	"github.com/decap-ci/decap/internal/awsdynamo"
	"github.com/decap-ci/decap/internal/buildtest"
)

// serialized passes a client's record calls to DynamoDB one at a time.
// DynamoDB makes each conditional write atomic; moto checks a condition
// and then writes, and answers requests on several threads, so two racing
// writes can both pass their conditions. Serialized calls give the
// adapter what AWS promises, and leave the interleaving of the two sides'
// calls (which is what the adapter must get right) free.
type serialized struct {
	mu *sync.Mutex
	c  recordsClient
}

// recordsClient lists the calls Records makes: a *dynamodb.Client, or a
// wrapper of one.
type recordsClient interface {
	UpdateItem(ctx context.Context, in *dynamodb.UpdateItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.UpdateItemOutput, error)
	GetItem(ctx context.Context, in *dynamodb.GetItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.GetItemOutput, error)
	Query(ctx context.Context, in *dynamodb.QueryInput, opts ...func(*dynamodb.Options)) (*dynamodb.QueryOutput, error)
	TransactWriteItems(ctx context.Context, in *dynamodb.TransactWriteItemsInput, opts ...func(*dynamodb.Options)) (*dynamodb.TransactWriteItemsOutput, error)
	BatchGetItem(ctx context.Context, in *dynamodb.BatchGetItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.BatchGetItemOutput, error)
	BatchWriteItem(ctx context.Context, in *dynamodb.BatchWriteItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.BatchWriteItemOutput, error)
}

func (s serialized) UpdateItem(ctx context.Context, in *dynamodb.UpdateItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.UpdateItemOutput, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.c.UpdateItem(ctx, in, opts...)
}

func (s serialized) GetItem(ctx context.Context, in *dynamodb.GetItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.GetItemOutput, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.c.GetItem(ctx, in, opts...)
}

func (s serialized) Query(ctx context.Context, in *dynamodb.QueryInput, opts ...func(*dynamodb.Options)) (*dynamodb.QueryOutput, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.c.Query(ctx, in, opts...)
}

func (s serialized) TransactWriteItems(ctx context.Context, in *dynamodb.TransactWriteItemsInput, opts ...func(*dynamodb.Options)) (*dynamodb.TransactWriteItemsOutput, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.c.TransactWriteItems(ctx, in, opts...)
}

func (s serialized) BatchGetItem(ctx context.Context, in *dynamodb.BatchGetItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.BatchGetItemOutput, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.c.BatchGetItem(ctx, in, opts...)
}

func (s serialized) BatchWriteItem(ctx context.Context, in *dynamodb.BatchWriteItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.BatchWriteItemOutput, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.c.BatchWriteItem(ctx, in, opts...)
}

// TestSupersedeRacesLaunchAcrossClients races supersedes against launches
// through Records of two clients over one table, as ingest and a
// dispatcher do; see serialized for why the calls take turns.
func TestSupersedeRacesLaunchAcrossClients(t *testing.T) {
	t.Parallel()
	client := newClient(t)
	tables := newTables(t, client, buildsAndOutbox)
	var mu sync.Mutex
	buildtest.CheckSupersedeRacesLaunch(t, []buildtest.Records{
		awsdynamo.NewRecords(serialized{&mu, client}, tables.Builds).WithOutbox(tables.EventsOutbox),
		awsdynamo.NewRecords(serialized{&mu, newClient(t)}, tables.Builds).WithOutbox(tables.EventsOutbox),
	}, 16)
}
