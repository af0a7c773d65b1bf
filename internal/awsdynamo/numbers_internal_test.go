package awsdynamo

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/dynamodb/attributevalue"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/decap-ci/decap/internal/build"
)

// quietDynamo is a builds table that, like an emulator without
// ReturnValuesOnConditionCheckFailure, answers a failed condition without
// the stored item. It evaluates only the conditions Save writes.
type quietDynamo struct {
	recordsAPI
	mu    sync.Mutex
	items map[string]map[string]types.AttributeValue
	calls int
}

func (d *quietDynamo) PutItem(_ context.Context, in *dynamodb.PutItemInput, _ ...func(*dynamodb.Options)) (*dynamodb.PutItemOutput, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.calls++
	id := in.Item[attrBuildID].(*types.AttributeValueMemberS).Value
	if _, ok := d.items[id]; ok && aws.ToString(in.ConditionExpression) == "attribute_not_exists(#id)" {
		return nil, &types.ConditionalCheckFailedException{}
	}
	d.items[id] = in.Item
	return &dynamodb.PutItemOutput{}, nil
}

func (d *quietDynamo) UpdateItem(_ context.Context, in *dynamodb.UpdateItemInput, _ ...func(*dynamodb.Options)) (*dynamodb.UpdateItemOutput, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.calls++
	id := in.Key[attrBuildID].(*types.AttributeValueMemberS).Value
	if strings.HasPrefix(id, markerPrefix) {
		var m markerItem
		_ = attributevalue.UnmarshalMap(d.items[id], &m)
		m.BuildID, m.LastNumber = id, m.LastNumber+1
		d.items[id], _ = attributevalue.MarshalMap(m)
		return &dynamodb.UpdateItemOutput{Attributes: map[string]types.AttributeValue{attrLastNumber: num(int64(m.LastNumber))}}, nil
	}
	old, ok := d.items[id]
	newRank, _ := strconv.Atoi(in.ExpressionAttributeValues[":rank"].(*types.AttributeValueMemberN).Value)
	if !ok {
		return nil, &types.ConditionalCheckFailedException{}
	}
	oldRank, _ := strconv.Atoi(old["rank"].(*types.AttributeValueMemberN).Value)
	if oldRank >= 2 || oldRank > newRank {
		return nil, &types.ConditionalCheckFailedException{}
	}
	for name, a := range in.ExpressionAttributeNames {
		if v, ok := in.ExpressionAttributeValues[":"+a]; ok && name == "#"+a {
			old[a] = v
		}
	}
	return &dynamodb.UpdateItemOutput{}, nil
}

// TestSaveWithoutStoredItemInAnswers checks Save against a store whose
// failed conditions do not return the stored item: a create, a replace and
// a refused replace of a final record still end as they should (the last
// as build.ErrConflict, after a bounded number of calls), and numbers are
// given once.
func TestSaveWithoutStoredItemInAnswers(t *testing.T) {
	t.Parallel()
	d := &quietDynamo{items: map[string]map[string]types.AttributeValue{}}
	s := NewRecords(d, "builds")
	ctx := t.Context()
	at := time.Date(2025, time.March, 1, 12, 0, 0, 0, time.UTC)
	r := build.Record{BuildID: build.NewID(at), Team: "t", Project: "p", Ref: "main", Status: build.StatusQueued, QueuedAt: at}
	if err := s.Save(ctx, r); err != nil {
		t.Fatalf("Save() of a new record error = %v", err)
	}
	r.Status = build.StatusRunning // not created again: a replace
	if err := s.Save(ctx, r); err != nil {
		t.Fatalf("Save() of the running record error = %v", err)
	}
	r.Status = build.StatusSucceeded
	if err := s.Save(ctx, r); err != nil {
		t.Fatalf("Save() of the final record error = %v", err)
	}
	got, err := s.Get(ctx, r.BuildID)
	if err != nil {
		t.Fatalf("Get() error = %v", err)
	}
	if got.Number != 1 || got.Status != build.StatusSucceeded {
		t.Errorf("stored record: number %d, status %s; want 1, succeeded", got.Number, got.Status)
	}
	d.calls = 0
	r.Status = build.StatusQueued
	if err := s.Save(ctx, r); !errors.Is(err, build.ErrConflict) {
		t.Errorf("Save() over a final record error = %v, want ErrConflict", err)
	}
	if d.calls > 5 {
		t.Errorf("the refused Save made %d calls, want a bounded few", d.calls)
	}
}

// Get reads what quietDynamo stores.
func (d *quietDynamo) GetItem(_ context.Context, in *dynamodb.GetItemInput, _ ...func(*dynamodb.Options)) (*dynamodb.GetItemOutput, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return &dynamodb.GetItemOutput{Item: d.items[in.Key[attrBuildID].(*types.AttributeValueMemberS).Value]}, nil
}
