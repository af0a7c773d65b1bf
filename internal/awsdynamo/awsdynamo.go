// Package awsdynamo stores Decap's branch locks, concurrency slots,
// idempotency claims, build records (and their build events' outbox),
// the dispatch gate, the UI's sessions
// and what Decap knows of pull requests in DynamoDB. Its Locks,
// Idempotency, Records, Gate, Sessions and PullRequests satisfy
// the same contracts
// (internal/buildtest) as the SQLite adapters of the embedded default;
// callers see only internal/build types and sentinel errors.
//
// Four tables, named by TableNames from a configurable prefix:
//
//	<prefix>-locks        HASH pk (S); TTL attribute ttl (N, epoch seconds).
//	                      Lock items pk = "lock#<team/project/ref>",
//	                      slot items pk = "slot#<n>" for n in [0, cap),
//	                      the dispatch gate pk = "gate#dispatch" (no ttl).
//	<prefix>-idempotency  HASH pk (S); TTL attribute ttl.
//	<prefix>-builds       HASH buildId (S); global secondary indexes, all
//	                      projecting ALL attributes:
//	                      by-project (HASH projectKey S, RANGE queuedSort S),
//	                      running (HASH runningPk S, RANGE buildId S; sparse:
//	                      runningPk = "running" while a build runs,
//	                      "waiting" while it is queued or deferred, absent
//	                      once final),
//	                      projects (HASH kind S, RANGE buildId S; sparse
//	                      marker items buildId = "project#<team/project>"),
//	                      unfinished (HASH unfinishedKey S, RANGE
//	                      queuedSort S; sparse: unfinishedKey = the lock
//	                      key while a build is queued, deferred or
//	                      running, absent once final),
//	                      outbox (HASH outboxShard S, RANGE outboxSort S;
//	                      projecting KEYS_ONLY; sparse: present while the
//	                      record has events not yet forwarded, with
//	                      Records.WithEvents; see outbox.go).
//	                      Pull request items buildId =
//	                      "pull#<team/project/N>" (PullRequests), listed
//	                      by the projects index under kind =
//	                      "pulls#<team/project>" while open.
//	<prefix>-sessions     HASH pk (S) = SHA-256 of the session ID (hex);
//	                      TTL attribute ttl.
//
// CreateTables creates them for tests and local setups; production creates
// them with aws-resources/create-world.sh from the same definitions.
//
// DynamoDB deletes items past their TTL lazily, often days later, so every
// condition and read here compares expiresAt (Unix nanoseconds) with the
// injected clock and treats a lease or claim as expired once
// expiresAt <= now, like the other adapters; ttl only cleans up.
//
// Every write is a conditional write of a single item, a record's
// together with its build event when events are on (Records.WithEvents,
// the outbox in the item: outbox.go); Locks orders its
// lock and slot writes so that the cap holds without transactions (see
// Locks for why).
//
// The SDK retries a request whose answer was lost or failed (a timeout, a
// 5xx, a response failing its checksum), so a conditional write whose
// first try landed meets, on its retry, the item it wrote itself. Every
// write tells that from a conflict: a record write bears a token of its
// Save or EndWaiting call (writeToken) and a project marker's count the
// token of its Save (numberedBy); a pull request's, a session's or a
// webhook item's put compares the stored item with the one it wrote; a
// lock or slot write's condition admits the writer's own lease (Acquire,
// Extend), a claim answers its owner (Claim), and a lock's delete that
// finds the lock gone has released it. A failed condition returns the stored item
// (ReturnValuesOnConditionCheckFailure); where an emulator returns none,
// it is read consistently.
//
// Throttling, server-side failures and network errors are returned wrapping
// build.ErrUnavailable.
package awsdynamo

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"slices"
	"strconv"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/decap-ci/decap/internal/build"
)

// DefaultPrefix is the table-name prefix TableNames uses for "".
const DefaultPrefix = "decap"

// Index names of the builds table.
const (
	indexByProject = "by-project"
	indexRunning   = "running"
	indexProjects  = "projects"
	// indexUnfinished lists one lock key's unfinished records
	// (Records.Unfinished).
	indexUnfinished = "unfinished"
)

