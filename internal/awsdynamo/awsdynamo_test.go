package awsdynamo_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/decap-ci/decap/internal/awsdynamo"
	"github.com/decap-ci/decap/internal/build"
	"github.com/decap-ci/decap/internal/buildtest"
)

// newClient returns a client of the DynamoDB at AWS_ENDPOINT_URL (moto in
// tests), or skips the test when that is unset.
func newClient(t testing.TB) *dynamodb.Client {
	t.Helper()
	endpoint := os.Getenv("AWS_ENDPOINT_URL")
	if endpoint == "" {
		t.Skip("AWS_ENDPOINT_URL not set: start moto (make test does) to run the DynamoDB adapter tests")
	}
	cfg, err := config.LoadDefaultConfig(t.Context(),
		config.WithRegion("us-east-1"),
		config.WithCredentialsProvider(credentials.NewStaticCredentialsProvider("test", "test", "")),
	)
	if err != nil {
		t.Fatalf("LoadDefaultConfig() error = %v", err)
	}
	return dynamodb.NewFromConfig(cfg, func(o *dynamodb.Options) {
		o.BaseEndpoint = aws.String(endpoint)
	})
}

// newTables creates the tables that want names (non-empty fields) under a
// prefix unique to this call, and deletes them when the test ends.
func newTables(t testing.TB, client *dynamodb.Client, want awsdynamo.Tables) awsdynamo.Tables {
	t.Helper()
	var b [6]byte
	_, _ = rand.Read(b[:])
	all := awsdynamo.TableNames("decaptest-" + hex.EncodeToString(b[:]))
	var tables awsdynamo.Tables
	if want.Locks != "" {
		tables.Locks = all.Locks
	}
	if want.Idempotency != "" {
		tables.Idempotency = all.Idempotency
	}
	if want.Builds != "" {
		tables.Builds = all.Builds
	}
	if want.Sessions != "" {
		tables.Sessions = all.Sessions
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		for _, name := range []string{tables.Locks, tables.Idempotency, tables.Builds, tables.Sessions} {
			if name == "" {
				continue
			}
			_, err := client.DeleteTable(ctx, &dynamodb.DeleteTableInput{TableName: aws.String(name)})
			var gone *types.ResourceNotFoundException
			if err != nil && !errors.As(err, &gone) {
				t.Errorf("DeleteTable(%s) error = %v", name, err)
			}
		}
	})
	if err := awsdynamo.CreateTables(t.Context(), client, tables); err != nil {
		t.Fatalf("CreateTables() error = %v", err)
	}
	return tables
}

var (
	locksOnly       = awsdynamo.Tables{Locks: "x"}
	idempotencyOnly = awsdynamo.Tables{Idempotency: "x"}
	buildsOnly      = awsdynamo.Tables{Builds: "x"}
	sessionsOnly    = awsdynamo.Tables{Sessions: "x"}
)

func TestLocks(t *testing.T) {
	t.Parallel()
	client := newClient(t)
	buildtest.TestLocks(t, func(t *testing.T, clock *buildtest.Clock) buildtest.Locks {
		return awsdynamo.NewLocks(client, newTables(t, client, locksOnly).Locks, clock.Now)
	})
}

// TestConcurrentLocksAcrossStores stands for several dispatcher replicas:
// each Locks has its own client (and connections) over one table.
func TestConcurrentLocksAcrossStores(t *testing.T) {
	t.Parallel()
	client := newClient(t)
	table := newTables(t, client, locksOnly).Locks
	clock := buildtest.NewClock(time.Time{})
	var stores []buildtest.Locks
	for range 3 {
		stores = append(stores, awsdynamo.NewLocks(newClient(t), table, clock.Now))
	}
	buildtest.CheckConcurrentLocks(t, stores, clock)
}

func TestIdempotency(t *testing.T) {
	t.Parallel()
	client := newClient(t)
	buildtest.TestIdempotency(t, func(t *testing.T, clock *buildtest.Clock) buildtest.Idempotency {
		return awsdynamo.NewIdempotency(client, newTables(t, client, idempotencyOnly).Idempotency, clock.Now)
	})
}

