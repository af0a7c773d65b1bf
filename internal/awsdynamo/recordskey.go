package awsdynamo

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"sort"

	"github.com/aws/aws-sdk-go-v2/aws"
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
// queued or deferred and not being launched; see buildtest.Records. It
// reads the stored record consistently, decides, and writes r (the stored
// number and, as r has no launch claim, the stored claim's attributes
// kept) with its event in one transaction on condition that the record is
// still the one read, as Save's replace does: reading again when another
// writer changed it meanwhile, and taking a failed condition on a record
// that bears the call's token for the call's own write, retried by the
// SDK after its first try landed: a success.
func (s *Records) EndWaiting(ctx context.Context, r build.Record) error {
	if !r.Status.Final() {
		return fmt.Errorf("end waiting build %s: %w: status %q is not final", r.BuildID, build.ErrInvalid, r.Status)
	}
	token := rand.Text()
	for attempt := range maxWriteAttempts {
		err := s.endWaiting(ctx, r, token)
		if !errors.Is(err, errChanged) && !errors.Is(err, errBusy) {
			if err != nil {
				return fmt.Errorf("end waiting build %s: %w", r.BuildID, err)
			}
			return nil
		}
		if err := pause(ctx, attempt+1); err != nil {
			return fmt.Errorf("end waiting build %s: %w", r.BuildID, err)
		}
	}
	return fmt.Errorf("end waiting build %s: %w: the record changed under %d writes", r.BuildID, build.ErrUnavailable, maxWriteAttempts)
}

// endWaiting is one try of EndWaiting.
func (s *Records) endWaiting(ctx context.Context, r build.Record, token string) error {
	it, found, err := s.read(ctx, r.BuildID)
	if err != nil {
		return err
	}
	if !found || it.Status == "" || it.Kind != "" {
		return build.ErrNotFound
	}
	stored, err := it.record()
	if err != nil {
		return err
	}
	if !stored.Waiting() || !stored.LaunchingAt.IsZero() {
		return fmt.Errorf("%w: stored status %s, launching since %q", build.ErrConflict, stored.Status, it.LaunchingAt)
	}
	r.Number = stored.Number
	r.KeepClaim(stored)
	return s.write(ctx, r, it.version()+1, &it, token)
}
