package awsdynamo

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/dynamodb/attributevalue"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/decap-ci/decap/internal/build"
)

// recordsAPI lists the DynamoDB calls Records makes.
type recordsAPI interface {
	PutItem(ctx context.Context, in *dynamodb.PutItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.PutItemOutput, error)
	UpdateItem(ctx context.Context, in *dynamodb.UpdateItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.UpdateItemOutput, error)
	GetItem(ctx context.Context, in *dynamodb.GetItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.GetItemOutput, error)
	Query(ctx context.Context, in *dynamodb.QueryInput, opts ...func(*dynamodb.Options)) (*dynamodb.QueryOutput, error)
	BatchGetItem(ctx context.Context, in *dynamodb.BatchGetItemInput, opts ...func(*dynamodb.Options)) (*dynamodb.BatchGetItemOutput, error)
}

// DefaultPageSize is the page size ListProject uses when limit <= 0.
const DefaultPageSize = 50

const (
	// markerPrefix starts the buildId of a project marker item; build IDs
	// that start with it are rejected.
	markerPrefix = "project#"
	markerKind   = "project"
	// runningValue and waitingValue are the running index's partitions:
	// runningPk of a running record, and of a queued or deferred one. A
	// final record has no runningPk and leaves the (sparse) index.
	runningValue = "running"
	waitingValue = "waiting"
	// queuedLayout makes QueuedAt sort as a string: fixed width, UTC.
	queuedLayout = "20060102T150405.000000000Z"
	// averageScanBound bounds how many of a project's newest records
	// AverageDuration reads looking for succeeded ones.
	averageScanBound = 1000
	queryPage        = 100
)

// recordItem is a build record as stored: the record's fields, plus the
// keys of the indexes (projectKey/queuedSort for by-project, runningPk =
// "running" or "waiting" for running) and rank for the conditional write. Times are RFC 3339 UTC with
// nanoseconds; zero times and empty fields are left out.
type recordItem struct {
	BuildID string `dynamodbav:"buildId"`
	// Number is given when the item is created, from its project marker's
	// counter, and never written again (see Records.Save).
	Number        int    `dynamodbav:"number,omitempty"`
	RebuildOf     string `dynamodbav:"rebuildOf,omitempty"`
	ProjectKey    string `dynamodbav:"projectKey"`
	QueuedSort    string `dynamodbav:"queuedSort"`
	RunningPK     string `dynamodbav:"runningPk,omitempty"`
	Rank          int    `dynamodbav:"rank"`
	Team          string `dynamodbav:"team"`
	Project       string `dynamodbav:"project"`
	Ref           string `dynamodbav:"ref,omitempty"`
	RefType       string `dynamodbav:"refType,omitempty"`
	SHA           string `dynamodbav:"sha,omitempty"`
	Trigger       string `dynamodbav:"trigger,omitempty"`
	RequestedBy   string `dynamodbav:"requestedBy,omitempty"`
	DeliveryID    string `dynamodbav:"deliveryId,omitempty"`
	Status        string `dynamodbav:"status"`
	ExitCode      *int   `dynamodbav:"exitCode,omitempty"`
	QueuedAt      string `dynamodbav:"queuedAt,omitempty"`
	StartedAt     string `dynamodbav:"startedAt,omitempty"`
	FinishedAt    string `dynamodbav:"finishedAt,omitempty"`
	DurationNanos int64  `dynamodbav:"durationNanos,omitempty"`
	LogKey        string `dynamodbav:"logKey,omitempty"`
	ArtifactsKey  string `dynamodbav:"artifactsKey,omitempty"`
	PodName       string `dynamodbav:"podName,omitempty"`
	CatalogCommit string `dynamodbav:"catalogCommit,omitempty"`
	Reason        string `dynamodbav:"reason,omitempty"`
	NextAttemptAt string `dynamodbav:"nextAttemptAt,omitempty"`
	// CancelRequestedAt is set while a cancel of the running build waits
	// for the reaper.
	CancelRequestedAt string `dynamodbav:"cancelRequestedAt,omitempty"`
	// UnfinishedKey is the lock key of a queued, deferred or running
	// record, the hash key of the sparse unfinished index; absent once the
	// record is final.
	UnfinishedKey string `dynamodbav:"unfinishedKey,omitempty"`
	Attempt       int    `dynamodbav:"attempt,omitempty"`
	RetryOf       string `dynamodbav:"retryOf,omitempty"`
	Infra         string `dynamodbav:"infra,omitempty"`
	SupersededBy  string `dynamodbav:"supersededBy,omitempty"`
	// LaunchingAt is set once a dispatcher begins to launch the waiting
	// record: EndWaiting's condition is that it is absent.
	LaunchingAt  string `dynamodbav:"launchingAt,omitempty"`
	InfraRetries int    `dynamodbav:"infraRetries,omitempty"`
	Supersedable bool   `dynamodbav:"supersedable,omitempty"`
	// Secrets and SecretsWithheld are part of the launch claim too.
	Secrets         []string `dynamodbav:"secrets,omitempty"`
	SecretsWithheld string   `dynamodbav:"secretsWithheld,omitempty"`
	// PullRequest is a pull request build's pull request.
	PullRequest *pullRequestItem `dynamodbav:"pullRequest,omitempty"`
	// WriteToken is the token of the Save or EndWaiting call that wrote
	// the item last (see Records.Save).
	WriteToken string `dynamodbav:"writeToken,omitempty"`
	// Kind is set only on project markers.
	Kind string `dynamodbav:"kind,omitempty"`
}