func TestRecords(t *testing.T) {
	t.Parallel()
	client := newClient(t)
	// The suite's concurrent cases (numbering, supersede against launch)
	// race conditional writes: serialized gives them DynamoDB's atomic
	// conditional writes, which moto lacks (two builds got number 1).
	buildtest.TestRecords(t, func(t *testing.T) buildtest.Records {
		return awsdynamo.NewRecords(serialized{&sync.Mutex{}, client}, newTables(t, client, buildsOnly).Builds)
	})
}

// TestStepIntake runs the Intake contract for build.StepIntake over the
// DynamoDB claims and records (the aws backend's intake; its queue, SQS,
// is a separate call whatever the store, so the fake stands in for it).
func TestStepIntake(t *testing.T) {
	t.Parallel()
	client := newClient(t)
	buildtest.TestIntake(t, func(t *testing.T, clock *buildtest.Clock) buildtest.IntakeStores {
		tables := newTables(t, client, awsdynamo.Tables{Idempotency: "x", Builds: "x"})
		claims := awsdynamo.NewIdempotency(client, tables.Idempotency, clock.Now)
		recs := awsdynamo.NewRecords(client, tables.Builds)
		q := buildtest.NewQueue(clock.Now, buildtest.QueueOptions{})
		return buildtest.IntakeStores{Intake: build.StepIntake{Idempotency: claims, Records: recs, Queue: q}, Idempotency: claims, Records: recs, Queue: q}
	})
}

// TestRecordsNumbersAcrossClients numbers builds saved at once through
// Records of their own clients over one table, as ingest and dispatcher
// replicas do; see serialized for why the calls take turns.
func TestRecordsNumbersAcrossClients(t *testing.T) {
	t.Parallel()
	client := newClient(t)
	table := newTables(t, client, buildsOnly).Builds
	var mu sync.Mutex
	buildtest.CheckConcurrentNumbers(t, []buildtest.Records{
		awsdynamo.NewRecords(serialized{&mu, client}, table),
		awsdynamo.NewRecords(serialized{&mu, newClient(t)}, table),
		awsdynamo.NewRecords(serialized{&mu, newClient(t)}, table),
	})
}

func TestSessions(t *testing.T) {
	t.Parallel()
	client := newClient(t)
	buildtest.TestSessions(t, func(t *testing.T, clock *buildtest.Clock) buildtest.Sessions {
		return awsdynamo.NewSessions(client, newTables(t, client, sessionsOnly).Sessions, clock.Now)
	})
}

func TestGate(t *testing.T) {
	t.Parallel()
	client := newClient(t)
	buildtest.TestGate(t, func(t *testing.T) buildtest.Gate {
		return awsdynamo.NewGate(client, newTables(t, client, locksOnly).Locks)
	})
}

// TestGateBesideLocks checks that the gate's item in the locks table is
// seen by every replica's Gate and is neither listed as a lock nor counted
// against the cap.
func TestGateBesideLocks(t *testing.T) {
	t.Parallel()
	client := newClient(t)
	ctx := t.Context()
	table := newTables(t, client, locksOnly).Locks
	paused := build.GateState{Paused: true, Reason: "maintenance", By: "ops", Since: time.Date(2025, time.March, 1, 12, 0, 0, 1, time.UTC)}
	if err := awsdynamo.NewGate(client, table).Set(ctx, paused); err != nil {
		t.Fatalf("Set() error = %v", err)
	}
	got, err := awsdynamo.NewGate(newClient(t), table).Get(ctx)
	if err != nil || !got.Paused || got.Reason != paused.Reason || got.By != paused.By || !got.Since.Equal(paused.Since) {
		t.Errorf("Get() from another replica = %+v, %v; want %+v", got, err, paused)
	}
	clock := buildtest.NewClock(time.Time{})
	locks := awsdynamo.NewLocks(client, table, clock.Now)
	now := clock.Now()
	l := build.Lease{Key: "t/p/main", BuildID: build.NewID(now), AcquiredAt: now, ExpiresAt: now.Add(time.Hour)}
	if err := locks.Acquire(ctx, l, 1); err != nil {
		t.Fatalf("Acquire() beside the gate error = %v", err)
	}
	leases, err := locks.List(ctx)
	if err != nil || len(leases) != 1 || leases[0].Key != l.Key {
		t.Errorf("List() = %v, %v; want only %s", leases, err, l.Key)
	}
}