// Tables names Decap's DynamoDB tables.
type Tables struct {
	Locks       string
	Idempotency string
	Builds      string
	Sessions    string
}

// TableNames returns the table names for prefix: "<prefix>-locks",
// "<prefix>-idempotency", "<prefix>-builds" and "<prefix>-sessions" (prefix
// "" means DefaultPrefix).
func TableNames(prefix string) Tables {
	if prefix == "" {
		prefix = DefaultPrefix
	}
	return Tables{
		Locks:       prefix + "-locks",
		Idempotency: prefix + "-idempotency",
		Builds:      prefix + "-builds",
		Sessions:    prefix + "-sessions",
	}
}

// tablesAPI lists the DynamoDB calls CreateTables makes.
type tablesAPI interface {
	CreateTable(ctx context.Context, in *dynamodb.CreateTableInput, opts ...func(*dynamodb.Options)) (*dynamodb.CreateTableOutput, error)
	DescribeTable(ctx context.Context, in *dynamodb.DescribeTableInput, opts ...func(*dynamodb.Options)) (*dynamodb.DescribeTableOutput, error)
	DescribeTimeToLive(ctx context.Context, in *dynamodb.DescribeTimeToLiveInput, opts ...func(*dynamodb.Options)) (*dynamodb.DescribeTimeToLiveOutput, error)
	UpdateTimeToLive(ctx context.Context, in *dynamodb.UpdateTimeToLiveInput, opts ...func(*dynamodb.Options)) (*dynamodb.UpdateTimeToLiveOutput, error)
}

// tableWait bounds how long CreateTables waits for one table to become
// ACTIVE.
const tableWait = 5 * time.Minute

// CreateTables creates the tables named in t (an empty name is skipped) with
// on-demand billing, the keys, indexes and TTL attributes described in the
// package comment, and waits until each is ACTIVE. A table that already
// exists is left as it is, but its key schema and index names are checked:
// a table with another schema is an error.
func CreateTables(ctx context.Context, client tablesAPI, t Tables) error {
	defs := []*dynamodb.CreateTableInput{}
	if t.Locks != "" {
		defs = append(defs, hashTable(t.Locks, "pk"))
	}
	if t.Idempotency != "" {
		defs = append(defs, hashTable(t.Idempotency, "pk"))
	}
	if t.Builds != "" {
		defs = append(defs, buildsTable(t.Builds))
	}
	if t.Sessions != "" {
		defs = append(defs, hashTable(t.Sessions, "pk"))
	}
	for _, def := range defs {
		if err := createTable(ctx, client, def); err != nil {
			return fmt.Errorf("create table %s: %w", aws.ToString(def.TableName), classify(err))
		}
	}
	for _, name := range []string{t.Locks, t.Idempotency, t.Sessions} {
		if name == "" {
			continue
		}
		if err := enableTTL(ctx, client, name); err != nil {
			return fmt.Errorf("enable ttl on %s: %w", name, classify(err))
		}
	}
	return nil
}

func hashTable(name, key string) *dynamodb.CreateTableInput {
	return &dynamodb.CreateTableInput{
		TableName:            aws.String(name),
		BillingMode:          types.BillingModePayPerRequest,
		AttributeDefinitions: []types.AttributeDefinition{{AttributeName: aws.String(key), AttributeType: types.ScalarAttributeTypeS}},
		KeySchema:            []types.KeySchemaElement{{AttributeName: aws.String(key), KeyType: types.KeyTypeHash}},
	}
}

