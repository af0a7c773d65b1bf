package awsdynamo

import (
	"context"
	"fmt"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/dynamodb/attributevalue"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/decap-ci/decap/internal/build"
)

// sessionsAPI lists the DynamoDB calls Sessions makes.
type sessionsAPI interface {
	PutItem(ctx context.Context, in *dynamodb.PutItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.PutItemOutput, error)
	GetItem(ctx context.Context, in *dynamodb.GetItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.GetItemOutput, error)
	DeleteItem(ctx context.Context, in *dynamodb.DeleteItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.DeleteItemOutput, error)
}

// sessionItem is one session: pk is its key, the SHA-256 of its ID.
type sessionItem struct {
	PK        string `dynamodbav:"pk"`
	Binding   string `dynamodbav:"binding"`
	CreatedAt int64  `dynamodbav:"createdAt"`
	ExpiresAt int64  `dynamodbav:"expiresAt"`
	TTL       int64  `dynamodbav:"ttl"`
}

// Sessions stores the UI's signed-in sessions (buildtest.Sessions), one
// item per session. It is safe for concurrent use.
type Sessions struct {
	client sessionsAPI
	table  string
	now    func() time.Time
}

// NewSessions returns the sessions stored in table, reading time from now
// (time.Now if nil).
func NewSessions(client sessionsAPI, table string, now func() time.Time) *Sessions {
	return &Sessions{client: client, table: table, now: orNow(now)}
}

// Create stores s unless an unexpired session has its key (build.ErrConflict):
// one conditional put. The SDK retries a put whose answer was lost or
// failed; if its first try landed, the retry's condition fails on the
// very session it wrote, which the failed condition returns (or a
// consistent read finds, where an emulator returns none): that is a
// success, not a conflict. A session key is the hash of a random ID, so
// no other writer puts the same session.
func (s *Sessions) Create(ctx context.Context, sess build.Session) error {
	if err := build.ValidateSession(sess); err != nil {
		return fmt.Errorf("create session: %w", err)
	}
	it := sessionItem{
		PK:        sess.Key,
		Binding:   sess.Binding,
		CreatedAt: nanos(sess.CreatedAt),
		ExpiresAt: nanos(sess.ExpiresAt),
		TTL:       ttlSeconds(sess.ExpiresAt),
	}
	item, err := attributevalue.MarshalMap(it)
	if err != nil {
		return fmt.Errorf("create session: %w", err)
	}
	_, err = s.client.PutItem(ctx, &dynamodb.PutItemInput{
		TableName:                           aws.String(s.table),
		Item:                                item,
		ConditionExpression:                 aws.String("attribute_not_exists(#pk) OR #exp <= :now"),
		ExpressionAttributeNames:            map[string]string{"#pk": "pk", "#exp": "expiresAt"},
		ExpressionAttributeValues:           map[string]types.AttributeValue{":now": num(nanos(s.now()))},
		ReturnValuesOnConditionCheckFailure: types.ReturnValuesOnConditionCheckFailureAllOld,
	})
	if old, failed := conditionFailed(err); failed {
		landed, err := s.landed(ctx, it, old)
		if err != nil {
			return fmt.Errorf("create session: %w", err)
		}
		if landed {
			return nil
		}
		return fmt.Errorf("create session: %w: the key is taken", build.ErrConflict)
	}
	if err != nil {
		return fmt.Errorf("create session: %w", classify(err))
	}
	return nil
}

// landed reports whether the stored session (storedItem) is it.
func (s *Sessions) landed(ctx context.Context, it sessionItem, old map[string]types.AttributeValue) (bool, error) {
	old, err := storedItem(ctx, s.client, s.table, map[string]types.AttributeValue{"pk": str(it.PK)}, old)
	if err != nil {
		return false, err
	}
	var stored sessionItem
	if old == nil || attributevalue.UnmarshalMap(old, &stored) != nil {
		return false, nil
	}
	return stored == it, nil
}

// Get returns the unexpired session under key; build.ErrNotFound otherwise.
// The read is strongly consistent: a session created through another
// replica a moment ago is found.
func (s *Sessions) Get(ctx context.Context, key string) (build.Session, error) {
	if !build.IsSessionKey(key) {
		return build.Session{}, fmt.Errorf("session: %w", build.ErrNotFound)
	}
	out, err := s.client.GetItem(ctx, &dynamodb.GetItemInput{
		TableName:      aws.String(s.table),
		Key:            map[string]types.AttributeValue{"pk": str(key)},
		ConsistentRead: aws.Bool(true),
	})
	if err != nil {
		return build.Session{}, fmt.Errorf("get session: %w", classify(err))
	}
	if out.Item == nil {
		return build.Session{}, fmt.Errorf("session: %w", build.ErrNotFound)
	}
	var it sessionItem
	if err := attributevalue.UnmarshalMap(out.Item, &it); err != nil {
		return build.Session{}, fmt.Errorf("decode session: %w", err)
	}
	// TTL deletes lazily: an item past its expiry may still be there.
	if it.ExpiresAt <= nanos(s.now()) {
		return build.Session{}, fmt.Errorf("session: %w", build.ErrNotFound)
	}
	return build.Session{Key: it.PK, Binding: it.Binding, CreatedAt: fromNanos(it.CreatedAt), ExpiresAt: fromNanos(it.ExpiresAt)}, nil
}

// Delete removes the session under key, if any.
func (s *Sessions) Delete(ctx context.Context, key string) error {
	if !build.IsSessionKey(key) {
		return nil // no session has it
	}
	_, err := s.client.DeleteItem(ctx, &dynamodb.DeleteItemInput{
		TableName: aws.String(s.table),
		Key:       map[string]types.AttributeValue{"pk": str(key)},
	})
	if err != nil {
		return fmt.Errorf("delete session: %w", classify(err))
	}
	return nil
}