func TestCreateTables(t *testing.T) {
	t.Parallel()
	client := newClient(t)
	ctx := t.Context()
	tables := newTables(t, client, awsdynamo.Tables{Locks: "x", Idempotency: "x", Builds: "x", Sessions: "x"})
	if err := awsdynamo.CreateTables(ctx, client, tables); err != nil {
		t.Fatalf("CreateTables() of existing tables error = %v, want nil", err)
	}

	out, err := client.DescribeTable(ctx, &dynamodb.DescribeTableInput{TableName: aws.String(tables.Builds)})
	if err != nil {
		t.Fatalf("DescribeTable() error = %v", err)
	}
	var indexes []string
	for _, ix := range out.Table.GlobalSecondaryIndexes {
		indexes = append(indexes, aws.ToString(ix.IndexName)+" "+string(ix.Projection.ProjectionType))
	}
	slices.Sort(indexes)
	if want := []string{"by-project ALL", "outbox KEYS_ONLY", "projects ALL", "running ALL", "unfinished ALL"}; !slices.Equal(indexes, want) {
		t.Errorf("builds table indexes = %v, want %v", indexes, want)
	}
	for _, name := range []string{tables.Locks, tables.Idempotency, tables.Sessions} {
		ttl, err := client.DescribeTimeToLive(ctx, &dynamodb.DescribeTimeToLiveInput{TableName: aws.String(name)})
		if err != nil {
			t.Fatalf("DescribeTimeToLive(%s) error = %v", name, err)
		}
		if d := ttl.TimeToLiveDescription; d == nil || d.TimeToLiveStatus != types.TimeToLiveStatusEnabled || aws.ToString(d.AttributeName) != "ttl" {
			t.Errorf("TTL of %s = %+v, want enabled on ttl", name, d)
		}
	}

	// A table of the same name with another schema is an error.
	wrong := awsdynamo.Tables{Builds: tables.Locks}
	if err := awsdynamo.CreateTables(ctx, client, wrong); err == nil {
		t.Errorf("CreateTables() over a table with another schema error = nil, want one")
	}
}

func TestRecordsHideProjectMarkers(t *testing.T) {
	t.Parallel()
	client := newClient(t)
	s := awsdynamo.NewRecords(client, newTables(t, client, buildsOnly).Builds)
	ctx := t.Context()
	r := build.Record{
		BuildID:  build.NewID(time.Now()),
		Team:     "ae6rt",
		Project:  "p",
		Ref:      "main",
		Status:   build.StatusRunning,
		QueuedAt: time.Now(),
	}
	if err := s.Save(ctx, r); err != nil {
		t.Fatalf("Save() error = %v", err)
	}
	if _, err := s.Get(ctx, "project#ae6rt/p"); !errors.Is(err, build.ErrNotFound) {
		t.Errorf("Get() of a marker error = %v, want ErrNotFound", err)
	}
	running, err := s.Running(ctx)
	if err != nil || len(running) != 1 || running[0].BuildID != r.BuildID {
		t.Errorf("Running() = %v, %v; want only %s", running, err, r.BuildID)
	}
	recs, _, err := s.ListProject(ctx, "ae6rt", "p", 10, "")
	if err != nil || len(recs) != 1 || recs[0].BuildID != r.BuildID {
		t.Errorf("ListProject() = %v, %v; want only %s", recs, err, r.BuildID)
	}
	if _, _, err := s.ListProject(ctx, "ae6rt", "p", 10, "not a cursor"); !errors.Is(err, build.ErrInvalid) {
		t.Errorf("ListProject() with a bad cursor error = %v, want ErrInvalid", err)
	}
	bad := r
	bad.BuildID = "project#ae6rt/p"
	if err := s.Save(ctx, bad); !errors.Is(err, build.ErrInvalid) {
		t.Errorf("Save() with a marker's ID error = %v, want ErrInvalid", err)
	}
}

// raceClient runs race once, just before the first PutItem whose key
// starts with prefix: a concurrent writer that wins the race between
// Acquire's read and its writes.
type raceClient struct {
	*dynamodb.Client
	prefix string
	race   func(in *dynamodb.PutItemInput)
	once   sync.Once
}

func (c *raceClient) PutItem(ctx context.Context, in *dynamodb.PutItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.PutItemOutput, error) {
	if pk, ok := in.Item["pk"].(*types.AttributeValueMemberS); ok && strings.HasPrefix(pk.Value, c.prefix) {
		c.once.Do(func() { c.race(in) })
	}
	return c.Client.PutItem(ctx, in, opts...)
}

