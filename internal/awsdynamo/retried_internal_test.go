package awsdynamo

import (
	"context"
	"errors"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/feature/dynamodb/attributevalue"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/decap-ci/decap/internal/build"
)

// landedRecords is a builds table whose record writes land on their first
// try and are then answered as the SDK's retry of them is: the condition
// failed, on the item just written (returned with the failure when
// returnOld, else found by a read). A write that cannot land (an update
// of no record; any write when refuse is set, another writer's item being
// in the way) is answered as a failed condition on the stored item. The
// marker's counter counts once per call.
type landedRecords struct {
	recordsAPI
	returnOld, refuse bool
	items             map[string]map[string]types.AttributeValue
	last              int
}

func (d *landedRecords) failed(item map[string]types.AttributeValue) error {
	e := &types.ConditionalCheckFailedException{}
	if d.returnOld {
		e.Item = item
	}
	return e
}

func (d *landedRecords) PutItem(_ context.Context, in *dynamodb.PutItemInput, _ ...func(*dynamodb.Options)) (*dynamodb.PutItemOutput, error) {
	id := in.Item[attrBuildID].(*types.AttributeValueMemberS).Value
	if !d.refuse {
		d.items[id] = in.Item
	}
	return nil, d.failed(d.items[id])
}

func (d *landedRecords) UpdateItem(_ context.Context, in *dynamodb.UpdateItemInput, _ ...func(*dynamodb.Options)) (*dynamodb.UpdateItemOutput, error) {
	id := in.Key[attrBuildID].(*types.AttributeValueMemberS).Value
	if strings.HasPrefix(id, markerPrefix) {
		d.last++
		return &dynamodb.UpdateItemOutput{Attributes: map[string]types.AttributeValue{attrLastNumber: num(int64(d.last))}}, nil
	}
	old, ok := d.items[id]
	if ok && !d.refuse {
		// replaceInput sets each attribute a as "#a = :a".
		for name, a := range in.ExpressionAttributeNames {
			if v, set := in.ExpressionAttributeValues[":"+a]; set && name == "#"+a {
				old[a] = v
			}
		}
	}
	return nil, d.failed(old)
}

func (d *landedRecords) GetItem(_ context.Context, in *dynamodb.GetItemInput, _ ...func(*dynamodb.Options)) (*dynamodb.GetItemOutput, error) {
	return &dynamodb.GetItemOutput{Item: d.items[in.Key[attrBuildID].(*types.AttributeValueMemberS).Value]}, nil
}

// TestRecordWritesRetriedAfterTheyLanded checks Save and EndWaiting when
// the SDK retried a write whose first try landed but whose answer was
// lost: the retry's condition fails on the very item the call wrote,
// which is success, not a conflict (seen as TestRecords/save_and_get
// failing on moto under load); another writer's record stays a conflict.
func TestRecordWritesRetriedAfterTheyLanded(t *testing.T) {
	t.Parallel()
	at := time.Date(2025, time.March, 1, 12, 0, 0, 0, time.UTC)
	n := 0
	record := func(st build.Status) build.Record {
		n++
		return build.Record{BuildID: build.NewID(at.Add(time.Duration(n) * time.Second)), Team: "t", Project: "p", Ref: "main", Status: st, QueuedAt: at}
	}
	for name, returnOld := range map[string]bool{"with the old item": true, "without it": false} {
		d := &landedRecords{returnOld: returnOld, items: map[string]map[string]types.AttributeValue{}}
		s := NewRecords(d, "builds")
		store := func(r build.Record) {
			av, err := attributevalue.MarshalMap(itemFor(r))
			if err != nil {
				t.Fatal(err)
			}
			d.items[string(r.BuildID)] = av
		}
		ctx := t.Context()

		created := record(build.StatusFailed)
		if err := s.Save(ctx, created); err != nil {
			t.Errorf("%s: Save() of a new final record whose put landed: %v, want nil", name, err)
		}
		if got, err := s.Get(ctx, created.BuildID); err != nil || got.Status != build.StatusFailed || got.Number == 0 {
			t.Errorf("%s: Get() of the record created = status %s, number %d, %v; want failed, numbered", name, got.Status, got.Number, err)
		}
		ended := record(build.StatusRunning)
		store(ended)
		ended.Status = build.StatusSucceeded
		if err := s.Save(ctx, ended); err != nil {
			t.Errorf("%s: Save() of a final record whose update landed: %v, want nil", name, err)
		}
		waiting := record(build.StatusQueued)
		store(waiting)
		if err := waiting.Supersede(at, build.NewID(at.Add(time.Hour))); err != nil {
			t.Fatal(err)
		}
		if err := s.EndWaiting(ctx, waiting); err != nil {
			t.Errorf("%s: EndWaiting() whose update landed: %v, want nil", name, err)
		}

		d.refuse = true
		for _, st := range []build.Status{build.StatusQueued, build.StatusFailed} {
			theirs := record(build.StatusSucceeded)
			store(theirs)
			mine := theirs
			mine.Status, mine.Number = st, 0
			if err := s.Save(ctx, mine); !errors.Is(err, build.ErrConflict) {
				t.Errorf("%s: Save() of a %s record over another writer's final record: %v, want ErrConflict", name, st, err)
			}
		}
		theirs := record(build.StatusRunning)
		store(theirs)
		mine := theirs
		mine.Status, mine.FinishedAt = build.StatusSuperseded, at
		if err := s.EndWaiting(ctx, mine); !errors.Is(err, build.ErrConflict) {
			t.Errorf("%s: EndWaiting() of another writer's running record: %v, want ErrConflict", name, err)
		}
	}
}

