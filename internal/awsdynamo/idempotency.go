package awsdynamo

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/dynamodb/attributevalue"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/decap-ci/decap/internal/build"
)

// idempotencyAPI lists the DynamoDB calls Idempotency makes.
type idempotencyAPI interface {
	PutItem(ctx context.Context, in *dynamodb.PutItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.PutItemOutput, error)
	GetItem(ctx context.Context, in *dynamodb.GetItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.GetItemOutput, error)
}

// claimItem is one claim: pk is the claimed key.
type claimItem struct {
	PK        string `dynamodbav:"pk"`
	BuildID   string `dynamodbav:"buildId"`
	ExpiresAt int64  `dynamodbav:"expiresAt"`
	TTL       int64  `dynamodbav:"ttl"`
}

// Idempotency remembers which build owns a delivery or request
// (buildtest.Idempotency), one item per key. It is safe for concurrent use.
type Idempotency struct {
	client idempotencyAPI
	table  string
	now    func() time.Time
}

// NewIdempotency returns the claims stored in table, reading time from now
// (time.Now if nil).
func NewIdempotency(client idempotencyAPI, table string, now func() time.Time) *Idempotency {
	return &Idempotency{client: client, table: table, now: orNow(now)}
}

// Claim records that key belongs to id for ttl unless an unexpired claim
// exists, and returns the owner: id when the claim is new (or was id's
// already), the earlier build's ID otherwise. An existing claim keeps its
// expiry. It is one conditional put; a lost condition costs a consistent
// read only if DynamoDB did not return the old item.
func (s *Idempotency) Claim(ctx context.Context, key string, id build.ID, ttl time.Duration) (build.ID, error) {
	if key == "" || id == "" || ttl <= 0 {
		return "", fmt.Errorf("claim %s: %w: empty key or build id, or ttl not positive", key, build.ErrInvalid)
	}
	var owner build.ID
	err := retryRaces(ctx, writeAttempts, func() error {
		var err error
		owner, err = s.tryClaim(ctx, key, id, ttl)
		return err
	})
	if err != nil {
		return "", fmt.Errorf("claim %s: %w", key, err)
	}
	return owner, nil
}

func (s *Idempotency) tryClaim(ctx context.Context, key string, id build.ID, ttl time.Duration) (build.ID, error) {
	now := s.now()
	item, err := attributevalue.MarshalMap(claimItem{
		PK:        key,
		BuildID:   string(id),
		ExpiresAt: nanos(now.Add(ttl)),
		TTL:       ttlSeconds(now.Add(ttl)),
	})
	if err != nil {
		return "", err
	}
	_, err = s.client.PutItem(ctx, &dynamodb.PutItemInput{
		TableName:                           aws.String(s.table),
		Item:                                item,
		ConditionExpression:                 aws.String("attribute_not_exists(#pk) OR #exp <= :now"),
		ExpressionAttributeNames:            map[string]string{"#pk": "pk", "#exp": "expiresAt"},
		ExpressionAttributeValues:           map[string]types.AttributeValue{":now": num(nanos(now))},
		ReturnValuesOnConditionCheckFailure: types.ReturnValuesOnConditionCheckFailureAllOld,
	})
	if err == nil {
		return id, nil
	}
	old, ok := conditionFailed(err)
	if !ok {
		if conflicted(err) {
			return "", errRace
		}
		return "", classify(err)
	}
	if old == nil {
		res, err := s.client.GetItem(ctx, &dynamodb.GetItemInput{
			TableName:      aws.String(s.table),
			Key:            map[string]types.AttributeValue{"pk": str(key)},
			ConsistentRead: aws.Bool(true),
		})
		if err != nil {
			return "", classify(err)
		}
		if res.Item == nil {
			return "", errRace // removed since the put: claim again
		}
		old = res.Item
	}
	var c claimItem
	if err := attributevalue.UnmarshalMap(old, &c); err != nil {
		return "", fmt.Errorf("decode claim: %w", err)
	}
	if c.BuildID == "" {
		return "", errors.New("stored claim has no build id")
	}
	return build.ID(c.BuildID), nil
}
