package awsdynamo

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/dynamodb/attributevalue"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/google/go-cmp/cmp"

	"github.com/decap-ci/decap/internal/build"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

func TestCursorRoundTrip(t *testing.T) {
	t.Parallel()
	base := time.Date(2025, time.March, 1, 12, 0, 0, 0, time.UTC)
	cases := []struct {
		name string
		p    position
	}{
		{"whole seconds", position{base, "0195509c-4c00-7000-8000-000000000001"}},
		{"nanoseconds", position{base.Add(123456789), "0195509c-4c00-7000-8000-000000000002"}},
		{"other zone", position{base.In(time.FixedZone("X", 5*3600)), "id"}},
		{"zero time", position{time.Time{}, "id"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := tc.p.cursor()
			got, err := parseCursor(c)
			if err != nil {
				t.Fatalf("parseCursor(%q) error = %v", c, err)
			}
			if !got.queued.Equal(tc.p.queued) || got.id != tc.p.id {
				t.Errorf("parseCursor(cursor(%v)) = %v, want it back", tc.p, got)
			}
			if got.sortKey() != tc.p.sortKey() {
				t.Errorf("sort key after a round trip = %q, want %q", got.sortKey(), tc.p.sortKey())
			}
		})
	}
}

// TestSortKeyOrder checks that sort keys order as positions do: by
// QueuedAt, then BuildID.
func TestSortKeyOrder(t *testing.T) {
	t.Parallel()
	base := time.Date(2025, time.March, 1, 12, 0, 0, 0, time.UTC)
	ordered := []position{
		{time.Time{}, "b"},
		{base.Add(-time.Hour), "a"},
		{base, "a"},
		{base, "b"},
		{base.Add(time.Nanosecond), "a"},
		{base.Add(time.Second), "0"},
		{base.AddDate(10, 0, 0), "0"},
	}
	for i := 1; i < len(ordered); i++ {
		a, b := ordered[i-1].sortKey(), ordered[i].sortKey()
		if a >= b {
			t.Errorf("sort key %q >= %q, want <", a, b)
		}
	}
}

func TestParseCursorRejectsGarbage(t *testing.T) {
	t.Parallel()
	enc := func(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }
	cases := []struct {
		name, cursor string
	}{
		{"not base64", "not a cursor!"},
		{"padded base64", base64.URLEncoding.EncodeToString([]byte("20250301T120000.000000000Z#x"))},
		{"no separator", enc("20250301T120000.000000000Z")},
		{"no build id", enc("20250301T120000.000000000Z#")},
		{"bad time", enc("2025-03-01T12:00:00Z#id")},
		{"short fraction", enc("20250301T120000.000Z#id")},
		{"control character", enc("20250301T120000.000000000Z#a\x00b")},
		{"sqlite cursor", enc("1740830400000000000:id")},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if p, err := parseCursor(tc.cursor); !errors.Is(err, build.ErrInvalid) {
				t.Errorf("parseCursor(%q) = %v, %v; want ErrInvalid", tc.cursor, p, err)
			}
		})
	}
}

// statusError is a response error with an HTTP status, like the SDK's.
type statusError int

func (e statusError) Error() string       { return fmt.Sprintf("http %d", int(e)) }
func (e statusError) HTTPStatusCode() int { return int(e) }

