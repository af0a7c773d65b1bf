package proctest_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/decap-ci/decap/internal/api"
	"github.com/decap-ci/decap/internal/build"
	"github.com/decap-ci/decap/internal/proctest"
)

// The tests' Record, decoded from the JSON the server sends (api.Build),
// holds what RecordOf makes of it: its JSON tags cannot drift from the
// API's.
func TestRecordDecodesAsAPIBuild(t *testing.T) {
	t.Parallel()
	at := time.Date(2026, 12, 6, 1, 2, 3, 0, time.UTC)
	exit := 3
	id := build.NewID(at)
	b := api.Build{
		ID: id, Number: 42, RebuildOf: id, Team: "t", Project: "p", Ref: "main", RefType: build.Branch, SHA: "abc",
		Trigger: build.TriggerPush, RequestedBy: "octocat", DeliveryID: "d", Status: build.StatusFailed, ExitCode: &exit,
		QueuedAt: at, StartedAt: at.Add(time.Second), FinishedAt: at.Add(2 * time.Second), LogKey: "l", ArtifactsKey: "a",
		PodName: "build-x", CatalogCommit: "c", Reason: "r", Attempt: 2, RetryOf: id, Infra: build.InfraUpload,
		SupersededBy: id, InfraRetries: 1, Supersedable: true, Secrets: []string{"S"}, SecretsWithheld: "w",
	}
	data, err := json.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	var got proctest.Record
	if err := json.Unmarshal(data, &got); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(proctest.RecordOf(b), got); diff != "" {
		t.Errorf("Record decoded from api.Build's JSON (-RecordOf +decoded):\n%s", diff)
	}
}

func TestHookAnswerDecodesAsAPIHookAnswer(t *testing.T) {
	t.Parallel()
	a := api.HookAnswer{Builds: []api.Queued{{ID: build.NewID(time.Now()), LockKey: "t/p/main"}}, Ignored: "i", Error: "e"}
	data, err := json.Marshal(a)
	if err != nil {
		t.Fatal(err)
	}
	var got proctest.HookAnswer
	if err := json.Unmarshal(data, &got); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(proctest.HookAnswerOf(a), got); diff != "" {
		t.Errorf("HookAnswer decoded from api.HookAnswer's JSON (-HookAnswerOf +decoded):\n%s", diff)
	}
}