// pullRequestItem is a record's build.PullRequest, a map attribute.
type pullRequestItem struct {
	Number     int    `dynamodbav:"number"`
	BaseRef    string `dynamodbav:"baseRef"`
	HeadRef    string `dynamodbav:"headRef"`
	HeadRepo   string `dynamodbav:"headRepo,omitempty"`
	HeadSHA    string `dynamodbav:"headSha"`
	Trusted    bool   `dynamodbav:"trusted"`
	ApprovedBy string `dynamodbav:"approvedBy,omitempty"`
}

// markerItem says that a project has records; the projects index lists
// them. LastNumber is the last build number given in the project (an
// atomic counter, see Records.Save), NumberedBy the token of the Save
// that took it.
type markerItem struct {
	BuildID    string `dynamodbav:"buildId"`
	Kind       string `dynamodbav:"kind"`
	Team       string `dynamodbav:"team"`
	Project    string `dynamodbav:"project"`
	LastNumber int    `dynamodbav:"lastNumber,omitempty"`
	NumberedBy string `dynamodbav:"numberedBy,omitempty"`
}

// Attribute names that Save treats apart.
const (
	attrBuildID     = "buildId"
	attrNumber      = "number"
	attrKind        = "kind"
	attrLastNumber  = "lastNumber"
	attrNumberedBy  = "numberedBy"
	attrLaunchingAt = "launchingAt"
	attrWriteToken  = "writeToken"
)

// claimAttributes are a dispatcher's launch claim (build.Record.Launching),
// which a replace without one leaves as stored.
var claimAttributes = []string{attrLaunchingAt, "infraRetries", "supersedable", "secrets", "secretsWithheld"}

// recordAttributes returns the names of the attributes a record item may
// have (recordItem's), except its key, its number and the marker's kind:
// the attributes a replace sets or removes.
func recordAttributes() []string {
	t := reflect.TypeFor[recordItem]()
	names := make([]string, 0, t.NumField())
	for i := range t.NumField() {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("dynamodbav"), ",")
		if name != attrBuildID && name != attrNumber && name != attrKind {
			names = append(names, name)
		}
	}
	return names
}

func itemFor(r build.Record) recordItem {
	it := recordItem{
		BuildID:       string(r.BuildID),
		Number:        r.Number,
		RebuildOf:     string(r.RebuildOf),
		ProjectKey:    r.ProjectKey(),
		QueuedSort:    position{queued: r.QueuedAt, id: r.BuildID}.sortKey(),
		Rank:          r.Status.Rank(),
		Team:          r.Team,
		Project:       r.Project,
		Ref:           r.Ref,
		RefType:       string(r.RefType),
		SHA:           r.SHA,
		Trigger:       string(r.Trigger),
		RequestedBy:   r.RequestedBy,
		DeliveryID:    r.DeliveryID,
		Status:        string(r.Status),
		ExitCode:      r.ExitCode,
		QueuedAt:      formatTime(r.QueuedAt),
		StartedAt:     formatTime(r.StartedAt),
		FinishedAt:    formatTime(r.FinishedAt),
		DurationNanos: int64(r.Duration()),
		LogKey:        r.LogKey,
		ArtifactsKey:  r.ArtifactsKey,
		PodName:       r.PodName,
		CatalogCommit: r.CatalogCommit,
		Reason:        r.Reason,
		NextAttemptAt: formatTime(r.NextAttemptAt),

		CancelRequestedAt: formatTime(r.CancelRequestedAt),
		Attempt:           r.Attempt,
		RetryOf:           string(r.RetryOf),
		Infra:             string(r.Infra),
		SupersededBy:      string(r.SupersededBy),
		LaunchingAt:       formatTime(r.LaunchingAt),
		InfraRetries:      r.InfraRetries,
		Supersedable:      r.Supersedable,
		Secrets:           r.Secrets,
		SecretsWithheld:   r.SecretsWithheld,
	}
	if p := r.PullRequest; p != nil {
		it.PullRequest = &pullRequestItem{Number: p.Number, BaseRef: p.BaseRef, HeadRef: p.HeadRef, HeadRepo: p.HeadRepo,
			HeadSHA: p.HeadSHA, Trusted: p.Trusted, ApprovedBy: p.ApprovedBy}
	}
	switch r.Status {
	case build.StatusRunning:
		it.RunningPK = runningValue
	case build.StatusQueued, build.StatusDeferred:
		it.RunningPK = waitingValue
	}
	if !r.Status.Final() {
		it.UnfinishedKey = r.LockKey()
	}
	return it
}