func TestAcquireLosesRaces(t *testing.T) {
	t.Parallel()
	client := newClient(t)
	clock := buildtest.NewClock(time.Time{})
	now := clock.Now()
	lease := func(key string) build.Lease {
		return build.Lease{Key: key, BuildID: build.NewID(now), AcquiredAt: now, ExpiresAt: now.Add(time.Hour)}
	}
	const key = "t/p/main"
	rival := lease("t/p/other")
	cases := []struct {
		name string
		cap  int
		// before is the prefix of the item whose write race precedes.
		before string
		race   func(t *testing.T, s *awsdynamo.Locks, table string, in *dynamodb.PutItemInput)
		// wantErr is Acquire's error; then wantFree slots must be free.
		wantErr  error
		wantFree int
	}{
		{
			name:   "lock taken before the slot write",
			cap:    2,
			before: "slot#",
			race: func(t *testing.T, s *awsdynamo.Locks, _ string, _ *dynamodb.PutItemInput) {
				l := rival
				l.Key = key
				if err := s.Acquire(t.Context(), l, 2); err != nil {
					t.Errorf("rival Acquire() error = %v", err)
				}
			},
			wantErr:  build.ErrLocked,
			wantFree: 1,
		},
		{
			name:   "lock taken between the slot and the lock write",
			cap:    1,
			before: "lock#",
			race: func(t *testing.T, s *awsdynamo.Locks, _ string, _ *dynamodb.PutItemInput) {
				l := rival
				l.Key = key
				if err := s.Acquire(t.Context(), l, 0); err != nil {
					t.Errorf("rival Acquire() error = %v", err)
				}
			},
			wantErr:  build.ErrLocked,
			wantFree: 1, // the slot was given back
		},
		{
			name:   "last slot taken",
			cap:    1,
			before: "slot#",
			race: func(t *testing.T, s *awsdynamo.Locks, _ string, _ *dynamodb.PutItemInput) {
				if err := s.Acquire(t.Context(), rival, 1); err != nil {
					t.Errorf("rival Acquire() error = %v", err)
				}
			},
			wantErr: build.ErrCapReached,
		},
		{
			name:   "chosen slot taken, another free",
			cap:    2,
			before: "slot#",
			race: func(t *testing.T, _ *awsdynamo.Locks, table string, in *dynamodb.PutItemInput) {
				// Another replica's lease takes exactly the slot Acquire chose.
				_, err := client.PutItem(t.Context(), &dynamodb.PutItemInput{
					TableName: aws.String(table),
					Item: map[string]types.AttributeValue{
						"pk":        in.Item["pk"],
						"buildId":   &types.AttributeValueMemberS{Value: string(rival.BuildID)},
						"lockKey":   &types.AttributeValueMemberS{Value: rival.Key},
						"expiresAt": &types.AttributeValueMemberN{Value: strconv.FormatInt(rival.ExpiresAt.UnixNano(), 10)},
						"ttl":       &types.AttributeValueMemberN{Value: strconv.FormatInt(rival.ExpiresAt.Unix(), 10)},
					},
				})
				if err != nil {
					t.Errorf("PutItem() of the slot error = %v", err)
				}
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			table := newTables(t, client, locksOnly).Locks
			other := awsdynamo.NewLocks(client, table, clock.Now)
			racer := &raceClient{Client: client, prefix: tc.before, race: func(in *dynamodb.PutItemInput) {
				tc.race(t, other, table, in)
			}}
			s := awsdynamo.NewLocks(racer, table, clock.Now)
			l := lease(key)
			err := s.Acquire(t.Context(), l, tc.cap)
			if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil) != (err == nil) {
				t.Fatalf("Acquire() error = %v, want %v", err, tc.wantErr)
			}
			if errors.Is(err, build.ErrLocked) && !strings.Contains(err.Error(), string(rival.BuildID)) {
				t.Errorf("Acquire() error = %v, want it to name the holder %s", err, rival.BuildID)
			}
			if tc.wantErr == nil {
				if _, err := s.Release(t.Context(), l.Key, l.BuildID); err != nil {
					t.Errorf("Release() error = %v", err)
				}
				return
			}
			// The free slots take new leases; then the cap is reached.
			for i := range tc.wantFree {
				if err := other.Acquire(t.Context(), lease(fmt.Sprintf("t/p/free-%d", i)), tc.cap); err != nil {
					t.Errorf("Acquire() of free slot %d error = %v", i, err)
				}
			}
			if err := other.Acquire(t.Context(), lease("t/p/full"), tc.cap); !errors.Is(err, build.ErrCapReached) {
				t.Errorf("Acquire() over the cap error = %v, want ErrCapReached", err)
			}
		})
	}
}

