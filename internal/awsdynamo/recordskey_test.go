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

// recordsClient is the DynamoDB client's record calls: a client, or a
// client wrapped (retriedWrites).
type recordsClient interface {
	PutItem(ctx context.Context, in *dynamodb.PutItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.PutItemOutput, error)
	UpdateItem(ctx context.Context, in *dynamodb.UpdateItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.UpdateItemOutput, error)
	GetItem(ctx context.Context, in *dynamodb.GetItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.GetItemOutput, error)
	Query(ctx context.Context, in *dynamodb.QueryInput, opts ...func(*dynamodb.Options)) (*dynamodb.QueryOutput, error)
	BatchGetItem(ctx context.Context, in *dynamodb.BatchGetItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.BatchGetItemOutput, error)
}

func (s serialized) PutItem(ctx context.Context, in *dynamodb.PutItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.PutItemOutput, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.c.PutItem(ctx, in, opts...)
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

func (s serialized) BatchGetItem(ctx context.Context, in *dynamodb.BatchGetItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.BatchGetItemOutput, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.c.BatchGetItem(ctx, in, opts...)
}

// TestSupersedeRacesLaunchAcrossClients races supersedes against launches
// through Records of two clients over one table, as ingest and a
// dispatcher do; see serialized for why the calls take turns.
func TestSupersedeRacesLaunchAcrossClients(t *testing.T) {
	t.Parallel()
	client := newClient(t)
	table := newTables(t, client, buildsOnly).Builds
	var mu sync.Mutex
	buildtest.CheckSupersedeRacesLaunch(t, []buildtest.Records{
		awsdynamo.NewRecords(serialized{&mu, client}, table),
		awsdynamo.NewRecords(serialized{&mu, newClient(t)}, table),
	}, 16)
}
