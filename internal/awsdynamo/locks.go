package awsdynamo

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/dynamodb/attributevalue"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/decap-ci/decap/internal/build"
)

// locksAPI lists the DynamoDB calls Locks makes.
type locksAPI interface {
	BatchGetItem(ctx context.Context, in *dynamodb.BatchGetItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.BatchGetItemOutput, error)
	GetItem(ctx context.Context, in *dynamodb.GetItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.GetItemOutput, error)
	PutItem(ctx context.Context, in *dynamodb.PutItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.PutItemOutput, error)
	UpdateItem(ctx context.Context, in *dynamodb.UpdateItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.UpdateItemOutput, error)
	DeleteItem(ctx context.Context, in *dynamodb.DeleteItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.DeleteItemOutput, error)
	Scan(ctx context.Context, in *dynamodb.ScanInput, opts ...func(*dynamodb.Options)) (*dynamodb.ScanOutput, error)
}

// Key prefixes of the locks table.
const (
	lockPrefix = "lock#"
	slotPrefix = "slot#"
)

// Retry bounds. Acquire retries when it loses a slot to a concurrent
// Acquire; the other calls when the lock item changed between their read
// and their conditional write.
const (
	acquireAttempts = 5
	writeAttempts   = 5
	batchGetKeys    = 100 // BatchGetItem's limit per request
)

// Conditions. A lease (lock or slot item) is free when absent, expired, or
// the caller's own and not expiring later than the write (:exp), which so
// never shortens it; it is held when it is the caller's and unexpired.
const (
	condFree      = "attribute_not_exists(#pk) OR #exp <= :now OR (#id = :id AND #exp <= :exp)"
	condHeld      = "#id = :id AND #exp > :now"
	condLonger    = condHeld + " AND #exp < :until"
	updateExpires = "SET #exp = :until, #ttl = :ttl"
)

// lockItem is a lock key's item: "lock#<key>". Slot is the index of the slot
// item the lease occupies, absent when it was taken without a cap.
type lockItem struct {
	PK         string `dynamodbav:"pk"`
	BuildID    string `dynamodbav:"buildId"`
	Owner      string `dynamodbav:"owner,omitempty"`
	AcquiredAt int64  `dynamodbav:"acquiredAt"`
	ExpiresAt  int64  `dynamodbav:"expiresAt"`
	TTL        int64  `dynamodbav:"ttl"`
	Slot       *int   `dynamodbav:"slot,omitempty"`
	// Waiter is the receipt of the request deferred behind the lease
	// (Await), handed back by Release.
	Waiter string `dynamodbav:"waiter,omitempty"`
}

// slotItem is one slot of the concurrency cap: "slot#<n>". It names the
// lease that occupies it and expires no earlier than that lease.
type slotItem struct {
	PK        string `dynamodbav:"pk"`
	BuildID   string `dynamodbav:"buildId"`
	LockKey   string `dynamodbav:"lockKey"`
	ExpiresAt int64  `dynamodbav:"expiresAt"`
	TTL       int64  `dynamodbav:"ttl"`
}

func (it lockItem) lease() build.Lease {
	return build.Lease{
		Key:        strings.TrimPrefix(it.PK, lockPrefix),
		BuildID:    build.ID(it.BuildID),
		Owner:      it.Owner,
		AcquiredAt: fromNanos(it.AcquiredAt),
		ExpiresAt:  fromNanos(it.ExpiresAt),
	}
}