// hookClient runs hook once, just before the first call of op ("put",
// "update" or "delete") on an item whose key starts with prefix: a
// concurrent writer that acts at exactly that point.
type hookClient struct {
	*dynamodb.Client
	op, prefix string
	hook       func()
	once       sync.Once
}

func (c *hookClient) at(op string, key map[string]types.AttributeValue) {
	if pk, ok := key["pk"].(*types.AttributeValueMemberS); ok && op == c.op && strings.HasPrefix(pk.Value, c.prefix) {
		c.once.Do(c.hook)
	}
}

func (c *hookClient) PutItem(ctx context.Context, in *dynamodb.PutItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.PutItemOutput, error) {
	c.at("put", in.Item)
	return c.Client.PutItem(ctx, in, opts...)
}

func (c *hookClient) UpdateItem(ctx context.Context, in *dynamodb.UpdateItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.UpdateItemOutput, error) {
	c.at("update", in.Key)
	return c.Client.UpdateItem(ctx, in, opts...)
}

func (c *hookClient) DeleteItem(ctx context.Context, in *dynamodb.DeleteItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.DeleteItemOutput, error) {
	c.at("delete", in.Key)
	return c.Client.DeleteItem(ctx, in, opts...)
}

// TestLeaseNeverShortensUnderRaces has another replica lengthen a lease
// between a re-acquire's (or an Extend's) read and each of its writes: the
// longer expiry stays, on the lock and on its slot.
func TestLeaseNeverShortensUnderRaces(t *testing.T) {
	t.Parallel()
	client := newClient(t)
	cases := []struct {
		name, op, prefix string
		reacquire        bool
	}{
		{"re-acquire, lengthened before the slot write", "put", "slot#", true},
		{"re-acquire, lengthened before the lock write", "put", "lock#", true},
		{"extend, lengthened before the slot write", "update", "slot#", false},
		{"extend, lengthened before the lock write", "update", "lock#", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx := t.Context()
			clock := buildtest.NewClock(time.Time{})
			now := clock.Now()
			table := newTables(t, client, locksOnly).Locks
			other := awsdynamo.NewLocks(client, table, clock.Now)
			l := build.Lease{Key: "t/p/main", BuildID: build.NewID(now), Owner: "d0", AcquiredAt: now, ExpiresAt: now.Add(70 * time.Minute)}
			if err := other.Acquire(ctx, l, 1); err != nil {
				t.Fatalf("Acquire() error = %v", err)
			}
			ours, theirs := now.Add(80*time.Minute), now.Add(3*time.Hour)
			racer := &hookClient{Client: client, op: tc.op, prefix: tc.prefix, hook: func() {
				if err := other.Extend(ctx, l.Key, l.BuildID, theirs); err != nil {
					t.Errorf("rival Extend() error = %v", err)
				}
			}}
			s := awsdynamo.NewLocks(racer, table, clock.Now)
			var err error
			if tc.reacquire {
				again := l
				again.ExpiresAt = ours
				err = s.Acquire(ctx, again, 1)
			} else {
				err = s.Extend(ctx, l.Key, l.BuildID, ours)
			}
			if err != nil {
				t.Fatalf("error = %v, want nil", err)
			}
			leases, err := s.List(ctx)
			if err != nil || len(leases) != 1 || !leases[0].ExpiresAt.Equal(theirs) {
				t.Fatalf("List() = %v, %v; want one lease expiring at %v", leases, err, theirs)
			}
			clock.Advance(2 * time.Hour) // past ours: the slot is still taken
			fresh := build.Lease{Key: "t/p/other", BuildID: build.NewID(clock.Now()), AcquiredAt: clock.Now(), ExpiresAt: clock.Now().Add(time.Hour)}
			if err := s.Acquire(ctx, fresh, 1); !errors.Is(err, build.ErrCapReached) {
				t.Errorf("Acquire() while the lengthened lease holds the slot error = %v, want ErrCapReached", err)
			}
		})
	}
}

