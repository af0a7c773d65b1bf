package awsdynamo_test

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/decap-ci/decap/internal/awsdynamo"
	"github.com/decap-ci/decap/internal/build"
	"github.com/decap-ci/decap/internal/buildtest"
)

// The outbox's contract suite on moto, the calls of one test taking turns
// (see serialized: moto checks a condition and then writes, so racing
// conditional writes there can both pass; DynamoDB makes each atomic).

func TestEventOutbox(t *testing.T) {
	t.Parallel()
	client := newClient(t)
	buildtest.TestEventOutbox(t, func(t *testing.T) (buildtest.Records, build.EventOutbox) {
		s := awsdynamo.NewRecords(serialized{&sync.Mutex{}, client}, newTables(t, client, buildsOnly).Builds).WithEvents()
		return s, s.Outbox()
	})
}

// TestEventOutboxWithRetriedWrites runs the suite with every write sent
// twice: each retried put must still be one change, one event, and each
// retried removal a removal.
func TestEventOutboxWithRetriedWrites(t *testing.T) {
	t.Parallel()
	client := newClient(t)
	buildtest.TestEventOutbox(t, func(t *testing.T) (buildtest.Records, build.EventOutbox) {
		s := awsdynamo.NewRecords(serialized{&sync.Mutex{}, retriedWrites{client}}, newTables(t, client, buildsOnly).Builds).WithEvents()
		return s, s.Outbox()
	})
}

// TestRecordsWithEvents: the records' contract holds with events on. Its
// calls take turns (serialized): "numbers concurrent" once failed here
// under load with two builds numbered 1, moto having created one
// project's marker twice from two racing counts (moto has no lock around
// an UpdateItem; TestRecords runs the same counts and is as exposed).
func TestRecordsWithEvents(t *testing.T) {
	t.Parallel()
	client := newClient(t)
	buildtest.TestRecords(t, func(t *testing.T) buildtest.Records {
		return awsdynamo.NewRecords(serialized{&sync.Mutex{}, client}, newTables(t, client, buildsOnly).Builds).WithEvents()
	})
}

func TestRecordsWithEventsAndRetriedWrites(t *testing.T) {
	t.Parallel()
	client := newClient(t)
	buildtest.TestRecords(t, func(t *testing.T) buildtest.Records {
		return awsdynamo.NewRecords(serialized{&sync.Mutex{}, retriedWrites{client}}, newTables(t, client, buildsOnly).Builds).WithEvents()
	})
}

// beforeWrite is a client that calls hook (once, if set) before passing
// on the next PutItem or UpdateItem: another writer's change between a
// read and its write.
type beforeWrite struct {
	recordsClient
	mu   sync.Mutex
	hook func()
}

func (c *beforeWrite) fire() {
	c.mu.Lock()
	h := c.hook
	c.hook = nil
	c.mu.Unlock()
	if h != nil {
		h()
	}
}

func (c *beforeWrite) PutItem(ctx context.Context, in *dynamodb.PutItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.PutItemOutput, error) {
	c.fire()
	return c.recordsClient.PutItem(ctx, in, opts...)
}

func (c *beforeWrite) UpdateItem(ctx context.Context, in *dynamodb.UpdateItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.UpdateItemOutput, error) {
	c.fire()
	return c.recordsClient.UpdateItem(ctx, in, opts...)
}

// eventIDs returns the pending events' IDs of build id, in the order
// Pending gives them.
func pendingIDs(t *testing.T, o build.EventOutbox, id build.ID) []string {
	t.Helper()
	evs, err := o.Pending(t.Context(), 100, 0)
	if err != nil {
		t.Fatalf("Pending() error = %v", err)
	}
	var out []string
	for _, e := range evs {
		if e.Subject == id {
			out = append(out, e.ID)
		}
	}
	return out
}

func ids(id build.ID, versions ...int) []string {
	var out []string
	for _, v := range versions {
		out = append(out, build.EventID(id, v))
	}
	return out
}