func buildsTable(name string) *dynamodb.CreateTableInput {
	def := hashTable(name, "buildId")
	for _, a := range []string{"projectKey", "queuedSort", "runningPk", "kind", "unfinishedKey", attrOutboxShard, attrOutboxSort} {
		def.AttributeDefinitions = append(def.AttributeDefinitions,
			types.AttributeDefinition{AttributeName: aws.String(a), AttributeType: types.ScalarAttributeTypeS})
	}
	index := func(name, hash, rng string) types.GlobalSecondaryIndex {
		return types.GlobalSecondaryIndex{
			IndexName: aws.String(name),
			KeySchema: []types.KeySchemaElement{
				{AttributeName: aws.String(hash), KeyType: types.KeyTypeHash},
				{AttributeName: aws.String(rng), KeyType: types.KeyTypeRange},
			},
			Projection: &types.Projection{ProjectionType: types.ProjectionTypeAll},
		}
	}
	def.GlobalSecondaryIndexes = []types.GlobalSecondaryIndex{
		index(indexByProject, "projectKey", "queuedSort"),
		index(indexRunning, "runningPk", "buildId"),
		index(indexProjects, "kind", "buildId"),
		index(indexUnfinished, "unfinishedKey", "queuedSort"),
		index(indexOutbox, attrOutboxShard, attrOutboxSort),
	}
	// The outbox index names the items; Pending reads them consistently
	// by key, so it needs no copy of them (and every write of an item
	// with pending events would otherwise write the copy too).
	def.GlobalSecondaryIndexes[len(def.GlobalSecondaryIndexes)-1].Projection = &types.Projection{ProjectionType: types.ProjectionTypeKeysOnly}
	return def
}

// createTable creates def unless a table of that name exists, waits until
// it is ACTIVE and checks its schema.
func createTable(ctx context.Context, client tablesAPI, def *dynamodb.CreateTableInput) error {
	_, err := client.CreateTable(ctx, def)
	var inUse *types.ResourceInUseException
	if err != nil && !errors.As(err, &inUse) {
		return err
	}
	waiter := dynamodb.NewTableExistsWaiter(client, func(o *dynamodb.TableExistsWaiterOptions) {
		o.MinDelay, o.MaxDelay = 500*time.Millisecond, 5*time.Second
	})
	out, err := waiter.WaitForOutput(ctx, &dynamodb.DescribeTableInput{TableName: def.TableName}, tableWait)
	if err != nil {
		return err
	}
	return checkSchema(def, out.Table)
}

// checkSchema reports a table whose hash key or index names differ from def.
func checkSchema(def *dynamodb.CreateTableInput, got *types.TableDescription) error {
	if got == nil {
		return errors.New("no table description")
	}
	hash := func(ks []types.KeySchemaElement) string {
		for _, k := range ks {
			if k.KeyType == types.KeyTypeHash {
				return aws.ToString(k.AttributeName)
			}
		}
		return ""
	}
	if want, have := hash(def.KeySchema), hash(got.KeySchema); want != have {
		return fmt.Errorf("table exists with hash key %q, want %q", have, want)
	}
	var have []string
	for _, ix := range got.GlobalSecondaryIndexes {
		have = append(have, aws.ToString(ix.IndexName))
	}
	for _, ix := range def.GlobalSecondaryIndexes {
		if !slices.Contains(have, aws.ToString(ix.IndexName)) {
			return fmt.Errorf("table exists without index %q", aws.ToString(ix.IndexName))
		}
	}
	return nil
}

// enableTTL turns on TTL on the attribute ttl unless it is on already
// (DynamoDB rejects enabling it twice).
func enableTTL(ctx context.Context, client tablesAPI, table string) error {
	out, err := client.DescribeTimeToLive(ctx, &dynamodb.DescribeTimeToLiveInput{TableName: aws.String(table)})
	if err != nil {
		return err
	}
	if d := out.TimeToLiveDescription; d != nil {
		switch d.TimeToLiveStatus {
		case types.TimeToLiveStatusEnabled, types.TimeToLiveStatusEnabling:
			if aws.ToString(d.AttributeName) != "ttl" {
				return fmt.Errorf("ttl is on attribute %q, want \"ttl\"", aws.ToString(d.AttributeName))
			}
			return nil
		}
	}
	_, err = client.UpdateTimeToLive(ctx, &dynamodb.UpdateTimeToLiveInput{
		TableName:               aws.String(table),
		TimeToLiveSpecification: &types.TimeToLiveSpecification{AttributeName: aws.String("ttl"), Enabled: aws.Bool(true)},
	})
	return err
}

// unavailableCode reports the API error codes that mean "try again later".
func unavailableCode(code string) bool {
	switch code {
	case "ProvisionedThroughputExceededException", "ThrottlingException", "Throttling", "RequestLimitExceeded",
		"InternalServerError", "InternalFailure", "ServiceUnavailable", "ServiceUnavailableException":
		return true
	}
	return false
}

