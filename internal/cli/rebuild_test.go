package cli_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/decap-ci/decap/internal/build"
	"github.com/decap-ci/decap/internal/cli"
)

func TestRebuild(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.requireRoute(t, http.MethodPost, "/api/v1/builds/"+string(build.NewID(time.Now()))+"/rebuild")
	ctx := context.Background()
	first := f.run(t, nil, "build", "decap-ci/hello", "main", "--sha", "6113728f27ae82c7")
	first.want(t, 0, "")
	orig := build.ID(strings.TrimSpace(first.stdout))
	f.finish(t, orig, build.StatusFailed, 1, "flaky\n")

	r := f.run(t, nil, "rebuild", string(orig))
	r.want(t, 0, "")
	id, err := build.ParseID(strings.TrimSpace(r.stdout))
	if err != nil || id == orig {
		t.Fatalf("rebuild printed %q, want the new build's ID alone", r.stdout)
	}
	rec, err := f.records.Get(ctx, id)
	if err != nil || rec.RebuildOf != orig || rec.Ref != "main" || rec.SHA != "6113728f27ae82c7" || rec.Number != 2 || rec.Trigger != build.TriggerAPI {
		t.Fatalf("record of the rebuild = %+v, %v; want #2, main at 6113728f27ae82c7, a rebuild of %s", rec, err, orig)
	}

	// The numbers show beside the IDs.
	r = f.run(t, nil, "builds", "decap-ci/hello")
	r.want(t, 0, "")
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(lines) != 3 || !strings.Contains(lines[0], "ID  ") || !strings.HasPrefix(lines[1], string(id)+"  #2 ") || !strings.HasPrefix(lines[2], string(orig)+"  #1 ") {
		t.Errorf("builds table:\n%s\nwant the rebuild #2, then #1", r.stdout)
	}
	r = f.run(t, nil, "queue")
	r.want(t, 0, "")
	if !strings.Contains(r.stdout, string(id)+"  #2 ") {
		t.Errorf("queue:\n%s\nwant the waiting rebuild with its number", r.stdout)
	}
	r = f.run(t, nil, "builds")
	r.want(t, 0, "")
	if !strings.Contains(r.stdout, string(id)+"  #2 ") {
		t.Errorf("builds without argument:\n%s\nwant the waiting rebuild with its number", r.stdout)
	}

	r = f.run(t, nil, "-o", "json", "rebuild", string(orig))
	r.want(t, 0, "")
	var answer struct {
		ID      build.ID `json:"id"`
		LockKey string   `json:"lockKey"`
		Number  int      `json:"number"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &answer); err != nil || answer.LockKey != "decap-ci/hello/main" || answer.Number != 3 {
		t.Errorf("-o json rebuild printed %q, want the answer with number 3", r.stdout)
	}
}

func TestRebuildWait(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.requireRoute(t, http.MethodPost, "/api/v1/builds/"+string(build.NewID(time.Now()))+"/rebuild")
	orig := f.queueBuild(t, "decap-ci/hello", "main")
	f.finish(t, orig, build.StatusFailed, 1, "")
	// The first build's message, handled.
	msgs, err := f.queue.Receive(context.Background(), 10, 0)
	if err != nil || len(msgs) != 1 {
		t.Fatalf("receive: %v, %v", msgs, err)
	}
	if err := f.queue.Delete(context.Background(), msgs[0].Receipt); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		f.dispatchNext(t, build.StatusFailed, 4, "again\n")
	}()
	r := f.run(t, nil, "rebuild", string(orig), "--wait")
	<-done
	r.want(t, cli.ExitFailed, "build #2 ")
	if r.stdout != "again\n" {
		t.Errorf("stdout %q, want the rebuild's log", r.stdout)
	}
	if !strings.Contains(r.stderr, "queued (decap-ci/hello/main), a rebuild of "+string(orig)) || !strings.Contains(r.stderr, "build #2 ") {
		t.Errorf("stderr %q does not say which build was queued and what it rebuilds", r.stderr)
	}
	if !strings.Contains(r.err.Error(), "failed with exit code 4") {
		t.Errorf("error %v, want the rebuild's result", r.err)
	}
}

func TestRebuildRefusals(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.requireRoute(t, http.MethodPost, "/api/v1/builds/"+string(build.NewID(time.Now()))+"/rebuild")
	running := f.queueBuild(t, "decap-ci/hello", "main")
	f.start(t, running)
	queued := f.queueBuild(t, "decap-ci/hello", "feature")
	unknown := build.NewID(time.Now())
	before, _ := f.queue.Stats(context.Background())
	tests := []struct {
		name string
		env  map[string]string
		args []string
		code int
		msg  string
	}{
		{"running", nil, []string{"rebuild", string(running)}, cli.ExitFailed, "is running; rebuild it once it has ended"},
		{"queued", nil, []string{"rebuild", string(queued)}, cli.ExitFailed, "is queued"},
		{"unknown", nil, []string{"rebuild", string(unknown)}, cli.ExitNotFound, "build " + string(unknown) + " not found"},
		{"not an id", nil, []string{"rebuild", "../x"}, cli.ExitUsage, "not a UUID"},
		{"no id", nil, []string{"rebuild"}, cli.ExitUsage, "rebuild ID"},
		{"no token", map[string]string{"DECAP_TOKEN": ""}, []string{"rebuild", string(running)}, cli.ExitAuth, "DECAP_TOKEN"},
		{"wrong token", map[string]string{"DECAP_TOKEN": "guess"}, []string{"rebuild", string(running)}, cli.ExitAuth, "refused"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f.run(t, tt.env, tt.args...).want(t, tt.code, tt.msg)
		})
	}
	if after, _ := f.queue.Stats(context.Background()); after.Visible != before.Visible {
		t.Errorf("refused rebuilds queued %d requests", after.Visible-before.Visible)
	}
}

func TestHelpDescribesRebuild(t *testing.T) {
	t.Parallel()
	r := runEnv(t, nil, nil, "--help")
	r.want(t, 0, "")
	for _, want := range []string{"rebuild", "#42"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("decapctl --help does not mention %q:\n%s", want, r.stdout)
		}
	}
	r = runEnv(t, nil, nil, "rebuild", "--help")
	r.want(t, 0, "")
	for _, want := range []string{"rebuildOf", "--wait", "ended"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("decapctl rebuild --help does not mention %q:\n%s", want, r.stdout)
		}
	}
}
