package awsdynamo

import (
	"context"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/dynamodb/attributevalue"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/decap-ci/decap/internal/build"
)

// gateAPI lists the DynamoDB calls Gate makes.
type gateAPI interface {
	GetItem(ctx context.Context, in *dynamodb.GetItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.GetItemOutput, error)
	PutItem(ctx context.Context, in *dynamodb.PutItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.PutItemOutput, error)
}

// gateKey is the pk of the dispatch gate's item in the locks table.
const gateKey = "gate#dispatch"

// gateItem is the dispatch gate as stored. Since is RFC 3339 UTC with
// nanoseconds; empty fields are left out. It has no ttl: it never expires.
type gateItem struct {
	PK     string `dynamodbav:"pk"`
	Paused bool   `dynamodbav:"paused"`
	Reason string `dynamodbav:"reason,omitempty"`
	By     string `dynamodbav:"by,omitempty"`
	Since  string `dynamodbav:"since,omitempty"`
}

func gateItemFor(g build.GateState) gateItem {
	return gateItem{PK: gateKey, Paused: g.Paused, Reason: g.Reason, By: g.By, Since: formatTime(g.Since)}
}

func (it gateItem) state() (build.GateState, error) {
	since, err := parseTime(it.Since)
	if err != nil {
		return build.GateState{}, fmt.Errorf("decode dispatch gate: %w", err)
	}
	return build.GateState{Paused: it.Paused, Reason: it.Reason, By: it.By, Since: since}, nil
}

// Gate stores the dispatch gate (buildtest.Gate) as one item of the locks
// table, shared by every dispatcher replica. Get reads consistently, so a
// replica sees a Set as soon as it returns. It is safe for concurrent use.
type Gate struct {
	client gateAPI
	table  string
}

// NewGate returns the dispatch gate stored in the locks table table.
func NewGate(client gateAPI, table string) *Gate {
	return &Gate{client: client, table: table}
}

// Get returns the gate, read consistently; open (the zero GateState) if it
// was never set.
func (g *Gate) Get(ctx context.Context) (build.GateState, error) {
	res, err := g.client.GetItem(ctx, &dynamodb.GetItemInput{
		TableName:      aws.String(g.table),
		Key:            map[string]types.AttributeValue{"pk": str(gateKey)},
		ConsistentRead: aws.Bool(true),
	})
	if err != nil {
		return build.GateState{}, fmt.Errorf("get dispatch gate: %w", classify(err))
	}
	if res.Item == nil {
		return build.GateState{}, nil
	}
	var it gateItem
	if err := attributevalue.UnmarshalMap(res.Item, &it); err != nil {
		return build.GateState{}, fmt.Errorf("get dispatch gate: decode: %w", err)
	}
	st, err := it.state()
	if err != nil {
		return build.GateState{}, fmt.Errorf("get dispatch gate: %w", err)
	}
	return st, nil
}

// Set replaces the gate with one unconditional put: the last Set wins.
func (g *Gate) Set(ctx context.Context, st build.GateState) error {
	item, err := attributevalue.MarshalMap(gateItemFor(st))
	if err != nil {
		return fmt.Errorf("set dispatch gate: %w", err)
	}
	if _, err := g.client.PutItem(ctx, &dynamodb.PutItemInput{TableName: aws.String(g.table), Item: item}); err != nil {
		return fmt.Errorf("set dispatch gate: %w", classify(err))
	}
	return nil
}