func TestClassify(t *testing.T) {
	t.Parallel()
	wrap := func(err error) error { return fmt.Errorf("operation error DynamoDB: PutItem: %w", err) }
	cases := []struct {
		name        string
		err         error
		unavailable bool
	}{
		{"throughput exceeded", wrap(&types.ProvisionedThroughputExceededException{}), true},
		{"request limit", wrap(&types.RequestLimitExceeded{}), true},
		{"throttling", wrap(&types.ThrottlingException{}), true},
		{"internal server error", wrap(&types.InternalServerError{}), true},
		{"http 503", wrap(statusError(503)), true},
		{"connection refused", wrap(&net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connection refused")}), true},
		{"http 400", wrap(statusError(400)), false},
		{"condition failed", wrap(&types.ConditionalCheckFailedException{}), false},
		{"transaction conflict", wrap(&types.TransactionConflictException{}), false},
		{"table missing", wrap(&types.ResourceNotFoundException{}), false},
		{"context cancelled", wrap(context.Canceled), false},
		{"deadline", wrap(&net.OpError{Op: "dial", Err: context.DeadlineExceeded}), false},
		{"already unavailable", fmt.Errorf("x: %w", build.ErrUnavailable), true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got := classify(tc.err)
			if errors.Is(got, build.ErrUnavailable) != tc.unavailable {
				t.Errorf("classify(%v) = %v; ErrUnavailable %t, want %t", tc.err, got, !tc.unavailable, tc.unavailable)
			}
			if !errors.Is(got, tc.err) {
				t.Errorf("classify(%v) = %v, want it to wrap the error", tc.err, got)
			}
			if strings.Count(got.Error(), build.ErrUnavailable.Error()) > 1 {
				t.Errorf("classify(%v) = %v, wrapped twice", tc.err, got)
			}
		})
	}
	if classify(nil) != nil {
		t.Errorf("classify(nil) != nil")
	}
}

// TestUnreachableBackendIsUnavailable points a real client at a closed port.
func TestUnreachableBackendIsUnavailable(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("Listen() error = %v", err)
	}
	addr := ln.Addr().String()
	ln.Close()
	client := dynamodb.New(dynamodb.Options{
		Region:       "us-east-1",
		BaseEndpoint: aws.String("http://" + addr),
		Credentials: aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
			return aws.Credentials{AccessKeyID: "test", SecretAccessKey: "test"}, nil
		}),
		RetryMaxAttempts: 1,
	})
	now := time.Now()
	ctx := t.Context()
	lease := build.Lease{Key: "t/p/main", BuildID: build.NewID(now), AcquiredAt: now, ExpiresAt: now.Add(time.Hour)}
	locks := NewLocks(client, "x-locks", nil)
	records := NewRecords(client, "x-builds")
	calls := map[string]func() error{
		"Acquire": func() error { return locks.Acquire(ctx, lease, 3) },
		"Release": func() error { _, err := locks.Release(ctx, lease.Key, lease.BuildID); return err },
		"Await":   func() error { return locks.Await(ctx, lease.Key, "receipt") },
		"List":    func() error { _, err := locks.List(ctx); return err },
		"Claim": func() error {
			_, err := NewIdempotency(client, "x-idempotency", nil).Claim(ctx, "k", lease.BuildID, time.Hour)
			return err
		},
		"Save":     func() error { return records.Save(ctx, build.RecordFor(build.Request{BuildID: lease.BuildID})) },
		"Get":      func() error { _, err := records.Get(ctx, lease.BuildID); return err },
		"Projects": func() error { _, err := records.Projects(ctx); return err },
		"CreateTables": func() error {
			return CreateTables(ctx, client, TableNames("x"))
		},
	}
	for name, call := range calls {
		if err := call(); !errors.Is(err, build.ErrUnavailable) {
			t.Errorf("%s() error = %v, want ErrUnavailable", name, err)
		}
	}
}

func TestInvalidInputMakesNoCall(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	// A nil client panics if called.
	locks := NewLocks(nil, "t", nil)
	records := NewRecords(nil, "t")
	claims := NewIdempotency(nil, "t", nil)
	sessions := NewSessions(nil, "t", nil)
	now := time.Now()
	id := build.NewID(time.Now())
	errs := map[string]error{
		"Acquire without key":            locks.Acquire(ctx, build.Lease{BuildID: id}, 1),
		"Acquire without build":          locks.Acquire(ctx, build.Lease{Key: "t/p/main"}, 1),
		"Claim without key":              func() error { _, err := claims.Claim(ctx, "", id, time.Hour); return err }(),
		"Claim with zero ttl":            func() error { _, err := claims.Claim(ctx, "k", id, 0); return err }(),
		"Save without id":                records.Save(ctx, build.Record{Status: build.StatusQueued}),
		"Save unknown status":            records.Save(ctx, build.Record{BuildID: id, Status: "bogus"}),
		"Save marker id":                 records.Save(ctx, build.Record{BuildID: "project#t/p", Status: build.StatusQueued}),
		"Create session with a raw ID":   sessions.Create(ctx, build.Session{Key: "raw id", CreatedAt: now, ExpiresAt: now.Add(time.Hour)}),
		"Create session already expired": sessions.Create(ctx, build.Session{Key: build.SessionKey("x"), CreatedAt: now, ExpiresAt: now}),
		"ListProject bad cursor": func() error {
			_, _, err := records.ListProject(ctx, "t", "p", 10, "!")
			return err
		}(),
	}
	for name, err := range errs {
		if !errors.Is(err, build.ErrInvalid) {
			t.Errorf("%s: error = %v, want ErrInvalid", name, err)
		}
	}
}