func (it recordItem) record() (build.Record, error) {
	r := build.Record{
		BuildID:         build.ID(it.BuildID),
		Number:          it.Number,
		RebuildOf:       build.ID(it.RebuildOf),
		Team:            it.Team,
		Project:         it.Project,
		Ref:             it.Ref,
		RefType:         build.RefType(it.RefType),
		SHA:             it.SHA,
		Trigger:         build.Trigger(it.Trigger),
		RequestedBy:     it.RequestedBy,
		DeliveryID:      it.DeliveryID,
		Status:          build.Status(it.Status),
		ExitCode:        it.ExitCode,
		LogKey:          it.LogKey,
		ArtifactsKey:    it.ArtifactsKey,
		PodName:         it.PodName,
		CatalogCommit:   it.CatalogCommit,
		Reason:          it.Reason,
		Attempt:         it.Attempt,
		RetryOf:         build.ID(it.RetryOf),
		Infra:           build.InfraCause(it.Infra),
		SupersededBy:    build.ID(it.SupersededBy),
		InfraRetries:    it.InfraRetries,
		Supersedable:    it.Supersedable,
		Secrets:         it.Secrets,
		SecretsWithheld: it.SecretsWithheld,
	}
	if p := it.PullRequest; p != nil {
		r.PullRequest = &build.PullRequest{Number: p.Number, BaseRef: p.BaseRef, HeadRef: p.HeadRef, HeadRepo: p.HeadRepo,
			HeadSHA: p.HeadSHA, Trusted: p.Trusted, ApprovedBy: p.ApprovedBy}
	}
	for _, f := range []struct {
		s string
		t *time.Time
	}{
		{it.QueuedAt, &r.QueuedAt},
		{it.StartedAt, &r.StartedAt},
		{it.FinishedAt, &r.FinishedAt},
		{it.NextAttemptAt, &r.NextAttemptAt},
		{it.CancelRequestedAt, &r.CancelRequestedAt},
		{it.LaunchingAt, &r.LaunchingAt},
	} {
		t, err := parseTime(f.s)
		if err != nil {
			return build.Record{}, fmt.Errorf("decode record %s: %w", it.BuildID, err)
		}
		*f.t = t
	}
	return r, nil
}

func formatTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339Nano)
}

func parseTime(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, err
	}
	return t.UTC(), nil
}

// Records stores build records (buildtest.Records) in the builds table, one
// item per build, plus one marker item per project for Projects. It is safe
// for concurrent use.
//
// Get reads consistently. ListProject, Running, Waiting, AverageDuration and
// Projects query global secondary indexes, which DynamoDB updates asynchronously: a
// record saved a moment ago may be missing from them, or show its previous
// status, for a short while.
type Records struct {
	client recordsAPI
	table  string
	// events is set by WithEvents: every change is written with its
	// event (outbox.go).
	events bool
	// mu guards written, which is closed, and replaced, at every write
	// with an event: it wakes this process's waiting Pending calls; and
	// wroteAt, the time of the last such write (Pending polls the index
	// for a while after it, as the index lags the table).
	mu      sync.Mutex
	written chan struct{}
	wroteAt time.Time
}

// NewRecords returns the build records stored in table. Records needs no
// clock: nothing in it expires.
func NewRecords(client recordsAPI, table string) *Records {
	return &Records{client: client, table: table}
}