// classify wraps throttling, server-side and network errors with
// build.ErrUnavailable and returns other errors unchanged. A cancelled or
// timed-out ctx is the caller's decision, not the backend's state.
func classify(err error) error {
	if err == nil || errors.Is(err, build.ErrUnavailable) ||
		errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	if unavailable(err) {
		return fmt.Errorf("%w: %w", build.ErrUnavailable, err)
	}
	return err
}

func unavailable(err error) bool {
	var coded interface{ ErrorCode() string }
	if errors.As(err, &coded) && unavailableCode(coded.ErrorCode()) {
		return true
	}
	var status interface{ HTTPStatusCode() int }
	if errors.As(err, &status) && status.HTTPStatusCode() >= 500 {
		return true
	}
	// smithy-go's RequestSendError: the request never got an answer.
	var send interface{ ConnectionError() bool }
	if errors.As(err, &send) && send.ConnectionError() {
		return true
	}
	var netErr net.Error
	return errors.As(err, &netErr)
}

// conflicted reports a write that lost to a transaction in progress on the
// same item (someone else's: Decap writes no transactions): worth retrying.
func conflicted(err error) bool {
	var tce *types.TransactionConflictException
	return errors.As(err, &tce)
}

// conditionFailed reports a failed condition of a single-item write.
func conditionFailed(err error) (map[string]types.AttributeValue, bool) {
	var ccf *types.ConditionalCheckFailedException
	if errors.As(err, &ccf) {
		return ccf.Item, true
	}
	return nil, false
}

// itemGetter is the read storedItem makes.
type itemGetter interface {
	GetItem(ctx context.Context, in *dynamodb.GetItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.GetItemOutput, error)
}

// storedItem returns the item under key that a failed condition met: old,
// as the failure returned it (ReturnValuesOnConditionCheckFailure), or,
// where the answer holds none (as an emulator may give), the item read
// consistently; nil when there is none.
func storedItem(ctx context.Context, c itemGetter, table string, key, old map[string]types.AttributeValue) (map[string]types.AttributeValue, error) {
	if old != nil {
		return old, nil
	}
	res, err := c.GetItem(ctx, &dynamodb.GetItemInput{TableName: aws.String(table), Key: key, ConsistentRead: aws.Bool(true)})
	if err != nil {
		return nil, classify(err)
	}
	return res.Item, nil
}

// sameVersionAndDoc reports whether items a and b hold the same version
// and doc: a put whose first try landed meets, on the SDK's retry, the
// item it wrote.
func sameVersionAndDoc(a, b map[string]types.AttributeValue) bool {
	return sameAttr(a, b, "version") && sameAttr(a, b, "doc")
}

// sameAttr reports whether items a and b hold the same string or number in
// attribute name.
func sameAttr(a, b map[string]types.AttributeValue, name string) bool {
	if as, ok := a[name].(*types.AttributeValueMemberS); ok {
		bs, ok := b[name].(*types.AttributeValueMemberS)
		return ok && as.Value == bs.Value
	}
	an, aok := a[name].(*types.AttributeValueMemberN)
	bn, bok := b[name].(*types.AttributeValueMemberN)
	return aok && bok && an.Value == bn.Value
}

// pause sleeps a short, jittered, growing while before retry attempt n
// (n >= 1); it returns early with ctx's error.
func pause(ctx context.Context, n int) error {
	d := time.Duration(rand.Int64N(int64(2*time.Millisecond) << min(n, 6)))
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

func str(v string) types.AttributeValue { return &types.AttributeValueMemberS{Value: v} }

func num(v int64) types.AttributeValue {
	return &types.AttributeValueMemberN{Value: strconv.FormatInt(v, 10)}
}

// nanos stores a time as Unix nanoseconds; the zero time is 0.
func nanos(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

// fromNanos is the inverse of nanos, in UTC.
func fromNanos(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}

// ttlSeconds is the TTL attribute for an item that expires at t: whole
// epoch seconds, rounded up so that TTL never removes an item early.
func ttlSeconds(t time.Time) int64 {
	s := t.Unix()
	if t.Nanosecond() > 0 {
		s++
	}
	return s
}

// orNow returns now, or time.Now when now is nil.
func orNow(now func() time.Time) func() time.Time {
	if now == nil {
		return time.Now
	}
	return now
}