func TestTableNames(t *testing.T) {
	t.Parallel()
	cases := []struct {
		prefix string
		want   Tables
	}{
		{"", Tables{"decap-locks", "decap-idempotency", "decap-builds", "decap-sessions"}},
		{"ci", Tables{"ci-locks", "ci-idempotency", "ci-builds", "ci-sessions"}},
	}
	for _, tc := range cases {
		if got := TableNames(tc.prefix); got != tc.want {
			t.Errorf("TableNames(%q) = %+v, want %+v", tc.prefix, got, tc.want)
		}
	}
}

// TestItemsGolden pins the stored form of records, a project marker, a
// lease and the dispatch gate, which the UI, operators and other systems
// read.
func TestItemsGolden(t *testing.T) {
	t.Parallel()
	base := time.Date(2025, time.March, 1, 12, 0, 0, 0, time.UTC)
	exit := 0
	r := build.Record{
		BuildID:       "0195509c-4c00-7000-8000-000000000001",
		Number:        42,
		RebuildOf:     "0195509c-4c00-7000-8000-000000000000",
		Team:          "ae6rt",
		Project:       "dynamodb-lab",
		Ref:           "feature/x",
		RefType:       build.Branch,
		SHA:           "0123456789abcdef0123456789abcdef01234567",
		Trigger:       build.TriggerPush,
		RequestedBy:   "octocat",
		DeliveryID:    "72d3162e-cc78-11e3-81ab-4c9367dc0958",
		Status:        build.StatusSucceeded,
		ExitCode:      &exit,
		QueuedAt:      base,
		StartedAt:     base.Add(2 * time.Second),
		FinishedAt:    base.Add(92*time.Second + 123456789),
		LogKey:        "logs/0195509c-4c00-7000-8000-000000000001/console.log.gz",
		ArtifactsKey:  "artifacts/0195509c-4c00-7000-8000-000000000001/artifacts.tar.gz",
		PodName:       "build-0195509c-4c00-7000-8000-000000000001",
		CatalogCommit: "abc123",
	}
	running := build.RecordFor(build.Request{
		BuildID: "0195509c-4c00-7000-8000-000000000002", Team: "ae6rt", Project: "dynamodb-lab",
		Ref: "main", RefType: build.Branch, Trigger: build.TriggerManual, RequestedAt: base,
	})
	running.Status = build.StatusRunning
	slot := 2
	lease := lockItem{
		PK: lockPrefix + "ae6rt/dynamodb-lab/main", BuildID: string(running.BuildID), Owner: "dispatcher-0",
		AcquiredAt: nanos(base), ExpiresAt: nanos(base.Add(time.Hour)), TTL: ttlSeconds(base.Add(time.Hour)), Slot: &slot,
	}
	queued := build.RecordFor(build.Request{
		BuildID: "0195509c-4c00-7000-8000-000000000003", Team: "ae6rt", Project: "dynamodb-lab",
		Ref: "dev", RefType: build.Branch, Trigger: build.TriggerManual, RequestedAt: base,
	})
	deferred := queued
	deferred.Status, deferred.Reason, deferred.NextAttemptAt = build.StatusDeferred, "branch busy", base.Add(30*time.Second)
	items := map[string]any{
		"record":   itemFor(r),
		"running":  itemFor(running),
		"queued":   itemFor(queued),
		"deferred": itemFor(deferred),
		"gate":     gateItemFor(build.GateState{Paused: true, Reason: "cluster upgrade", By: "octocat", Since: base}),
		"marker":   markerItem{BuildID: markerPrefix + r.ProjectKey(), Kind: markerKind, Team: r.Team, Project: r.Project, LastNumber: 42},
		"lock":     lease,
		"session": sessionItem{
			PK: build.SessionKey("a session ID"), Binding: "3f1c0a5e9b7d2c4e6f8a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e",
			CreatedAt: nanos(base), ExpiresAt: nanos(base.Add(12 * time.Hour)), TTL: ttlSeconds(base.Add(12 * time.Hour)),
		},
		"slot": slotItem{PK: slotPrefix + "2", BuildID: lease.BuildID, LockKey: "ae6rt/dynamodb-lab/main", ExpiresAt: lease.ExpiresAt, TTL: lease.TTL},
	}
	pull := build.RecordFor(build.Request{
		BuildID: "0195509c-4c00-7000-8000-000000000004", Team: "ae6rt", Project: "dynamodb-lab",
		Ref: "pull/7", RefType: build.Pull, SHA: "0123456789abcdef0123456789abcdef01234567", Trigger: build.TriggerPullRequest, RequestedAt: base,
		PullRequest: &build.PullRequest{Number: 7, BaseRef: "main", HeadRef: "fix", HeadRepo: "octocat/dynamodb-lab",
			HeadSHA: "0123456789abcdef0123456789abcdef01234567", ApprovedBy: "ae6rt"},
	})
	items["pullBuild"] = itemFor(pull)
	pr := build.PullRequestState{Team: "ae6rt", Project: "dynamodb-lab", Number: 7, Title: "Fix it", Author: "octocat",
		AuthorAssociation: "NONE", BaseRef: "main", HeadRef: "fix", HeadRepo: "octocat/dynamodb-lab",
		HeadSHA: "0123456789abcdef0123456789abcdef01234567", HeadAt: base, State: build.PullWaiting,
		Reason: build.ReasonWaitingForApproval, EventAt: base, Version: 3}
	prItem, err := pullItemFor(pr)
	if err != nil {
		t.Fatal(err)
	}
	doc := map[string]any{"pullRequest": dynamoJSON(&types.AttributeValueMemberM{Value: prItem})["M"]}
	for name, it := range items {
		av, err := attributevalue.MarshalMap(it)
		if err != nil {
			t.Fatalf("MarshalMap(%s) error = %v", name, err)
		}
		doc[name] = dynamoJSON(&types.AttributeValueMemberM{Value: av})["M"]
	}
	got, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	got = append(got, '\n')
	path := filepath.Join("testdata", "items.golden.json")
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read golden file (run with -update to create it): %v", err)
	}
	if diff := cmp.Diff(string(want), string(got)); diff != "" {
		t.Errorf("stored items (-want +got), run with -update if intended:\n%s", diff)
	}

	// And back.
	for _, rec := range []build.Record{r, running, queued, deferred, pull} {
		back, err := itemFor(rec).record()
		if err != nil {
			t.Fatalf("record() error = %v", err)
		}
		if diff := cmp.Diff(rec, back); diff != "" {
			t.Errorf("record(itemFor(r)) (-want +got):\n%s", diff)
		}
	}
}