// Save writes r, creating or replacing the stored record, unless the stored
// record's status ranks higher than r's or is final: then build.ErrConflict
// and nothing changes. A record without build ID, with an ID that starts
// with "project#", or with an unknown status gives build.ErrInvalid.
//
// A create first takes the project's next number from the counter on its
// marker item (UpdateItem ADD, atomic whatever the number of writers; it
// also creates the marker the projects index lists), then puts the record
// on condition that it does not exist. A replace is an UpdateItem, on
// condition of the stored rank, that sets every attribute of r but the key
// and the number and removes those r leaves empty: the stored number stays.
// Save tries a create first for a queued record without a number (what
// ingest writes for a new request), a replace first otherwise, and the
// other when the item says so. A create that loses a race for the record
// to another writer leaves its number unused: numbers may have gaps, never
// duplicates. The marker write and the record write are not one
// transaction on purpose: every build of a project would then conflict on
// the marker.
//
// The SDK retries a request whose answer was lost or failed (a timeout,
// a 5xx, a response failing its checksum); when its first try landed,
// the retry's condition fails on the very item that try wrote. So every
// write of a Save carries a token of the call (the record's writeToken,
// the marker's numberedBy): a failed condition on an item that bears it
// is the call's own write, a success, not a conflict, and a retried count
// takes no second number. Another writer's item stays a conflict.
//
// With events on (WithEvents) a Save reads the stored record first and
// writes it, with its event, in one conditional PutItem (see outbox.go);
// a Save that changes nothing writes nothing. A record that keeps
// changing under it for maxWriteAttempts tries gives build.ErrUnavailable.
func (s *Records) Save(ctx context.Context, r build.Record) error {
	if r.BuildID == "" || !r.Status.Valid() || strings.HasPrefix(string(r.BuildID), markerPrefix) || strings.HasPrefix(string(r.BuildID), pullPrefix) {
		return fmt.Errorf("save record %s: %w: empty or reserved build id, or unknown status %q", r.BuildID, build.ErrInvalid, r.Status)
	}
	if s.events {
		if err := s.saveWithEvent(ctx, r); err != nil {
			return fmt.Errorf("save record %s: %w", r.BuildID, err)
		}
		return nil
	}
	create := r.Number == 0 && r.Status == build.StatusQueued
	token := rand.Text()
	var err error
	// At most create, replace, create (or replace, create, replace): a
	// record is never deleted, so the second switch means an item of the
	// ID that is no record (below).
	for range 3 {
		if create {
			err = s.create(ctx, r, token)
		} else {
			err = s.replace(ctx, r, token)
		}
		if !errors.Is(err, errRecordExists) && !errors.Is(err, errNoRecord) {
			break
		}
		create = errors.Is(err, errNoRecord)
	}
	if errors.Is(err, errRecordExists) || errors.Is(err, errNoRecord) {
		// An item of the ID exists, but not as a record.
		err = fmt.Errorf("%w: stored status ranks higher or is final, new status %s", build.ErrConflict, r.Status)
	}
	if err != nil {
		return fmt.Errorf("save record %s: %w", r.BuildID, err)
	}
	return nil
}

// Why one way of saving a record gives way to the other.
var (
	errRecordExists = errors.New("record exists")
	errNoRecord     = errors.New("no record")
)

// create numbers r and puts it, bearing token, if no record of its ID
// exists or the one that does bears token (this put's first try landed);
// errRecordExists if another does.
func (s *Records) create(ctx context.Context, r build.Record, token string) error {
	n, err := s.nextNumber(ctx, r.Team, r.Project, token)
	if err != nil {
		return err
	}
	r.Number = n
	it := itemFor(r)
	it.WriteToken = token
	item, err := attributevalue.MarshalMap(it)
	if err != nil {
		return err
	}
	_, err = s.client.PutItem(ctx, &dynamodb.PutItemInput{
		TableName:                           aws.String(s.table),
		Item:                                item,
		ConditionExpression:                 aws.String("attribute_not_exists(#id)"),
		ExpressionAttributeNames:            map[string]string{"#id": attrBuildID},
		ReturnValuesOnConditionCheckFailure: types.ReturnValuesOnConditionCheckFailureAllOld,
	})
	if old, ok := conditionFailed(err); ok {
		stored, err := s.stored(ctx, string(r.BuildID), old)
		if err != nil {
			return err
		}
		if bears(stored, attrWriteToken, token) {
			return nil
		}
		return errRecordExists
	}
	return classify(err)
}