// TestEventOutboxWriteRaces: a change that another writer's change beats
// between its read and its put reads again and is the next version (no
// event lost, none twice); a Forwarded that a Save beats keeps the Save's
// event; a Save that read the item before a Forwarded puts the forwarded
// events back (published again, dropped by ID: at least once), never
// loses one.
func TestEventOutboxWriteRaces(t *testing.T) {
	t.Parallel()
	client := newClient(t)
	table := newTables(t, client, buildsOnly).Builds
	hooked := &beforeWrite{recordsClient: client}
	s := awsdynamo.NewRecords(hooked, table).WithEvents()
	other := awsdynamo.NewRecords(client, table).WithEvents()
	o := s.Outbox()
	base := time.Now().UTC().Truncate(time.Millisecond)
	r := build.Record{BuildID: build.NewID(base), Team: "t", Project: "races", Ref: "main", Status: build.StatusQueued, QueuedAt: base}
	if err := s.Save(t.Context(), r); err != nil {
		t.Fatal(err)
	}
	stored, err := s.Get(t.Context(), r.BuildID)
	if err != nil {
		t.Fatal(err)
	}

	// A Save beaten by another writer's change: v2 the other's, v3 ours.
	deferred := stored
	if err := deferred.Defer(base, base.Add(time.Minute), "busy"); err != nil {
		t.Fatal(err)
	}
	claimed := stored
	if err := claimed.Launching(base.Add(time.Second), 0, true); err != nil {
		t.Fatal(err)
	}
	hooked.hook = func() {
		if err := other.Save(t.Context(), claimed); err != nil {
			t.Errorf("the other writer's Save error = %v", err)
		}
	}
	if err := s.Save(t.Context(), deferred); err != nil {
		t.Fatalf("Save() beaten by another change error = %v", err)
	}
	evs, err := o.Pending(t.Context(), 100, 0)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := pendingIDs(t, o, r.BuildID), ids(r.BuildID, 1, 2, 3); !slices.Equal(got, want) {
		t.Fatalf("events after a beaten Save = %v, want %v", got, want)
	}
	if last := evs[len(evs)-1]; last.Record.Status != build.StatusDeferred || last.Record.LaunchingAt.IsZero() {
		t.Errorf("event 3 is %s launching %v, want the deferral over the other's claim", last.Record.Status, last.Record.LaunchingAt)
	}

	// A Forwarded beaten by a Save: the Save's event v4 stays.
	running := deferred
	running.KeepClaim(claimed)
	if err := running.Start(base.Add(2*time.Second), "pod", "c0ffee"); err != nil {
		t.Fatal(err)
	}
	hooked.hook = func() {
		if err := other.Save(t.Context(), running); err != nil {
			t.Errorf("the Save racing Forwarded error = %v", err)
		}
	}
	if err := o.Forwarded(t.Context(), evs[:3]...); err != nil {
		t.Fatalf("Forwarded() beaten by a Save error = %v", err)
	}
	if got, want := pendingIDs(t, o, r.BuildID), ids(r.BuildID, 4); !slices.Equal(got, want) {
		t.Fatalf("events after a Forwarded beaten by a Save = %v, want %v", got, want)
	}

	// A Save that read before a Forwarded and writes after it: v4 comes
	// back with v5, nothing is lost.
	ended := running
	if err := ended.End(build.Outcome{BuildID: r.BuildID, Status: build.StatusSucceeded}, base.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	four := build.Event{ID: build.EventID(r.BuildID, 4), Subject: r.BuildID}
	hooked.hook = func() {
		if err := other.Outbox().Forwarded(t.Context(), four); err != nil {
			t.Errorf("Forwarded() racing a Save error = %v", err)
		}
	}
	if err := s.Save(t.Context(), ended); err != nil {
		t.Fatal(err)
	}
	if got, want := pendingIDs(t, o, r.BuildID), ids(r.BuildID, 4, 5); !slices.Equal(got, want) {
		t.Fatalf("events after a Save racing Forwarded = %v, want %v (4 again: a duplicate publish, dropped by ID)", got, want)
	}
	if err := o.Forwarded(t.Context(), four, build.Event{ID: build.EventID(r.BuildID, 5), Subject: r.BuildID}); err != nil {
		t.Fatal(err)
	}
	if got := pendingIDs(t, o, r.BuildID); len(got) != 0 {
		t.Errorf("events after forwarding all = %v, want none", got)
	}
	checkOutOfIndex(t, client, table, r.BuildID)
}

// checkOutOfIndex checks that the item of build id, with no pending
// events, has left the outbox index.
func checkOutOfIndex(t *testing.T, client *dynamodb.Client, table string, id build.ID) {
	t.Helper()
	out, err := client.GetItem(t.Context(), &dynamodb.GetItemInput{
		TableName: aws.String(table), Key: map[string]types.AttributeValue{"buildId": &types.AttributeValueMemberS{Value: string(id)}},
		ConsistentRead: aws.Bool(true),
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range []string{"pending", "outboxShard", "outboxSort"} {
		if _, ok := out.Item[a]; ok {
			t.Errorf("item of %s still has %s after its last event was forwarded", id, a)
		}
	}
}

// TestEventOutboxRetriedWrites: a put and a removal each sent twice, the
// second meeting the first's write, are one event and one removal.
func TestEventOutboxRetriedWrites(t *testing.T) {
	t.Parallel()
	client := newClient(t)
	table := newTables(t, client, buildsOnly).Builds
	s := awsdynamo.NewRecords(retriedWrites{client}, table).WithEvents()
	o := s.Outbox()
	base := time.Now().UTC().Truncate(time.Millisecond)
	r := build.Record{BuildID: build.NewID(base), Team: "t", Project: "retried", Ref: "main", Status: build.StatusQueued, QueuedAt: base}
	if err := s.Save(t.Context(), r); err != nil {
		t.Fatal(err)
	}
	r, _ = s.Get(t.Context(), r.BuildID)
	if err := r.Drop(build.StatusExpired, "waited too long", base.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if err := s.EndWaiting(t.Context(), r); err != nil {
		t.Fatalf("EndWaiting() sent twice error = %v", err)
	}
	if got, want := pendingIDs(t, o, r.BuildID), ids(r.BuildID, 1, 2); !slices.Equal(got, want) {
		t.Fatalf("events of a create and an end each sent twice = %v, want %v", got, want)
	}
	if err := o.Forwarded(t.Context(), build.Event{ID: build.EventID(r.BuildID, 1), Subject: r.BuildID}); err != nil {
		t.Fatalf("Forwarded() sent twice error = %v", err)
	}
	if got, want := pendingIDs(t, o, r.BuildID), ids(r.BuildID, 2); !slices.Equal(got, want) {
		t.Fatalf("events after a removal sent twice = %v, want %v", got, want)
	}
}

// TestEventOutboxConflictWritesNone: a refused write leaves neither a
// change nor an event, and a store without WithEvents has no outbox.
func TestEventOutboxConflictWritesNone(t *testing.T) {
	t.Parallel()
	client := newClient(t)
	table := newTables(t, client, buildsOnly).Builds
	s := awsdynamo.NewRecords(client, table).WithEvents()
	base := time.Now().UTC().Truncate(time.Millisecond)
	r := build.Record{BuildID: build.NewID(base), Team: "t", Project: "conflict", Ref: "main", Status: build.StatusRunning, QueuedAt: base,
		StartedAt: base}
	if err := s.Save(t.Context(), r); err != nil {
		t.Fatal(err)
	}
	waiting := r
	waiting.Status, waiting.StartedAt = build.StatusQueued, time.Time{}
	if err := s.Save(t.Context(), waiting); !errors.Is(err, build.ErrConflict) {
		t.Fatalf("Save() of a queued record over a running one error = %v, want ErrConflict", err)
	}
	waiting.Status = build.StatusExpired
	if err := s.EndWaiting(t.Context(), waiting); !errors.Is(err, build.ErrConflict) {
		t.Fatalf("EndWaiting() of a running record error = %v, want ErrConflict", err)
	}
	if got, want := pendingIDs(t, s.Outbox(), r.BuildID), ids(r.BuildID, 1); !slices.Equal(got, want) {
		t.Errorf("events after refused writes = %v, want %v", got, want)
	}
	if _, err := awsdynamo.NewRecords(client, table).Outbox().Pending(t.Context(), 1, 0); err == nil {
		t.Error("Pending() of a store without WithEvents succeeded")
	}
}
