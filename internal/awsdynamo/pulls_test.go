package awsdynamo_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/decap-ci/decap/internal/awsdynamo"
	"github.com/decap-ci/decap/internal/build"
	"github.com/decap-ci/decap/internal/buildtest"
)

func TestPullRequests(t *testing.T) {
	t.Parallel()
	client := newClient(t)
	buildtest.TestPullRequests(t, func(t *testing.T) build.PullRequests {
		return awsdynamo.NewPullRequests(client, newTables(t, client, buildsOnly).Builds)
	})
}

// TestPullRequestsBesideRecords checks that the pull requests' items in
// the builds table stay out of every records query, and the records out
// of the pull requests' list.
func TestPullRequestsBesideRecords(t *testing.T) {
	t.Parallel()
	client := newClient(t)
	table := newTables(t, client, buildsOnly).Builds
	pulls := awsdynamo.NewPullRequests(client, table)
	recs := awsdynamo.NewRecords(client, table)
	ctx := t.Context()
	if err := pulls.Put(ctx, buildtest.SamplePull("team", "project", 3)); err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 11, 27, 3, 4, 5, 0, time.UTC)
	req := build.Request{V: 1, BuildID: build.NewID(now), Team: "team", Project: "project", Ref: "main", RefType: build.Branch,
		Trigger: build.TriggerPush, RequestedAt: now}
	if err := recs.Save(ctx, build.RecordFor(req)); err != nil {
		t.Fatal(err)
	}
	list, _, err := recs.ListProject(ctx, "team", "project", 0, "")
	if err != nil || len(list) != 1 || list[0].BuildID != req.BuildID {
		t.Errorf("ListProject() = %v, %v; want the one record", list, err)
	}
	if projects, err := recs.Projects(ctx); err != nil || len(projects) != 1 || projects[0] != "team/project" {
		t.Errorf("Projects() = %v, %v; want [team/project]", projects, err)
	}
	if waiting, _, err := recs.Waiting(ctx, 0, 0); err != nil || len(waiting) != 1 {
		t.Errorf("Waiting() = %v, %v; want the one record", waiting, err)
	}
	open, err := pulls.ListOpen(ctx, "team", "project")
	if err != nil || len(open) != 1 || open[0].Number != 3 {
		t.Errorf("ListOpen() = %v, %v; want pull request 3", open, err)
	}
}

// TestRecordsRefusePullKeys checks that no record can take a pull
// request's item in the builds table: a build ID such as
// "pull#team/project/3" is refused before any call.
func TestRecordsRefusePullKeys(t *testing.T) {
	t.Parallel()
	recs := awsdynamo.NewRecords(nil, "decap-builds")
	rec := build.Record{BuildID: "pull#team/project/3", Team: "team", Project: "project", Ref: "main", RefType: build.Branch,
		Trigger: build.TriggerAPI, Status: build.StatusQueued, QueuedAt: time.Now()}
	if err := recs.Save(t.Context(), rec); !errors.Is(err, build.ErrInvalid) {
		t.Errorf("Save() of a record with a pull request's key: %v, want ErrInvalid", err)
	}
}

// TestPullPutRetriedAfterItLanded checks a put the SDK retried after its
// first try landed but its answer was lost: the retry's condition fails
// on the very item it wrote, which is success, not a conflict; another
// writer's item stays a conflict.
func TestPullPutRetriedAfterItLanded(t *testing.T) {
	t.Parallel()
	p := buildtest.SamplePull("team", "project", 3)
	for name, store := range map[string]*retriedPuts{"with the old item": {returnOld: true}, "without it": {}} {
		s := awsdynamo.NewPullRequests(store, "decap-builds")
		if err := s.Put(t.Context(), p); err != nil {
			t.Errorf("%s: Put() whose first try landed: %v, want nil", name, err)
		}
		other := p
		other.Title = "another writer's"
		if err := s.Put(t.Context(), other); !errors.Is(err, build.ErrConflict) {
			t.Errorf("%s: Put() over another item of the version: %v, want ErrConflict", name, err)
		}
	}
}

// retriedPuts is one item of a table whose first PutItem lands but is
// answered as the SDK's retry would be: the condition failed on the
// item just written.
type retriedPuts struct {
	returnOld bool
	item      map[string]types.AttributeValue
}

func (d *retriedPuts) PutItem(_ context.Context, in *dynamodb.PutItemInput, _ ...func(*dynamodb.Options)) (*dynamodb.PutItemOutput, error) {
	if d.item == nil {
		d.item = in.Item
	}
	e := &types.ConditionalCheckFailedException{}
	if d.returnOld {
		e.Item = d.item
	}
	return nil, e
}

func (d *retriedPuts) GetItem(_ context.Context, _ *dynamodb.GetItemInput, _ ...func(*dynamodb.Options)) (*dynamodb.GetItemOutput, error) {
	return &dynamodb.GetItemOutput{Item: d.item}, nil
}

func (d *retriedPuts) Query(context.Context, *dynamodb.QueryInput, ...func(*dynamodb.Options)) (*dynamodb.QueryOutput, error) {
	return &dynamodb.QueryOutput{}, nil
}