// nextNumber counts the project's builds on in its marker item, creating
// the marker if needed, and returns the number counted. The count is
// conditional on the marker not bearing token: a failed condition means
// this call's first try landed (the SDK retried it), and the number that
// try took is the marker's still.
func (s *Records) nextNumber(ctx context.Context, team, project, token string) (int, error) {
	key := markerPrefix + build.ProjectKey(team, project)
	in := &dynamodb.UpdateItemInput{
		TableName:           aws.String(s.table),
		Key:                 map[string]types.AttributeValue{attrBuildID: str(key)},
		UpdateExpression:    aws.String("SET #kind = :kind, #team = :team, #project = :project, #by = :by ADD #last :one"),
		ConditionExpression: aws.String("attribute_not_exists(#by) OR #by <> :by"),
		ExpressionAttributeNames: map[string]string{
			"#kind": attrKind, "#team": "team", "#project": "project", "#last": attrLastNumber, "#by": attrNumberedBy,
		},
		ExpressionAttributeValues: map[string]types.AttributeValue{
			":kind": str(markerKind), ":team": str(team), ":project": str(project), ":one": num(1), ":by": str(token),
		},
		ReturnValues:                        types.ReturnValueUpdatedNew,
		ReturnValuesOnConditionCheckFailure: types.ReturnValuesOnConditionCheckFailureAllOld,
	}
	// Twice at most: where the failed condition returns no marker (as an
	// emulator may), the read may find another Save's count since; this
	// call's number is then lost (a gap), and it counts once more.
	var counted map[string]types.AttributeValue
	for range 2 {
		out, err := s.client.UpdateItem(ctx, in)
		if old, ok := conditionFailed(err); ok {
			if old, err = s.stored(ctx, key, old); err != nil {
				return 0, fmt.Errorf("number the build: %w", err)
			}
			if !bears(old, attrNumberedBy, token) {
				continue
			}
			counted = old
			break
		}
		if err != nil {
			return 0, fmt.Errorf("number the build: %w", classify(err))
		}
		counted = out.Attributes
		break
	}
	var m markerItem
	if err := attributevalue.UnmarshalMap(counted, &m); err != nil || m.LastNumber < 1 {
		return 0, fmt.Errorf("number the build: the counter of %s answered %v (%v)", build.ProjectKey(team, project), counted[attrLastNumber], err)
	}
	return m.LastNumber, nil
}

// replace writes r, bearing token, over its stored record, keeping the
// stored number, on condition of the stored rank: errNoRecord when there
// is no stored record, build.ErrConflict when its rank refuses r, nil
// when the stored record bears token (this update's first try landed).
func (s *Records) replace(ctx context.Context, r build.Record, token string) error {
	in, err := s.replaceInput(r, token)
	if err != nil {
		return err
	}
	_, err = s.client.UpdateItem(ctx, in)
	if old, ok := conditionFailed(err); ok {
		item, err := s.stored(ctx, string(r.BuildID), old)
		if err != nil {
			return err
		}
		var stored recordItem
		if item == nil || attributevalue.UnmarshalMap(item, &stored) != nil || stored.Status == "" {
			return errNoRecord
		}
		if stored.WriteToken == token {
			return nil
		}
		return fmt.Errorf("%w: stored status %s, new status %s", build.ErrConflict, stored.Status, r.Status)
	}
	return classify(err)
}

// stored returns the record item under key that a failed condition met
// (storedItem).
func (s *Records) stored(ctx context.Context, key string, old map[string]types.AttributeValue) (map[string]types.AttributeValue, error) {
	return storedItem(ctx, s.client, s.table, map[string]types.AttributeValue{attrBuildID: str(key)}, old)
}

// bears reports whether item's string attribute attr is token.
func bears(item map[string]types.AttributeValue, attr, token string) bool {
	v, ok := item[attr].(*types.AttributeValueMemberS)
	return ok && v.Value == token
}