// landedPuts is a table whose first put lands and is then answered as the
// SDK's retry of it is: the condition failed, on the item just written
// (returned with the failure when returnOld, else found by a read). A put
// over a stored item does not land.
type landedPuts struct {
	returnOld bool
	item      map[string]types.AttributeValue
}

func (d *landedPuts) PutItem(_ context.Context, in *dynamodb.PutItemInput, _ ...func(*dynamodb.Options)) (*dynamodb.PutItemOutput, error) {
	if d.item == nil {
		d.item = in.Item
	}
	e := &types.ConditionalCheckFailedException{}
	if d.returnOld {
		e.Item = d.item
	}
	return nil, e
}

func (d *landedPuts) GetItem(context.Context, *dynamodb.GetItemInput, ...func(*dynamodb.Options)) (*dynamodb.GetItemOutput, error) {
	return &dynamodb.GetItemOutput{Item: d.item}, nil
}

func (d *landedPuts) DeleteItem(context.Context, *dynamodb.DeleteItemInput, ...func(*dynamodb.Options)) (*dynamodb.DeleteItemOutput, error) {
	return nil, errors.New("no deletes here")
}

// TestSessionCreateRetriedAfterItLanded checks a Create whose put the SDK
// retried after its first try landed: the retry's condition fails on the
// very session it wrote, which is success (a sign-in that would have
// failed); another session under the key stays a conflict.
func TestSessionCreateRetriedAfterItLanded(t *testing.T) {
	t.Parallel()
	now := time.Date(2025, time.March, 1, 12, 0, 0, 0, time.UTC)
	sess := build.Session{Key: strings.Repeat("ab", 32), Binding: "binding", CreatedAt: now, ExpiresAt: now.Add(time.Hour)}
	for name, returnOld := range map[string]bool{"with the old item": true, "without it": false} {
		s := NewSessions(&landedPuts{returnOld: returnOld}, "sessions", func() time.Time { return now })
		if err := s.Create(t.Context(), sess); err != nil {
			t.Errorf("%s: Create() whose first try landed: %v, want nil", name, err)
		}
		other := sess
		other.Binding = "another"
		if err := s.Create(t.Context(), other); !errors.Is(err, build.ErrConflict) {
			t.Errorf("%s: Create() over another session of the key: %v, want ErrConflict", name, err)
		}
	}
}

// landedDeletes is a locks table whose deletes land on their first try and
// are then answered as the SDK's retry of them is: the condition failed,
// on an item that is gone. When takenBy is set, the lock changed hands
// between the caller's read and its delete: the delete finds that lock
// and fails on it.
type landedDeletes struct {
	locksAPI
	items   map[string]map[string]types.AttributeValue
	takenBy map[string]types.AttributeValue
}

func pkOf(key map[string]types.AttributeValue) string {
	return key["pk"].(*types.AttributeValueMemberS).Value
}