// dynamoJSON renders an attribute value as DynamoDB JSON, as the AWS CLI
// and console show it.
func dynamoJSON(av types.AttributeValue) map[string]any {
	switch v := av.(type) {
	case *types.AttributeValueMemberS:
		return map[string]any{"S": v.Value}
	case *types.AttributeValueMemberN:
		return map[string]any{"N": v.Value}
	case *types.AttributeValueMemberBOOL:
		return map[string]any{"BOOL": v.Value}
	case *types.AttributeValueMemberNULL:
		return map[string]any{"NULL": v.Value}
	case *types.AttributeValueMemberM:
		m := map[string]any{}
		for k, e := range v.Value {
			m[k] = dynamoJSON(e)
		}
		return map[string]any{"M": m}
	case *types.AttributeValueMemberL:
		l := []any{}
		for _, e := range v.Value {
			l = append(l, dynamoJSON(e))
		}
		return map[string]any{"L": l}
	case *types.AttributeValueMemberSS:
		return map[string]any{"SS": slices.Clone(v.Value)}
	}
	return map[string]any{"?": fmt.Sprintf("%T", av)}
}

// oldDynamo is a one-item store that, like an emulator without
// ReturnValuesOnConditionCheckFailure, returns no old item with a failed
// condition.
type oldDynamo struct {
	item map[string]types.AttributeValue
}