// replaceInput is replace's UpdateItem: SET of r's attributes and
// writeToken = token, REMOVE of the record attributes r leaves empty,
// every name and value through a placeholder (status, number and others
// are reserved words). A record without a launch claim leaves the stored
// claim's attributes alone (build.Record.KeepClaim).
func (s *Records) replaceInput(r build.Record, token string) (*dynamodb.UpdateItemInput, error) {
	it := itemFor(r)
	it.WriteToken = token
	item, err := attributevalue.MarshalMap(it)
	if err != nil {
		return nil, err
	}
	names := map[string]string{"#" + attrBuildID: attrBuildID}
	values := map[string]types.AttributeValue{":final": num(int64(build.StatusSucceeded.Rank()))}
	var set, remove []string
	for _, a := range recordAttributes() {
		if r.LaunchingAt.IsZero() && slices.Contains(claimAttributes, a) {
			continue // the stored claim stays (build.Record.KeepClaim)
		}
		names["#"+a] = a
		if v, ok := item[a]; ok {
			set = append(set, "#"+a+" = :"+a)
			values[":"+a] = v
		} else {
			remove = append(remove, "#"+a)
		}
	}
	update := "SET " + strings.Join(set, ", ")
	if len(remove) > 0 {
		update += " REMOVE " + strings.Join(remove, ", ")
	}
	return &dynamodb.UpdateItemInput{
		TableName:        aws.String(s.table),
		Key:              map[string]types.AttributeValue{attrBuildID: str(string(r.BuildID))},
		UpdateExpression: aws.String(update),
		// :rank is the new rank, set above.
		ConditionExpression:                 aws.String("attribute_exists(#buildId) AND #rank < :final AND #rank <= :rank"),
		ExpressionAttributeNames:            names,
		ExpressionAttributeValues:           values,
		ReturnValuesOnConditionCheckFailure: types.ReturnValuesOnConditionCheckFailureAllOld,
	}, nil
}

// Get returns one record, read consistently; build.ErrNotFound if none.
func (s *Records) Get(ctx context.Context, id build.ID) (build.Record, error) {
	res, err := s.client.GetItem(ctx, &dynamodb.GetItemInput{
		TableName:      aws.String(s.table),
		Key:            map[string]types.AttributeValue{"buildId": str(string(id))},
		ConsistentRead: aws.Bool(true),
	})
	if err != nil {
		return build.Record{}, fmt.Errorf("get record %s: %w", id, classify(err))
	}
	var it recordItem
	if res.Item != nil {
		if err := attributevalue.UnmarshalMap(res.Item, &it); err != nil {
			return build.Record{}, fmt.Errorf("get record %s: decode: %w", id, err)
		}
	}
	if res.Item == nil || it.Kind != "" {
		return build.Record{}, fmt.Errorf("get record %s: %w", id, build.ErrNotFound)
	}
	r, err := it.record()
	if err != nil {
		return build.Record{}, fmt.Errorf("get record %s: %w", id, err)
	}
	return r, nil
}

// ListProject returns a project's records newest first (by QueuedAt, then
// BuildID), at most limit (DefaultPageSize when limit <= 0), starting after
// cursor ("" = from the newest), and the cursor of the next page ("" when
// there is none). A malformed cursor gives build.ErrInvalid.
func (s *Records) ListProject(ctx context.Context, team, project string, limit int, cursor string) ([]build.Record, string, error) {
	pk := build.ProjectKey(team, project)
	if limit <= 0 {
		limit = DefaultPageSize
	}
	in := &dynamodb.QueryInput{
		TableName:                 aws.String(s.table),
		IndexName:                 aws.String(indexByProject),
		KeyConditionExpression:    aws.String("#pk = :pk"),
		ExpressionAttributeNames:  map[string]string{"#pk": "projectKey"},
		ExpressionAttributeValues: map[string]types.AttributeValue{":pk": str(pk)},
		ScanIndexForward:          aws.Bool(false),
	}
	if cursor != "" {
		after, err := parseCursor(cursor)
		if err != nil {
			return nil, "", fmt.Errorf("list builds of %s: %w", pk, err)
		}
		in.KeyConditionExpression = aws.String("#pk = :pk AND #sort < :after")
		in.ExpressionAttributeNames["#sort"] = "queuedSort"
		in.ExpressionAttributeValues[":after"] = str(after.sortKey())
	}
	// One more than a page tells whether a next page exists.
	recs := []build.Record{}
	for {
		in.Limit = aws.Int32(int32(min(limit+1-len(recs), queryPage)))
		out, err := s.client.Query(ctx, in)
		if err != nil {
			return nil, "", fmt.Errorf("list builds of %s: %w", pk, classify(err))
		}
		page, err := decodeRecords(out.Items)
		if err != nil {
			return nil, "", fmt.Errorf("list builds of %s: %w", pk, err)
		}
		recs = append(recs, page...)
		if len(recs) > limit || len(out.LastEvaluatedKey) == 0 {
			break
		}
		in.ExclusiveStartKey = out.LastEvaluatedKey
	}
	if len(recs) <= limit {
		return recs, "", nil
	}
	recs = recs[:limit]
	last := recs[limit-1]
	return recs, position{queued: last.QueuedAt, id: last.BuildID}.cursor(), nil
}