// Locks holds branch locks and the slots of the cluster-wide concurrency cap
// in one table (buildtest.Locks). It is safe for concurrent use, and the
// lock and the cap hold across every dispatcher replica.
//
// Every write is a conditional write of one item, ordered so that an
// unexpired lock item with slot n always has an unexpired slot item n of
// the same build that expires no earlier: Acquire claims the slot before it
// writes the lock, Release deletes the lock before the slot, Extend
// lengthens the slot before the lock, and no write shortens a lease. So at
// most cap leases are held. A slot may be occupied without a lock for a
// moment, or, when a call fails halfway, until the build's retry reuses it, a
// later Acquire of the build finds the key held by another and frees it, a
// later Release or ForceRelease of the key finds no lock of the build and
// frees it, or its lease expires: nothing stays stuck beyond the lease.
//
// A TransactWriteItems of lock and slot would make the pair atomic, at
// twice the write cost, but moto (5.2.1, the emulator of the tests) rolls
// a cancelled transaction back by restoring a snapshot of the whole table,
// which undoes other clients' concurrent writes: a released lock came back
// and two builds held one key. Single-item conditional writes behave the
// same on moto and on DynamoDB.
//
// A lease taken with cap <= 0 occupies no slot, so it does not count
// against a later Acquire with a cap: callers use one cap throughout.
type Locks struct {
	client locksAPI
	table  string
	now    func() time.Time
}

// NewLocks returns the locks stored in table, reading time from now
// (time.Now if nil).
func NewLocks(client locksAPI, table string, now func() time.Time) *Locks {
	return &Locks{client: client, table: table, now: orNow(now)}
}

// errRace means a concurrent write changed an item between read and
// conditional write; the caller reads again.
var errRace = errors.New("lost a race")

// Acquire takes l.Key for l.BuildID until l.ExpiresAt together with one slot
// of cap (cap <= 0: no slot), or neither. It fails with build.ErrLocked when
// another build holds an unexpired lease on the key and with
// build.ErrCapReached when every slot is occupied (or when it lost the race
// for the last free slots several times). Acquiring a key that l.BuildID
// already holds succeeds, keeps its slot and keeps the later of its expiry
// and l.ExpiresAt (then it writes nothing unless the lease grows). It costs
// one consistent read of the lock and slot items (one request per 100
// slots) and two conditional writes.
func (s *Locks) Acquire(ctx context.Context, l build.Lease, cap int) error {
	if l.Key == "" || l.BuildID == "" {
		return fmt.Errorf("acquire lock %s: %w: empty key or build id", l.Key, build.ErrInvalid)
	}
	err := retryRaces(ctx, acquireAttempts, func() error { return s.tryAcquire(ctx, l, cap) })
	if errors.Is(err, errRace) {
		err = fmt.Errorf("%w (%d): %w %d times", build.ErrCapReached, cap, err, acquireAttempts)
	}
	if err != nil {
		return fmt.Errorf("acquire lock %s: %w", l.Key, err)
	}
	return nil
}