func (d *oldDynamo) PutItem(_ context.Context, in *dynamodb.PutItemInput, _ ...func(*dynamodb.Options)) (*dynamodb.PutItemOutput, error) {
	if d.item != nil {
		return nil, &types.ConditionalCheckFailedException{}
	}
	d.item = in.Item
	return &dynamodb.PutItemOutput{}, nil
}

func (d *oldDynamo) GetItem(_ context.Context, in *dynamodb.GetItemInput, _ ...func(*dynamodb.Options)) (*dynamodb.GetItemOutput, error) {
	return &dynamodb.GetItemOutput{Item: d.item}, nil
}

func TestClaimReadsTheOwnerWithoutOldItem(t *testing.T) {
	t.Parallel()
	s := NewIdempotency(&oldDynamo{}, "t", nil)
	first, second := build.NewID(time.Now()), build.NewID(time.Now())
	for _, id := range []build.ID{first, second} {
		got, err := s.Claim(t.Context(), "delivery:d1", id, time.Hour)
		if err != nil || got != first {
			t.Errorf("Claim(%s) = %s, %v; want %s", id, got, err, first)
		}
	}
}

// staleIndex answers every Query with its items, as a lagging index would.
type staleIndex struct {
	recordsAPI
	items []map[string]types.AttributeValue
}

func (d staleIndex) Query(_ context.Context, in *dynamodb.QueryInput, _ ...func(*dynamodb.Options)) (*dynamodb.QueryOutput, error) {
	return &dynamodb.QueryOutput{Items: d.items}, nil
}

// TestWaitingSkipsStaleIndexEntries checks that Waiting and Running drop
// index entries whose status moved on, and that Waiting sorts by QueuedAt,
// then BuildID, whatever order the index returns.
func TestWaitingSkipsStaleIndexEntries(t *testing.T) {
	t.Parallel()
	base := time.Date(2025, time.March, 1, 12, 0, 0, 0, time.UTC)
	rec := func(id string, at time.Time, st build.Status) build.Record {
		return build.Record{BuildID: build.ID(id), Team: "t", Project: "p", Ref: "main", Status: st, QueuedAt: at}
	}
	recs := []build.Record{
		rec("a", base.Add(2*time.Second), build.StatusQueued),
		rec("b", base, build.StatusRunning), // started since it was indexed as waiting
		rec("c", base, build.StatusDeferred),
		rec("d", base.Add(time.Second), build.StatusSucceeded), // final since
		rec("0", base.Add(2*time.Second), build.StatusDeferred),
	}
	var items []map[string]types.AttributeValue
	for _, r := range recs {
		av, err := attributevalue.MarshalMap(itemFor(r))
		if err != nil {
			t.Fatal(err)
		}
		items = append(items, av)
	}
	s := NewRecords(staleIndex{items: items}, "builds")
	got, _, err := s.Waiting(t.Context(), 0, 0)
	if err != nil {
		t.Fatalf("Waiting() error = %v", err)
	}
	if diff := cmp.Diff([]build.Record{recs[2], recs[4], recs[0]}, got); diff != "" {
		t.Errorf("Waiting() (-want +got):\n%s", diff)
	}
	running, err := s.Running(t.Context())
	if err != nil {
		t.Fatalf("Running() error = %v", err)
	}
	if diff := cmp.Diff([]build.Record{recs[1]}, running); diff != "" {
		t.Errorf("Running() (-want +got):\n%s", diff)
	}
}