// failSlotDeletes fails every delete of a slot item as a lost connection
// would, after the lock item was deleted.
type failSlotDeletes struct{ *dynamodb.Client }

func (c failSlotDeletes) DeleteItem(ctx context.Context, in *dynamodb.DeleteItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.DeleteItemOutput, error) {
	if pk, ok := in.Key["pk"].(*types.AttributeValueMemberS); ok && strings.HasPrefix(pk.Value, "slot#") {
		return nil, &net.OpError{Op: "read", Net: "tcp", Err: errors.New("connection reset by peer")}
	}
	return c.Client.DeleteItem(ctx, in, opts...)
}

// TestReleaseFailedHalfway checks that a release that deleted the lock but
// not its slot is completed by its retry, which finds no lock: the slot is
// free again at once, not when its lease ends.
func TestReleaseFailedHalfway(t *testing.T) {
	t.Parallel()
	client := newClient(t)
	cases := []struct {
		name string
		// retry releases again after the half-done release; meanwhile
		// holds the key for another build, without a cap, if set.
		meanwhile bool
		force     bool
		wantErr   error
	}{
		{name: "release", wantErr: nil},
		{name: "release, key taken meanwhile", meanwhile: true, wantErr: build.ErrConflict},
		{name: "force release", force: true, wantErr: build.ErrNotFound},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx := t.Context()
			clock := buildtest.NewClock(time.Time{})
			lease := func(key string) build.Lease {
				now := clock.Now()
				return build.Lease{Key: key, BuildID: build.NewID(now), AcquiredAt: now, ExpiresAt: now.Add(70 * time.Minute)}
			}
			table := newTables(t, client, locksOnly).Locks
			s := awsdynamo.NewLocks(client, table, clock.Now)
			broken := awsdynamo.NewLocks(failSlotDeletes{client}, table, clock.Now)
			l := lease("t/p/main")
			if err := s.Acquire(ctx, l, 1); err != nil {
				t.Fatalf("Acquire() error = %v", err)
			}
			release := func(s *awsdynamo.Locks) error {
				if tc.force {
					return s.ForceRelease(ctx, l.Key)
				}
				_, err := s.Release(ctx, l.Key, l.BuildID)
				return err
			}
			if err := release(broken); !errors.Is(err, build.ErrUnavailable) {
				t.Fatalf("release with a failing slot delete error = %v, want ErrUnavailable", err)
			}
			if err := s.Acquire(ctx, lease("t/p/other"), 1); !errors.Is(err, build.ErrCapReached) {
				t.Fatalf("Acquire() while the slot is left behind error = %v, want ErrCapReached", err)
			}
			if tc.meanwhile {
				if err := s.Acquire(ctx, lease(l.Key), 0); err != nil {
					t.Fatalf("Acquire() of the key by another build error = %v", err)
				}
			}
			if err := release(s); !errors.Is(err, tc.wantErr) || (tc.wantErr == nil) != (err == nil) {
				t.Fatalf("retried release error = %v, want %v", err, tc.wantErr)
			}
			if err := s.Acquire(ctx, lease("t/p/other"), 1); err != nil {
				t.Errorf("Acquire() after the retried release error = %v, want the slot free", err)
			}
		})
	}
}