// tryAcquire reads the lock and the slots, claims a slot, then writes the
// lock; errRace when a concurrent Acquire took the slot first.
func (s *Locks) tryAcquire(ctx context.Context, l build.Lease, cap int) error {
	now := nanos(s.now())
	id := string(l.BuildID)
	held, slots, err := s.read(ctx, l.Key, cap)
	if err != nil {
		return err
	}
	if held != nil && held.BuildID != id && held.ExpiresAt > now {
		s.freeOrphans(ctx, slots, l)
		return fmt.Errorf("%w by build %s", build.ErrLocked, held.BuildID)
	}
	ours := held != nil && held.BuildID == id && held.ExpiresAt > now

	item := lockItem{
		PK:         lockPrefix + l.Key,
		BuildID:    id,
		Owner:      l.Owner,
		AcquiredAt: nanos(l.AcquiredAt),
		ExpiresAt:  nanos(l.ExpiresAt),
		TTL:        ttlSeconds(l.ExpiresAt),
	}
	if ours {
		// The lease goes on, never shorter, as in the other adapters.
		if held.ExpiresAt >= item.ExpiresAt && (held.Slot != nil || cap <= 0) {
			return nil
		}
		item.AcquiredAt, item.Owner = held.AcquiredAt, held.Owner
		item.ExpiresAt = max(item.ExpiresAt, held.ExpiresAt)
		item.TTL = ttlSeconds(fromNanos(item.ExpiresAt))
	}
	slot, slotExpires := -1, item.ExpiresAt
	switch {
	case ours && held.Slot != nil:
		slot = *held.Slot
	case cap > 0:
		if slot = pickSlot(slots, l.Key, l.BuildID, now, cap); slot < 0 {
			return fmt.Errorf("%w (%d)", build.ErrCapReached, cap)
		}
	}
	if slot >= 0 {
		if it, ok := slots[slot]; ok && it.BuildID == id {
			// Never shorten a slot before its lock.
			slotExpires = max(slotExpires, it.ExpiresAt)
		}
		if err := s.claimSlot(ctx, slot, l, slotExpires, now); err != nil {
			return err
		}
		item.Slot = &slot
	}

	av, err := attributevalue.MarshalMap(item)
	if err != nil {
		return err
	}
	_, err = s.client.PutItem(ctx, &dynamodb.PutItemInput{
		TableName:                           aws.String(s.table),
		Item:                                av,
		ConditionExpression:                 aws.String(condFree),
		ExpressionAttributeNames:            freeNames(),
		ExpressionAttributeValues:           freeValues(now, id, item.ExpiresAt),
		ReturnValuesOnConditionCheckFailure: types.ReturnValuesOnConditionCheckFailureAllOld,
	})
	if old, ok := conditionFailed(err); ok {
		holder := holderOf(old)
		if holder == "" || holder == id {
			// This build's lease grew since the read (another replica
			// re-acquired or extended it), or the emulator did not say
			// whose the lock is: read again. The slot may be the lock's.
			return errRace
		}
		// Another build took the key since the read: give the slot back.
		// Only on this definite answer; after an unclear error the lock
		// may have been written, and the slot must outlive it.
		if slot >= 0 {
			s.freeSlot(ctx, slot, l)
		}
		return lockedBy(old)
	}
	if conflicted(err) {
		return errRace
	}
	return classify(err)
}

// claimSlot writes slot item n for l, expiring at expires, if it is free or
// l.BuildID's already and expiring no later; errRace otherwise.
func (s *Locks) claimSlot(ctx context.Context, n int, l build.Lease, expires, now int64) error {
	av, err := attributevalue.MarshalMap(slotItem{
		PK:        slotPrefix + strconv.Itoa(n),
		BuildID:   string(l.BuildID),
		LockKey:   l.Key,
		ExpiresAt: expires,
		TTL:       ttlSeconds(fromNanos(expires)),
	})
	if err != nil {
		return err
	}
	_, err = s.client.PutItem(ctx, &dynamodb.PutItemInput{
		TableName:                 aws.String(s.table),
		Item:                      av,
		ConditionExpression:       aws.String(condFree),
		ExpressionAttributeNames:  freeNames(),
		ExpressionAttributeValues: freeValues(now, string(l.BuildID), expires),
	})
	if _, ok := conditionFailed(err); ok || conflicted(err) {
		return errRace
	}
	return classify(err)
}

// freeSlot deletes slot item n if l's build still occupies it for l.Key.
// It is best effort: a slot it fails to free is free again when its lease
// expires.
func (s *Locks) freeSlot(ctx context.Context, n int, l build.Lease) error {
	_, err := s.client.DeleteItem(ctx, &dynamodb.DeleteItemInput{
		TableName:                 aws.String(s.table),
		Key:                       map[string]types.AttributeValue{"pk": str(slotPrefix + strconv.Itoa(n))},
		ConditionExpression:       aws.String("#id = :id AND #key = :key"),
		ExpressionAttributeNames:  map[string]string{"#id": "buildId", "#key": "lockKey"},
		ExpressionAttributeValues: map[string]types.AttributeValue{":id": str(string(l.BuildID)), ":key": str(l.Key)},
	})
	if _, ok := conditionFailed(err); ok {
		return nil // someone else's now, or gone
	}
	return classify(err)
}

// freeOrphans frees the slots that l's build occupies for l.Key while
// another build holds the key: left by an earlier Acquire of this build
// that failed halfway. Best effort.
func (s *Locks) freeOrphans(ctx context.Context, slots map[int]slotItem, l build.Lease) {
	for n, it := range slots {
		if it.BuildID == string(l.BuildID) && it.LockKey == l.Key {
			_ = s.freeSlot(ctx, n, l)
		}
	}
}