// TestReplaceInputFollowsDynamoDBRules checks Save's replace against rules
// of UpdateItem that moto does not enforce (Amazon DynamoDB Developer
// Guide, "Expressions"; API reference, UpdateItem): the key cannot be
// updated; every name and value placeholder given must be used, and every
// one used given; a placeholder is '#' or ':' and alphanumerics or '_'; no
// attribute is both set and removed; an expression is at most 4 KB. And
// that the number is never written, so a replace keeps it.
func TestReplaceInputFollowsDynamoDBRules(t *testing.T) {
	t.Parallel()
	base := time.Date(2025, time.March, 1, 12, 0, 0, 0, time.UTC)
	exit := 1
	full := build.Record{
		BuildID: build.NewID(base), Number: 7, RebuildOf: build.NewID(base), Team: "t", Project: "p",
		Ref: strings.Repeat("r", build.MaxRefLen), RefType: build.Branch, SHA: strings.Repeat("a", 40),
		Trigger: build.TriggerAPI, RequestedBy: "api", DeliveryID: "d", Status: build.StatusFailed, ExitCode: &exit,
		QueuedAt: base, StartedAt: base, FinishedAt: base, LogKey: build.LogKey("x"), ArtifactsKey: build.ArtifactsKey("x"),
		PodName: "pod", CatalogCommit: "c", Reason: "r", NextAttemptAt: base, CancelRequestedAt: base,
	}
	bare := build.Record{BuildID: build.NewID(base), Team: "t", Project: "p", Ref: "main", Status: build.StatusQueued}
	claimed := full
	claimed.LaunchingAt, claimed.InfraRetries, claimed.Supersedable = base, 2, true
	placeholder := regexp.MustCompile(`[#:][A-Za-z0-9_]+`)
	for name, r := range map[string]build.Record{"every field": full, "few fields": bare, "claimed": claimed} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			in, err := NewRecords(nil, "builds").replaceInput(r, "token")
			if err != nil {
				t.Fatalf("replaceInput() error = %v", err)
			}
			update, cond := aws.ToString(in.UpdateExpression), aws.ToString(in.ConditionExpression)
			for _, e := range []string{update, cond} {
				if len(e) > 4096 {
					t.Errorf("expression of %d bytes, more than 4 KB: %s", len(e), e)
				}
			}
			used := map[string]bool{}
			for _, p := range placeholder.FindAllString(update+" "+cond, -1) {
				used[p] = true
				_, isName := in.ExpressionAttributeNames[p]
				_, isValue := in.ExpressionAttributeValues[p]
				if !isName && !isValue {
					t.Errorf("placeholder %s is used but not given", p)
				}
			}
			for p := range in.ExpressionAttributeNames {
				if !used[p] {
					t.Errorf("name placeholder %s is given but not used", p)
				}
			}
			for p := range in.ExpressionAttributeValues {
				if !used[p] {
					t.Errorf("value placeholder %s is given but not used", p)
				}
			}
			setPart, removePart, _ := strings.Cut(strings.TrimPrefix(update, "SET "), " REMOVE ")
			touched := map[string]int{}
			for _, part := range []string{setPart, removePart} {
				for _, p := range placeholder.FindAllString(part, -1) {
					if strings.HasPrefix(p, "#") {
						touched[in.ExpressionAttributeNames[p]]++
					}
				}
			}
			for a, n := range touched {
				if n > 1 {
					t.Errorf("attribute %s is updated %d times", a, n)
				}
			}
			for _, a := range []string{"buildId", "number", "kind"} {
				if touched[a] > 0 {
					t.Errorf("the update touches %s: %s", a, update)
				}
			}
			want := len(recordAttributes())
			if r.LaunchingAt.IsZero() {
				// No claim: the stored one stays (build.Record.KeepClaim).
				want -= len(claimAttributes)
				for _, a := range claimAttributes {
					if touched[a] > 0 {
						t.Errorf("the update of a record without a launch claim touches %s: %s", a, update)
					}
				}
			}
			if got := len(touched); got != want {
				t.Errorf("the update sets or removes %d attributes, want %d: all of a record's but its key, its number and a claim it does not have", got, want)
			}
		})
	}
}
