package awsdynamo

import (
	"context"
	"crypto/rand"
	"fmt"
	"sort"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/dynamodb/attributevalue"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/decap-ci/decap/internal/build"
)

// Unfinished returns the queued, deferred and running records of lock key
// key, oldest first (by QueuedAt, then BuildID). It queries the sparse
// unfinished index under unfinishedKey = key, which holds only the key's
// unfinished records; like every index it lags the table a little, so a
// record is kept only if its status still says unfinished. A malformed
// key gives build.ErrInvalid.
func (s *Records) Unfinished(ctx context.Context, key string) ([]build.Record, error) {
	if _, _, _, err := build.SplitLockKey(key); err != nil {
		return nil, fmt.Errorf("list unfinished builds of %s: %w", key, err)
	}
	items, err := s.queryAll(ctx, &dynamodb.QueryInput{
		TableName:                 aws.String(s.table),
		IndexName:                 aws.String(indexUnfinished),
		KeyConditionExpression:    aws.String("#k = :k"),
		ExpressionAttributeNames:  map[string]string{"#k": "unfinishedKey"},
		ExpressionAttributeValues: map[string]types.AttributeValue{":k": str(key)},
	})
	if err != nil {
		return nil, fmt.Errorf("list unfinished builds of %s: %w", key, err)
	}
	recs, err := decodeRecords(items)
	if err != nil {
		return nil, fmt.Errorf("list unfinished builds of %s: %w", key, err)
	}
	out := make([]build.Record, 0, len(recs))
	for _, r := range recs {
		if !r.Status.Final() && r.LockKey() == key {
			out = append(out, r)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Older(out[j]) })
	return out, nil
}

// EndWaiting writes r, which must be final, only if the stored record is
// queued or deferred and not being launched; see buildtest.Records. It is
// one UpdateItem (every attribute of r but the key and the number, as
// Save's replace, and a token of the call) on condition that the stored
// status is queued or deferred and launchingAt is absent. A failed
// condition on a record that bears the call's token is the call's own
// write, retried by the SDK after its first try landed: a success (see
// Save). With events on it reads the record, decides and writes it with
// its event, as Save does (outbox.go).
func (s *Records) EndWaiting(ctx context.Context, r build.Record) error {
	if !r.Status.Final() {
		return fmt.Errorf("end waiting build %s: %w: status %q is not final", r.BuildID, build.ErrInvalid, r.Status)
	}
	if s.events {
		if err := s.endWaitingWithEvent(ctx, r); err != nil {
			return fmt.Errorf("end waiting build %s: %w", r.BuildID, err)
		}
		return nil
	}
	token := rand.Text()
	in, err := s.endWaitingInput(r, token)
	if err != nil {
		return fmt.Errorf("end waiting build %s: %w", r.BuildID, err)
	}
	_, err = s.client.UpdateItem(ctx, in)
	if old, ok := conditionFailed(err); ok {
		// An answer without the stored item (as an emulator may give)
		// costs a read, to tell a missing record from a refusal.
		item, err := s.stored(ctx, string(r.BuildID), old)
		if err != nil {
			return fmt.Errorf("end waiting build %s: %w", r.BuildID, err)
		}
		var stored recordItem
		if item == nil || attributevalue.UnmarshalMap(item, &stored) != nil || stored.Status == "" || stored.Kind != "" {
			return fmt.Errorf("end waiting build %s: %w", r.BuildID, build.ErrNotFound)
		}
		if stored.WriteToken == token {
			return nil
		}
		return fmt.Errorf("end waiting build %s: %w: stored status %s, launching since %q", r.BuildID, build.ErrConflict, stored.Status, stored.LaunchingAt)
	}
	if err != nil {
		return fmt.Errorf("end waiting build %s: %w", r.BuildID, classify(err))
	}
	return nil
}

// endWaitingInput is EndWaiting's UpdateItem: Save's replace of r, on
// condition that the stored record is queued or deferred and not being
// launched.
func (s *Records) endWaitingInput(r build.Record, token string) (*dynamodb.UpdateItemInput, error) {
	in, err := s.replaceInput(r, token)
	if err != nil {
		return nil, err
	}
	delete(in.ExpressionAttributeValues, ":final") // the rank condition's, not used here
	in.ExpressionAttributeValues[":queued"] = str(string(build.StatusQueued))
	in.ExpressionAttributeValues[":deferred"] = str(string(build.StatusDeferred))
	in.ExpressionAttributeNames["#"+attrLaunchingAt] = attrLaunchingAt // r has no claim: not in the update
	in.ConditionExpression = aws.String("attribute_exists(#buildId) AND #status IN (:queued, :deferred) AND attribute_not_exists(#launchingAt)")
	return in, nil
}