// lockedBy is ErrLocked naming the holder, when the failed condition
// returned the old item.
func lockedBy(old map[string]types.AttributeValue) error {
	if holder := holderOf(old); holder != "" {
		return fmt.Errorf("%w by build %s", build.ErrLocked, holder)
	}
	return build.ErrLocked
}

// holderOf returns the build ID of the old item a failed condition
// returned; "" when there is none.
func holderOf(old map[string]types.AttributeValue) string {
	var it lockItem
	if old == nil || attributevalue.UnmarshalMap(old, &it) != nil {
		return ""
	}
	return it.BuildID
}

// pickSlot returns the slot that id already occupies for key, else a free
// one (absent or expired) chosen at random so that concurrent acquirers
// rarely collide, else -1. slots holds the existing slot items with index
// < cap.
func pickSlot(slots map[int]slotItem, key string, id build.ID, now int64, cap int) int {
	var free []int
	for i := range cap {
		it, ok := slots[i]
		switch {
		case ok && it.BuildID == string(id) && it.LockKey == key:
			return i
		case !ok || it.ExpiresAt <= now:
			free = append(free, i)
		}
	}
	if len(free) == 0 {
		return -1
	}
	return free[rand.IntN(len(free))]
}

// read returns the lock item of key (nil if absent) and the existing slot
// items with index < cap, read consistently.
func (s *Locks) read(ctx context.Context, key string, cap int) (*lockItem, map[int]slotItem, error) {
	keys := []map[string]types.AttributeValue{{"pk": str(lockPrefix + key)}}
	for i := range max(cap, 0) {
		keys = append(keys, map[string]types.AttributeValue{"pk": str(slotPrefix + strconv.Itoa(i))})
	}
	var held *lockItem
	slots := map[int]slotItem{}
	for len(keys) > 0 {
		n := min(len(keys), batchGetKeys)
		items, err := s.batchGet(ctx, keys[:n])
		if err != nil {
			return nil, nil, err
		}
		keys = keys[n:]
		for _, av := range items {
			pk, _ := av["pk"].(*types.AttributeValueMemberS)
			switch {
			case pk == nil:
				continue
			case strings.HasPrefix(pk.Value, lockPrefix):
				var it lockItem
				if err := attributevalue.UnmarshalMap(av, &it); err != nil {
					return nil, nil, fmt.Errorf("decode %s: %w", pk.Value, err)
				}
				held = &it
			case strings.HasPrefix(pk.Value, slotPrefix):
				var it slotItem
				if err := attributevalue.UnmarshalMap(av, &it); err != nil {
					return nil, nil, fmt.Errorf("decode %s: %w", pk.Value, err)
				}
				if i, err := strconv.Atoi(strings.TrimPrefix(pk.Value, slotPrefix)); err == nil {
					slots[i] = it
				}
			}
		}
	}
	return held, slots, nil
}

// batchGet reads up to 100 items consistently, retrying unprocessed keys.
func (s *Locks) batchGet(ctx context.Context, keys []map[string]types.AttributeValue) ([]map[string]types.AttributeValue, error) {
	var out []map[string]types.AttributeValue
	req := map[string]types.KeysAndAttributes{s.table: {Keys: keys, ConsistentRead: aws.Bool(true)}}
	for attempt := 0; len(req) > 0; attempt++ {
		if attempt > 0 {
			if attempt >= writeAttempts {
				return nil, fmt.Errorf("%w: batch read left keys unprocessed", build.ErrUnavailable)
			}
			if err := pause(ctx, attempt); err != nil {
				return nil, err
			}
		}
		res, err := s.client.BatchGetItem(ctx, &dynamodb.BatchGetItemInput{RequestItems: req})
		if err != nil {
			return nil, classify(err)
		}
		out = append(out, res.Responses[s.table]...)
		req = res.UnprocessedKeys
	}
	return out, nil
}