// TestReleaseRetryRacesAcquire has the build acquire its key again between
// the retried release's scan and its delete of the slot left behind: the
// build's new lock keeps the slot, so the cap still holds.
func TestReleaseRetryRacesAcquire(t *testing.T) {
	t.Parallel()
	client := newClient(t)
	ctx := t.Context()
	clock := buildtest.NewClock(time.Time{})
	now := clock.Now()
	table := newTables(t, client, locksOnly).Locks
	s := awsdynamo.NewLocks(client, table, clock.Now)
	l := build.Lease{Key: "t/p/main", BuildID: build.NewID(now), AcquiredAt: now, ExpiresAt: now.Add(time.Hour)}
	if err := s.Acquire(ctx, l, 1); err != nil {
		t.Fatalf("Acquire() error = %v", err)
	}
	if _, err := awsdynamo.NewLocks(failSlotDeletes{client}, table, clock.Now).Release(ctx, l.Key, l.BuildID); !errors.Is(err, build.ErrUnavailable) {
		t.Fatalf("Release() with a failing slot delete error = %v, want ErrUnavailable", err)
	}
	racer := &hookClient{Client: client, op: "delete", prefix: "slot#", hook: func() {
		if err := s.Acquire(ctx, l, 1); err != nil {
			t.Errorf("Acquire() again error = %v", err)
		}
	}}
	if _, err := awsdynamo.NewLocks(racer, table, clock.Now).Release(ctx, l.Key, l.BuildID); err != nil {
		t.Fatalf("retried Release() error = %v", err)
	}
	leases, err := s.List(ctx)
	if err != nil || len(leases) != 1 || leases[0].BuildID != l.BuildID {
		t.Fatalf("List() = %v, %v; want the lease acquired again", leases, err)
	}
	other := build.Lease{Key: "t/p/other", BuildID: build.NewID(now), AcquiredAt: now, ExpiresAt: now.Add(time.Hour)}
	if err := s.Acquire(ctx, other, 1); !errors.Is(err, build.ErrCapReached) {
		t.Errorf("Acquire() of another key error = %v, want ErrCapReached: the lease kept its slot", err)
	}
	if err := s.Extend(ctx, l.Key, l.BuildID, now.Add(2*time.Hour)); err != nil {
		t.Errorf("Extend() of the lease acquired again error = %v", err)
	}
}

// failLockWrites fails every write of a lock item as a lost connection
// would, after the slot was claimed.
type failLockWrites struct{ *dynamodb.Client }

func (c failLockWrites) PutItem(ctx context.Context, in *dynamodb.PutItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.PutItemOutput, error) {
	if pk, ok := in.Item["pk"].(*types.AttributeValueMemberS); ok && strings.HasPrefix(pk.Value, "lock#") {
		return nil, &net.OpError{Op: "read", Net: "tcp", Err: errors.New("connection reset by peer")}
	}
	return c.Client.PutItem(ctx, in, opts...)
}

// TestAcquireFailedHalfway checks what an Acquire that claimed a slot but
// could not write the lock leaves behind: an occupied slot, which the
// build's retry reuses, and which is freed when another build turns out to
// hold the key.
func TestAcquireFailedHalfway(t *testing.T) {
	t.Parallel()
	client := newClient(t)
	ctx := t.Context()
	clock := buildtest.NewClock(time.Time{})
	now := clock.Now()
	lease := func(key string) build.Lease {
		return build.Lease{Key: key, BuildID: build.NewID(now), AcquiredAt: now, ExpiresAt: now.Add(time.Hour)}
	}
	table := newTables(t, client, locksOnly).Locks
	s := awsdynamo.NewLocks(client, table, clock.Now)
	broken := awsdynamo.NewLocks(failLockWrites{client}, table, clock.Now)

	l := lease("t/p/main")
	if err := broken.Acquire(ctx, l, 1); !errors.Is(err, build.ErrUnavailable) {
		t.Fatalf("Acquire() with a failing lock write error = %v, want ErrUnavailable", err)
	}
	if err := s.Acquire(ctx, lease("t/p/other"), 1); !errors.Is(err, build.ErrCapReached) {
		t.Fatalf("Acquire() while a half-acquired slot is taken error = %v, want ErrCapReached", err)
	}
	if err := s.Acquire(ctx, l, 1); err != nil {
		t.Fatalf("Acquire() retried by the same build error = %v, want its slot back", err)
	}
	if _, err := s.Release(ctx, l.Key, l.BuildID); err != nil {
		t.Fatalf("Release() error = %v", err)
	}

	// Half-acquired again; meanwhile another build takes the key without a
	// cap. The retry finds the key held and frees the orphaned slot.
	if err := broken.Acquire(ctx, l, 1); !errors.Is(err, build.ErrUnavailable) {
		t.Fatalf("Acquire() with a failing lock write error = %v, want ErrUnavailable", err)
	}
	other := lease(l.Key)
	if err := s.Acquire(ctx, other, 0); err != nil {
		t.Fatalf("Acquire() without a cap error = %v", err)
	}
	if err := s.Acquire(ctx, l, 1); !errors.Is(err, build.ErrLocked) {
		t.Fatalf("Acquire() of a key another build holds error = %v, want ErrLocked", err)
	}
	if err := s.Acquire(ctx, lease("t/p/other"), 1); err != nil {
		t.Errorf("Acquire() after the orphaned slot was freed error = %v", err)
	}
}