func (d *landedDeletes) GetItem(_ context.Context, in *dynamodb.GetItemInput, _ ...func(*dynamodb.Options)) (*dynamodb.GetItemOutput, error) {
	return &dynamodb.GetItemOutput{Item: d.items[pkOf(in.Key)]}, nil
}

func (d *landedDeletes) DeleteItem(_ context.Context, in *dynamodb.DeleteItemInput, _ ...func(*dynamodb.Options)) (*dynamodb.DeleteItemOutput, error) {
	pk := pkOf(in.Key)
	if d.takenBy != nil && strings.HasPrefix(pk, lockPrefix) {
		d.items[pk], d.takenBy = d.takenBy, nil
		return nil, &types.ConditionalCheckFailedException{Item: d.items[pk]}
	}
	delete(d.items, pk)
	return nil, &types.ConditionalCheckFailedException{}
}

func (d *landedDeletes) Scan(_ context.Context, in *dynamodb.ScanInput, _ ...func(*dynamodb.Options)) (*dynamodb.ScanOutput, error) {
	out := &dynamodb.ScanOutput{}
	for pk, it := range d.items {
		if strings.HasPrefix(pk, slotPrefix) {
			out.Items = append(out.Items, it)
		}
	}
	return out, nil
}

// TestLockDropRetriedAfterItLanded checks Release and ForceRelease when the
// SDK retried the lock's delete after its first try took the lock: the
// retry's condition fails on a lock that is gone, which is the release
// done. Release hands back the waiter and ForceRelease says it released
// a held lock (they lost the waiter, and said nobody held it); the slot
// goes too. When another build took the key between the first try and
// the retry (the CI flake of TestConcurrentLocksWithRetriedWrites:
// "conflict: held by build ..."), the release is done all the same: the
// lease read was unexpired, so only a delete can have ended it; the other
// build's lock stays theirs.
func TestLockDropRetriedAfterItLanded(t *testing.T) {
	t.Parallel()
	now := time.Date(2025, time.March, 1, 12, 0, 0, 0, time.UTC)
	const key = "t/p/main"
	id := build.NewID(now)
	slot := 0
	marshal := func(v any) map[string]types.AttributeValue {
		av, err := attributevalue.MarshalMap(v)
		if err != nil {
			t.Fatal(err)
		}
		return av
	}
	table := func(holder build.ID) *landedDeletes {
		return &landedDeletes{items: map[string]map[string]types.AttributeValue{
			lockPrefix + key: marshal(lockItem{PK: lockPrefix + key, BuildID: string(holder), ExpiresAt: nanos(now.Add(time.Hour)), Slot: &slot, Waiter: "r2"}),
			slotPrefix + "0": marshal(slotItem{PK: slotPrefix + "0", BuildID: string(holder), LockKey: key, ExpiresAt: nanos(now.Add(time.Hour))}),
		}}
	}
	clock := func() time.Time { return now }

	d := table(id)
	if waiter, err := NewLocks(d, "locks", clock).Release(t.Context(), key, id); err != nil || waiter != "r2" {
		t.Errorf("Release() whose delete landed = %q, %v; want the waiter r2, nil", waiter, err)
	}
	if len(d.items) != 0 {
		t.Errorf("after Release(): items %v left, want none", slices.Collect(maps.Keys(d.items)))
	}
	d = table(id)
	if err := NewLocks(d, "locks", clock).ForceRelease(t.Context(), key); err != nil {
		t.Errorf("ForceRelease() of a held lock whose delete landed: %v, want nil", err)
	}
	if len(d.items) != 0 {
		t.Errorf("after ForceRelease(): items %v left, want none", slices.Collect(maps.Keys(d.items)))
	}

	d = table(id)
	other := build.NewID(now.Add(time.Second))
	d.takenBy = marshal(lockItem{PK: lockPrefix + key, BuildID: string(other), ExpiresAt: nanos(now.Add(time.Hour))})
	if waiter, err := NewLocks(d, "locks", clock).Release(t.Context(), key, id); err != nil || waiter != "r2" {
		t.Errorf("Release() whose delete landed before another build took the key = %q, %v; want r2, nil", waiter, err)
	}
	if got := d.items[lockPrefix+key]; got == nil || holderOf(got) != string(other) {
		t.Errorf("after Release(): lock %v, want the other build's", got)
	}
	if got := d.items[slotPrefix+"0"]; got != nil {
		t.Errorf("after Release(): slot %v left, want it freed", got)
	}
}