// Running returns every record with status running, ordered by build ID.
func (s *Records) Running(ctx context.Context) ([]build.Record, error) {
	out, err := s.partition(ctx, runningValue, build.StatusRunning)
	if err != nil {
		return nil, fmt.Errorf("list running builds: %w", err)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].BuildID < out[j].BuildID })
	return out, nil
}

// Waiting returns a page of the records with status queued or deferred,
// oldest first (by QueuedAt, then BuildID), and how many there are. It
// reads the running index's "waiting" partition, never the whole table;
// the index orders the partition by build ID, not by QueuedAt, so it reads
// all of it, but keeps no more than about twice offset+limit records at a
// time.
func (s *Records) Waiting(ctx context.Context, offset, limit int) ([]build.Record, int, error) {
	if offset < 0 {
		return nil, 0, fmt.Errorf("list waiting builds: %w: offset %d", build.ErrInvalid, offset)
	}
	keep := 0 // all
	if limit > 0 {
		keep = offset + limit
	}
	var best []build.Record
	oldestFirst := func() { sort.Slice(best, func(i, j int) bool { return best[i].Older(best[j]) }) }
	total := 0
	err := s.eachInPartition(ctx, waitingValue, []build.Status{build.StatusQueued, build.StatusDeferred}, func(r build.Record) {
		total++
		best = append(best, r)
		if keep > 0 && len(best) >= 2*keep+queryPage {
			oldestFirst()
			best = best[:keep]
		}
	})
	if err != nil {
		return nil, 0, fmt.Errorf("list waiting builds: %w", err)
	}
	oldestFirst()
	return build.PageOf(best, offset, limit), total, nil
}

// partition returns the records in the running index under runningPk = pk
// whose status is one of statuses: the index lags the table, so it may
// still hold a record whose status moved on.
func (s *Records) partition(ctx context.Context, pk string, statuses ...build.Status) ([]build.Record, error) {
	out := []build.Record{}
	err := s.eachInPartition(ctx, pk, statuses, func(r build.Record) { out = append(out, r) })
	return out, err
}

// eachInPartition calls fn with each record of partition in the running index
// under runningPk = pk whose status is one of statuses, a query page at a
// time.
func (s *Records) eachInPartition(ctx context.Context, pk string, statuses []build.Status, fn func(build.Record)) error {
	in := &dynamodb.QueryInput{
		TableName:                 aws.String(s.table),
		IndexName:                 aws.String(indexRunning),
		KeyConditionExpression:    aws.String("#r = :r"),
		ExpressionAttributeNames:  map[string]string{"#r": "runningPk"},
		ExpressionAttributeValues: map[string]types.AttributeValue{":r": str(pk)},
	}
	for pages := dynamodb.NewQueryPaginator(s.client, in); pages.HasMorePages(); {
		page, err := pages.NextPage(ctx)
		if err != nil {
			return classify(err)
		}
		for _, av := range page.Items {
			var it recordItem
			if err := attributevalue.UnmarshalMap(av, &it); err != nil {
				return fmt.Errorf("decode: %w", err)
			}
			if !slices.Contains(statuses, build.Status(it.Status)) {
				continue
			}
			r, err := it.record()
			if err != nil {
				return err
			}
			fn(r)
		}
	}
	return nil
}