// get reads the lock item of key consistently; nil if absent.
func (s *Locks) get(ctx context.Context, key string) (*lockItem, error) {
	res, err := s.client.GetItem(ctx, &dynamodb.GetItemInput{
		TableName:      aws.String(s.table),
		Key:            map[string]types.AttributeValue{"pk": str(lockPrefix + key)},
		ConsistentRead: aws.Bool(true),
	})
	if err != nil {
		return nil, classify(err)
	}
	if res.Item == nil {
		return nil, nil
	}
	var it lockItem
	if err := attributevalue.UnmarshalMap(res.Item, &it); err != nil {
		return nil, fmt.Errorf("decode lock: %w", err)
	}
	return &it, nil
}

// Extend moves the expiry of key, and of its slot, to until if id holds an
// unexpired lease on it and until is later; an earlier until writes nothing
// (Extend never shortens a lease). build.ErrNotFound when id holds no
// unexpired lease on key: an expired lease never comes back to life.
func (s *Locks) Extend(ctx context.Context, key string, id build.ID, until time.Time) error {
	err := retryRaces(ctx, writeAttempts, func() error { return s.tryExtend(ctx, key, id, until) })
	if errors.Is(err, errRace) {
		err = fmt.Errorf("%w: %w %d times", build.ErrUnavailable, err, writeAttempts)
	}
	if err != nil {
		return fmt.Errorf("extend lock %s: %w", key, err)
	}
	return nil
}

func (s *Locks) tryExtend(ctx context.Context, key string, id build.ID, until time.Time) error {
	now := nanos(s.now())
	notFound := fmt.Errorf("%w for build %s", build.ErrNotFound, id)
	held, err := s.get(ctx, key)
	if err != nil {
		return err
	}
	if held == nil || held.BuildID != string(id) || held.ExpiresAt <= now {
		return notFound
	}
	if nanos(until) <= held.ExpiresAt {
		return nil // never shorter; its slot expires no earlier than the lock
	}
	values := func() map[string]types.AttributeValue {
		return map[string]types.AttributeValue{
			":now": num(now), ":id": str(string(id)), ":until": num(nanos(until)), ":ttl": num(ttlSeconds(until)),
		}
	}
	extendLock := func() error {
		names, vals := extendNames(), values()
		names["#slot"] = "slot"
		cond := condLonger + " AND attribute_not_exists(#slot)"
		if held.Slot != nil {
			cond = condLonger + " AND #slot = :slot"
			vals[":slot"] = num(int64(*held.Slot))
		}
		_, err := s.client.UpdateItem(ctx, &dynamodb.UpdateItemInput{
			TableName:                 aws.String(s.table),
			Key:                       map[string]types.AttributeValue{"pk": str(held.PK)},
			UpdateExpression:          aws.String(updateExpires),
			ConditionExpression:       aws.String(cond),
			ExpressionAttributeNames:  names,
			ExpressionAttributeValues: vals,
		})
		if _, ok := conditionFailed(err); ok || conflicted(err) {
			// Changed since the read (released, or lengthened by another
			// caller): read again.
			return errRace
		}
		return classify(err)
	}
	if held.Slot == nil {
		return extendLock()
	}
	slotKey := slotPrefix + strconv.Itoa(*held.Slot)
	// The slot first: it must never expire before its lock.
	_, err = s.client.UpdateItem(ctx, &dynamodb.UpdateItemInput{
		TableName:                 aws.String(s.table),
		Key:                       map[string]types.AttributeValue{"pk": str(slotKey)},
		UpdateExpression:          aws.String(updateExpires),
		ConditionExpression:       aws.String(condLonger),
		ExpressionAttributeNames:  extendNames(),
		ExpressionAttributeValues: values(),
	})
	if _, ok := conditionFailed(err); ok {
		// Either the slot already expires at until or later (a concurrent
		// Extend), or it is not this lease's any more: a held lock always
		// has its slot, so the lease is being released right now.
		slot, err := s.getSlot(ctx, slotKey)
		switch {
		case err != nil:
			return err
		case slot == nil || slot.BuildID != string(id) || slot.ExpiresAt <= now:
			return notFound
		case slot.ExpiresAt < nanos(until):
			return errRace
		}
	} else if conflicted(err) {
		return errRace
	} else if err != nil {
		return classify(err)
	}
	return extendLock()
}

