package awsdynamo_test

import (
	"errors"
	"testing"
	"time"

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
	if waiting, err := recs.Waiting(ctx); err != nil || len(waiting) != 1 {
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