// AverageDuration averages the durations of the project's last n succeeded
// builds (newest by QueuedAt, then BuildID); it returns how many it averaged
// (0: no figure). It reads at most the project's newest 1000 records, so a
// project whose last 1000 builds did not succeed has no figure.
func (s *Records) AverageDuration(ctx context.Context, team, project string, n int) (time.Duration, int, error) {
	if n <= 0 {
		return 0, 0, nil
	}
	pk := build.ProjectKey(team, project)
	in := &dynamodb.QueryInput{
		TableName:              aws.String(s.table),
		IndexName:              aws.String(indexByProject),
		KeyConditionExpression: aws.String("#pk = :pk"),
		FilterExpression:       aws.String("#status = :succeeded"),
		ProjectionExpression:   aws.String("#started, #finished"),
		ExpressionAttributeNames: map[string]string{
			"#pk": "projectKey", "#status": "status", "#started": "startedAt", "#finished": "finishedAt",
		},
		ExpressionAttributeValues: map[string]types.AttributeValue{
			":pk": str(pk), ":succeeded": str(string(build.StatusSucceeded)),
		},
		ScanIndexForward: aws.Bool(false),
		Limit:            aws.Int32(queryPage),
	}
	var sum time.Duration
	count, scanned := 0, 0
	for count < n && scanned < averageScanBound {
		out, err := s.client.Query(ctx, in)
		if err != nil {
			return 0, 0, fmt.Errorf("average duration of %s: %w", pk, classify(err))
		}
		scanned += int(out.ScannedCount)
		for _, av := range out.Items {
			if count == n {
				break
			}
			var it recordItem
			if err := attributevalue.UnmarshalMap(av, &it); err != nil {
				return 0, 0, fmt.Errorf("average duration of %s: decode: %w", pk, err)
			}
			started, err1 := parseTime(it.StartedAt)
			finished, err2 := parseTime(it.FinishedAt)
			if err1 != nil || err2 != nil {
				return 0, 0, fmt.Errorf("average duration of %s: bad time in a record", pk)
			}
			sum += build.Record{StartedAt: started, FinishedAt: finished}.Duration()
			count++
		}
		if len(out.LastEvaluatedKey) == 0 || out.ScannedCount == 0 {
			break
		}
		in.ExclusiveStartKey = out.LastEvaluatedKey
	}
	if count == 0 {
		return 0, 0, nil
	}
	return sum / time.Duration(count), count, nil
}

// Projects returns the distinct project keys ("team/project") that have
// records, sorted as strings.
func (s *Records) Projects(ctx context.Context) ([]string, error) {
	items, err := s.queryAll(ctx, &dynamodb.QueryInput{
		TableName:                 aws.String(s.table),
		IndexName:                 aws.String(indexProjects),
		KeyConditionExpression:    aws.String("#k = :k"),
		ProjectionExpression:      aws.String("#id"),
		ExpressionAttributeNames:  map[string]string{"#k": "kind", "#id": "buildId"},
		ExpressionAttributeValues: map[string]types.AttributeValue{":k": str(markerKind)},
	})
	if err != nil {
		return nil, fmt.Errorf("list projects: %w", err)
	}
	out := []string{}
	for _, av := range items {
		if id, ok := av["buildId"].(*types.AttributeValueMemberS); ok && strings.HasPrefix(id.Value, markerPrefix) {
			out = append(out, strings.TrimPrefix(id.Value, markerPrefix))
		}
	}
	sort.Strings(out)
	return out, nil
}

// queryAll returns the items of every page of a query.
func (s *Records) queryAll(ctx context.Context, in *dynamodb.QueryInput) ([]map[string]types.AttributeValue, error) {
	var items []map[string]types.AttributeValue
	for pages := dynamodb.NewQueryPaginator(s.client, in); pages.HasMorePages(); {
		page, err := pages.NextPage(ctx)
		if err != nil {
			return nil, classify(err)
		}
		items = append(items, page.Items...)
	}
	return items, nil
}

func decodeRecords(items []map[string]types.AttributeValue) ([]build.Record, error) {
	out := make([]build.Record, 0, len(items))
	for _, av := range items {
		var it recordItem
		if err := attributevalue.UnmarshalMap(av, &it); err != nil {
			return nil, fmt.Errorf("decode record: %w", err)
		}
		r, err := it.record()
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, nil
}

// position is a record's place in a project's history: QueuedAt, then
// BuildID.
type position struct {
	queued time.Time
	id     build.ID
}

// sortKey is the by-project range key: QueuedAt, fixed width in UTC, "#",
// BuildID. Strings sort as positions do.
func (p position) sortKey() string {
	return p.queued.UTC().Format(queuedLayout) + "#" + string(p.id)
}

// cursor encodes p opaquely for API clients.
func (p position) cursor() string {
	return base64.RawURLEncoding.EncodeToString([]byte(p.sortKey()))
}

// parseCursor decodes a cursor made by position.cursor; build.ErrInvalid if
// s is not one.
func parseCursor(s string) (position, error) {
	bad := fmt.Errorf("%w: malformed cursor", build.ErrInvalid)
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return position{}, bad
	}
	at, id, ok := strings.Cut(string(b), "#")
	if !ok || id == "" || strings.ContainsFunc(id, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		return position{}, bad
	}
	t, err := time.Parse(queuedLayout, at)
	if err != nil || t.Format(queuedLayout) != at {
		return position{}, bad
	}
	return position{queued: t, id: build.ID(id)}, nil
}