// getSlot reads slot item pk consistently; nil if absent.
func (s *Locks) getSlot(ctx context.Context, pk string) (*slotItem, error) {
	res, err := s.client.GetItem(ctx, &dynamodb.GetItemInput{
		TableName:      aws.String(s.table),
		Key:            map[string]types.AttributeValue{"pk": str(pk)},
		ConsistentRead: aws.Bool(true),
	})
	if err != nil {
		return nil, classify(err)
	}
	if res.Item == nil {
		return nil, nil
	}
	var it slotItem
	if err := attributevalue.UnmarshalMap(res.Item, &it); err != nil {
		return nil, fmt.Errorf("decode %s: %w", pk, err)
	}
	return &it, nil
}

// Release drops key, and then its slot, if id holds it. A key that nobody
// holds, or whose lease expired, is not an error; a key another build holds
// gives build.ErrConflict and stays held. If the lock is dropped but its
// slot cannot be, Release returns the error; a retry finds no lock of id on
// key and frees the slot that id still occupies for key (so does one that
// finds the key held by another build), else the slot is free again when
// its lease expires. A Release that finds no lock of id costs a consistent
// scan of the (small) table.
func (s *Locks) Release(ctx context.Context, key string, id build.ID) (string, error) {
	var waiter string
	err := retryRaces(ctx, writeAttempts, func() (err error) {
		waiter, err = s.tryRelease(ctx, key, id)
		return err
	})
	if errors.Is(err, errRace) {
		err = fmt.Errorf("%w: %w %d times", build.ErrUnavailable, err, writeAttempts)
	}
	if err != nil {
		return "", fmt.Errorf("release lock %s: %w", key, err)
	}
	return waiter, nil
}

func (s *Locks) tryRelease(ctx context.Context, key string, id build.ID) (string, error) {
	held, err := s.get(ctx, key)
	switch {
	case err != nil:
		return "", err
	case held != nil && held.BuildID == string(id):
		return s.drop(ctx, held)
	}
	// No lock of id: a release that failed between its two writes may have
	// left id's slot behind.
	if err := s.freeStrays(ctx, key, id); err != nil {
		return "", err
	}
	if held != nil && held.ExpiresAt > nanos(s.now()) {
		return "", fmt.Errorf("%w: held by build %s", build.ErrConflict, held.BuildID)
	}
	return "", nil // nobody's, or another build's expired lease: TTL removes it
}

// Await records waiter on key's unexpired lease, replacing an earlier one;
// build.ErrNotFound when nobody holds an unexpired lease on key.
func (s *Locks) Await(ctx context.Context, key, waiter string) error {
	_, err := s.client.UpdateItem(ctx, &dynamodb.UpdateItemInput{
		TableName:                 aws.String(s.table),
		Key:                       map[string]types.AttributeValue{"pk": str(lockPrefix + key)},
		UpdateExpression:          aws.String("SET #waiter = :waiter"),
		ConditionExpression:       aws.String("attribute_exists(#pk) AND #exp > :now"),
		ExpressionAttributeNames:  map[string]string{"#waiter": "waiter", "#pk": "pk", "#exp": "expiresAt"},
		ExpressionAttributeValues: map[string]types.AttributeValue{":waiter": str(waiter), ":now": num(nanos(s.now()))},
	})
	if _, ok := conditionFailed(err); ok {
		return fmt.Errorf("await lock %s: %w", key, build.ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("await lock %s: %w", key, classify(err))
	}
	return nil
}

// ForceRelease drops key, and then its slot, whoever holds it;
// build.ErrNotFound if nobody holds an unexpired lease on it (an expired
// lease is dropped too). When it finds no lock item, it frees the slots
// still occupied for key, left by a release that failed halfway; that costs
// a consistent scan of the (small) table.
func (s *Locks) ForceRelease(ctx context.Context, key string) error {
	err := retryRaces(ctx, writeAttempts, func() error { return s.tryForceRelease(ctx, key) })
	if errors.Is(err, errRace) {
		err = fmt.Errorf("%w: %w %d times", build.ErrUnavailable, err, writeAttempts)
	}
	if err != nil {
		return fmt.Errorf("force-release lock %s: %w", key, err)
	}
	return nil
}

func (s *Locks) tryForceRelease(ctx context.Context, key string) error {
	now := nanos(s.now())
	held, err := s.get(ctx, key)
	if err != nil {
		return err
	}
	if held == nil {
		if err := s.freeStrays(ctx, key, ""); err != nil {
			return err
		}
		return build.ErrNotFound
	}
	if _, err := s.drop(ctx, held); err != nil {
		return err
	}
	if held.ExpiresAt <= now {
		return build.ErrNotFound
	}
	return nil
}

// drop deletes the lock item held if it is still that lease (the same
// build and acquisition time), then its slot item if that still belongs to
// the same lease (after the lease expired, another build may have taken the
// slot).
//
// A failed condition means the lease as read is gone, so it counts as
// released: this delete landed on an earlier try whose answer was lost (the
// SDK sends it again, and meanwhile another build may have acquired the
// key, or this build again), another release or a force-release took it,
// or it expired and another build took the key over. None of them leaves
// the lease held; the lock item then present, if any, is another lease's
// and stays. drop goes on to the slot and returns the waiter as held was
// read (the deleted item's, which may be newer, went with the lost answer;
// a waiter missed comes back after its backoff).
func (s *Locks) drop(ctx context.Context, held *lockItem) (string, error) {
	out, err := s.client.DeleteItem(ctx, &dynamodb.DeleteItemInput{
		TableName:                 aws.String(s.table),
		Key:                       map[string]types.AttributeValue{"pk": str(held.PK)},
		ConditionExpression:       aws.String("#id = :id AND #acq = :acq"),
		ExpressionAttributeNames:  map[string]string{"#id": "buildId", "#acq": "acquiredAt"},
		ExpressionAttributeValues: map[string]types.AttributeValue{":id": str(held.BuildID), ":acq": num(held.AcquiredAt)},
		// The waiter as it was when the item went, not as it was read.
		ReturnValues: types.ReturnValueAllOld,
	})
	var waiter string
	if _, ok := conditionFailed(err); ok {
		waiter = held.Waiter
	} else if conflicted(err) {
		return "", errRace
	} else if err != nil {
		return "", classify(err)
	} else if w, ok := out.Attributes["waiter"].(*types.AttributeValueMemberS); ok {
		waiter = w.Value
	}
	if held.Slot == nil {
		return waiter, nil
	}
	l := held.lease()
	if err := s.freeSlot(ctx, *held.Slot, l); err != nil {
		return "", fmt.Errorf("free slot %d: %w", *held.Slot, err)
	}
	return waiter, nil
}

// freeStrays frees the slot items occupied for key (by build id; by any
// build if id is "") while no lock of that build exists: left by a release
// whose slot write failed after its lock delete. It reads them with a
// consistent scan and deletes each on the condition that it is still the
// same lease's.
//
// An Acquire of the same lease may be in flight: it claimed the slot and
// writes its lock after the scan. So freeStrays reads the lock again
// afterwards and gives the slot back to a lock that names it; errRace if
// another lease took it meanwhile (the retry then drops that lock, or
// returns, and the lease's next Extend reports it lost).
func (s *Locks) freeStrays(ctx context.Context, key string, id build.ID) error {
	filter := "begins_with(#pk, :prefix) AND #key = :key"
	names := map[string]string{"#pk": "pk", "#key": "lockKey"}
	values := map[string]types.AttributeValue{":prefix": str(slotPrefix), ":key": str(key)}
	if id != "" {
		filter += " AND #id = :id"
		names["#id"] = "buildId"
		values[":id"] = str(string(id))
	}
	in := &dynamodb.ScanInput{
		TableName:                 aws.String(s.table),
		ConsistentRead:            aws.Bool(true),
		FilterExpression:          aws.String(filter),
		ExpressionAttributeNames:  names,
		ExpressionAttributeValues: values,
	}
	strays := map[int]slotItem{}
	for pages := dynamodb.NewScanPaginator(s.client, in); pages.HasMorePages(); {
		page, err := pages.NextPage(ctx)
		if err != nil {
			return classify(err)
		}
		for _, av := range page.Items {
			var it slotItem
			if err := attributevalue.UnmarshalMap(av, &it); err != nil {
				return fmt.Errorf("decode slot: %w", err)
			}
			if n, err := strconv.Atoi(strings.TrimPrefix(it.PK, slotPrefix)); err == nil {
				strays[n] = it
			}
		}
	}
	if len(strays) == 0 {
		return nil
	}
	for n, it := range strays {
		if err := s.freeSlot(ctx, n, build.Lease{Key: it.LockKey, BuildID: build.ID(it.BuildID)}); err != nil {
			return fmt.Errorf("free slot %d: %w", n, err)
		}
	}
	held, err := s.get(ctx, key)
	if err != nil || held == nil || held.Slot == nil {
		return err
	}
	now := nanos(s.now())
	if it, ok := strays[*held.Slot]; ok && it.BuildID == held.BuildID && held.ExpiresAt > now {
		return s.claimSlot(ctx, *held.Slot, held.lease(), held.ExpiresAt, now)
	}
	return nil
}

// List returns unexpired leases ordered by key. It scans the locks table
// with strongly consistent reads; the table holds one item per held lock and
// per slot, so it stays small.
func (s *Locks) List(ctx context.Context) ([]build.Lease, error) {
	in := &dynamodb.ScanInput{
		TableName:                 aws.String(s.table),
		ConsistentRead:            aws.Bool(true),
		FilterExpression:          aws.String("begins_with(#pk, :prefix) AND #exp > :now"),
		ExpressionAttributeNames:  map[string]string{"#pk": "pk", "#exp": "expiresAt"},
		ExpressionAttributeValues: map[string]types.AttributeValue{":prefix": str(lockPrefix), ":now": num(nanos(s.now()))},
	}
	out := []build.Lease{}
	for pages := dynamodb.NewScanPaginator(s.client, in); pages.HasMorePages(); {
		page, err := pages.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("list locks: %w", classify(err))
		}
		for _, av := range page.Items {
			var it lockItem
			if err := attributevalue.UnmarshalMap(av, &it); err != nil {
				return nil, fmt.Errorf("list locks: decode: %w", err)
			}
			out = append(out, it.lease())
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out, nil
}

// retryRaces calls try until it returns anything but errRace, at most n
// times, pausing between calls; it returns try's last error.
func retryRaces(ctx context.Context, n int, try func() error) error {
	var err error
	for attempt := range n {
		if attempt > 0 {
			if err := pause(ctx, attempt); err != nil {
				return err
			}
		}
		if err = try(); !errors.Is(err, errRace) {
			return err
		}
	}
	return err
}

// freeNames returns the attribute names condFree uses. DynamoDB rejects
// names and values that an expression does not use.
func freeNames() map[string]string {
	return map[string]string{"#pk": "pk", "#id": "buildId", "#exp": "expiresAt"}
}

// freeValues returns the values condFree uses: the time, the writer's build
// ID and the expiry it writes.
func freeValues(now int64, id string, expires int64) map[string]types.AttributeValue {
	return map[string]types.AttributeValue{":now": num(now), ":id": str(id), ":exp": num(expires)}
}

// extendNames returns the attribute names condLonger and updateExpires use.
func extendNames() map[string]string {
	return map[string]string{"#id": "buildId", "#exp": "expiresAt", "#ttl": "ttl"}
}
