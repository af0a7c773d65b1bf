package cli_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/decap-ci/decap/internal/build"
	"github.com/decap-ci/decap/internal/buildtest"
	"github.com/decap-ci/decap/internal/cli"
	"github.com/decap-ci/decap/internal/github"
	"github.com/decap-ci/decap/internal/ingest"
)

const (
	secret = "It's a Secret to Everybody"
	token  = "api-token-for-cli-tests"
)

// fixture is the real ingest server over buildtest fakes, on a loopback
// listener, with a fake GitHub behind the refs endpoint.
type fixture struct {
	url     string
	srv     *httptest.Server
	queue   *buildtest.FakeQueue
	records *buildtest.FakeRecords
	blobs   *buildtest.FakeBlobs
	locks   *buildtest.FakeLocks
	gate    *buildtest.FakeGate
	live    *liveLogs
	cancels *canceller
	catalog *buildtest.Catalog
	// refsWired reports whether some ingest.Deps field took *github.Refs.
	refsWired bool
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{
		queue:   buildtest.NewQueue(time.Now, buildtest.QueueOptions{}),
		records: buildtest.NewRecords(),
		blobs:   buildtest.NewBlobs(),
		locks:   buildtest.NewLocks(time.Now),
		gate:    buildtest.NewGate(),
		live:    &liveLogs{logs: map[build.ID]*liveLog{}},
		cancels: &canceller{},
	}
	catalog := buildtest.NewCatalog("c0ffee", map[string]string{
		"decap-ci/hello":         `{"buildImage":"debian:bookworm-slim"}`,
		"Codertocat/Hello-World": `{"buildImage":"debian:bookworm-slim","managedRefRegex":"master|main"}`,
		"decap-ci/broken":        `{"buildImage":"x","managedRefRegex":"(unclosed"}`,
	})
	f.catalog = catalog
	deps := ingest.Deps{
		Publisher: f.queue, Idempotency: buildtest.NewIdempotency(time.Now), Catalog: catalog,
		Records: f.records, Blobs: f.blobs, LiveLogs: f.live, Now: time.Now,
	}
	// The endpoints being added to ingest take more collaborators; hand
	// every interface field still empty the first fake that satisfies it,
	// so these tests keep compiling and start running as they land.
	refs := fakeGitHubRefs(t)
	wired := fillDeps(&deps, f.queue, f.records, f.locks, f.gate, f.blobs, f.live, f.cancels, catalog, refs)
	f.refsWired = wired[refs]
	srv := ingest.New(ingest.Config{
		WebhookSecret: []byte(secret), APIToken: token, FollowPoll: 10 * time.Millisecond,
	}, deps)
	f.srv = httptest.NewServer(srv)
	t.Cleanup(f.srv.Close)
	f.url = f.srv.URL
	return f
}

// fillDeps sets each nil interface field of *deps to the first candidate
// that implements it and reports which candidates it used.
func fillDeps(deps *ingest.Deps, candidates ...any) map[any]bool {
	used := map[any]bool{}
	v := reflect.ValueOf(deps).Elem()
	for i := range v.NumField() {
		fv := v.Field(i)
		if fv.Kind() != reflect.Interface || !fv.IsNil() || fv.Type().NumMethod() == 0 || !fv.CanSet() {
			continue
		}
		for _, c := range candidates {
			if reflect.TypeOf(c).Implements(fv.Type()) {
				fv.Set(reflect.ValueOf(c))
				used[c] = true
				break
			}
		}
	}
	return used
}

// fakeGitHubRefs is a github.Refs over a GitHub stand-in that knows one
// repository, decap-ci/hello.
func fakeGitHubRefs(t *testing.T) *github.Refs {
	t.Helper()
	gh := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		switch r.URL.Path {
		case "/repos/decap-ci/hello/branches":
			io.WriteString(w, `[{"name":"main","commit":{"sha":"6113728f27ae82c7b1a177c8d03f9e96e0adf246"}}]`)
		case "/repos/decap-ci/hello/tags":
			io.WriteString(w, `[{"name":"v1.0","commit":{"sha":"0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c"}}]`)
		default:
			w.WriteHeader(http.StatusNotFound)
			io.WriteString(w, `{"message":"Not Found"}`)
		}
	}))
	t.Cleanup(gh.Close)
	r, err := github.NewRefs(github.Config{BaseURL: gh.URL}, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// canceller stands in for the executor that stops running builds: it
// remembers what it was asked to stop.
type canceller struct {
	mu  sync.Mutex
	ids []build.ID
}

func (c *canceller) Cancel(_ context.Context, id build.ID) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.ids = append(c.ids, id)
	return nil
}

func (c *canceller) cancelled() []build.ID {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.ids)
}

// liveLogs is an in-memory ingest.LiveLogs: logs of running builds that
// grow while they are read.
type liveLogs struct {
	mu   sync.Mutex
	logs map[build.ID]*liveLog
}

type liveLog struct {
	mu   sync.Mutex
	data []byte
}

func (l *liveLogs) append(id build.ID, s string) {
	l.mu.Lock()
	lg, ok := l.logs[id]
	if !ok {
		lg = &liveLog{}
		l.logs[id] = lg
	}
	l.mu.Unlock()
	lg.mu.Lock()
	lg.data = append(lg.data, s...)
	lg.mu.Unlock()
}

func (l *liveLogs) OpenLiveLog(id build.ID) (io.ReadCloser, error) {
	l.mu.Lock()
	lg, ok := l.logs[id]
	l.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("live log of %s: %w", id, build.ErrNotFound)
	}
	return &liveReader{log: lg}, nil
}

// liveReader reads a growing log like a file: io.EOF when caught up, more
// data later.
type liveReader struct {
	log *liveLog
	off int
}

func (r *liveReader) Read(p []byte) (int, error) {
	r.log.mu.Lock()
	defer r.log.mu.Unlock()
	if r.off >= len(r.log.data) {
		return 0, io.EOF
	}
	n := copy(p, r.log.data[r.off:])
	r.off += n
	return n, nil
}

func (r *liveReader) Close() error { return nil }

// result is what one decapctl run did.
type result struct {
	stdout, stderr string
	err            error
	code           int
}

// run runs decapctl against the fixture with DECAP_URL and DECAP_TOKEN
// set; env adds or overrides variables ("" removes one).
func (f *fixture) run(t *testing.T, env map[string]string, args ...string) result {
	t.Helper()
	return runEnv(t, map[string]string{"DECAP_URL": f.url, "DECAP_TOKEN": token}, env, args...)
}

func runEnv(t *testing.T, base, env map[string]string, args ...string) result {
	t.Helper()
	// An empty data directory, so no secret file of a local run is found.
	vars := map[string]string{"DECAP_DATA_DIR": t.TempDir()}
	for k, v := range base {
		vars[k] = v
	}
	for k, v := range env {
		vars[k] = v
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var stdout, stderr bytes.Buffer
	err := cli.Run(ctx, args, func(k string) string { return vars[k] }, &stdout, &stderr)
	r := result{stdout: stdout.String(), stderr: stderr.String(), err: err, code: cli.ExitCode(err)}
	for _, out := range []string{r.stdout, r.stderr, fmt.Sprint(err)} {
		if strings.Contains(out, token) || strings.Contains(out, secret) {
			t.Errorf("decapctl %v shows the token or secret:\n%s", args, out)
		}
	}
	if err != nil && strings.Contains(err.Error(), "\n") {
		t.Errorf("decapctl %v: error is not one line: %q", args, err)
	}
	return r
}

// want checks the exit code and that the error (if any) contains msg.
func (r result) want(t *testing.T, code int, msg string) {
	t.Helper()
	if r.code != code {
		t.Fatalf("exit code %d (err %v, stderr %q, stdout %q), want %d", r.code, r.err, r.stderr, r.stdout, code)
	}
	if msg != "" && (r.err == nil || !strings.Contains(r.err.Error(), msg)) {
		t.Fatalf("error %v, want it to contain %q", r.err, msg)
	}
}

// requireRoute skips the test when ingest has no route for method and
// path yet: echo answers such requests 404 "Not Found" or 405. The probe
// carries no token, so a mutation it reaches is refused before it acts.
func (f *fixture) requireRoute(t *testing.T, method, path string) {
	t.Helper()
	req, _ := http.NewRequest(method, f.url+path, strings.NewReader("{}"))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var e struct {
		Error string `json:"error"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&e)
	if resp.StatusCode == http.StatusMethodNotAllowed || resp.StatusCode == http.StatusNotFound && e.Error == "Not Found" {
		t.Skipf("endpoint not yet in ingest: %s %s", method, path)
	}
}

// queueBuild requests a build through the CLI and returns its ID.
func (f *fixture) queueBuild(t *testing.T, project, ref string) build.ID {
	t.Helper()
	r := f.run(t, nil, "build", project, ref)
	r.want(t, 0, "")
	id, err := build.ParseID(strings.TrimSpace(r.stdout))
	if err != nil {
		t.Fatalf("build printed %q, want a build ID", r.stdout)
	}
	return id
}

// finish stores a log and a final record for a build, as the reaper does.
// It may run on a goroutine of its own, so it reports with t.Error.
func (f *fixture) finish(t *testing.T, id build.ID, status build.Status, exit int, log string) {
	t.Helper()
	ctx := context.Background()
	rec, err := f.records.Get(ctx, id)
	if err != nil {
		t.Error(err)
		return
	}
	if rec.StartedAt.IsZero() {
		rec.StartedAt = time.Now().Add(-42 * time.Second)
	}
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	io.WriteString(zw, log)
	zw.Close()
	rec.LogKey = build.LogKey(id)
	if err := f.blobs.Put(ctx, rec.LogKey, &gz); err != nil {
		t.Error(err)
		return
	}
	rec.Status, rec.ExitCode, rec.FinishedAt = status, &exit, time.Now()
	if err := f.records.Save(ctx, rec); err != nil {
		t.Error(err)
	}
}

// start marks a queued build running; like finish it reports with t.Error.
func (f *fixture) start(t *testing.T, id build.ID) {
	t.Helper()
	ctx := context.Background()
	rec, err := f.records.Get(ctx, id)
	if err != nil {
		t.Error(err)
		return
	}
	rec.Status, rec.StartedAt = build.StatusRunning, time.Now()
	if err := f.records.Save(ctx, rec); err != nil {
		t.Error(err)
	}
}

// dispatchNext plays dispatcher and build: it takes the next request off
// the queue, runs it with a log written in parts, and ends it.
func (f *fixture) dispatchNext(t *testing.T, status build.Status, exit int, parts ...string) {
	t.Helper()
	ctx := context.Background()
	msgs, err := f.queue.Receive(ctx, 1, 10*time.Second)
	if err != nil || len(msgs) != 1 {
		t.Errorf("receive: %v (%d messages)", err, len(msgs))
		return
	}
	req, err := build.Decode(msgs[0].Body)
	if err != nil {
		t.Error(err)
		return
	}
	f.start(t, req.BuildID)
	for _, p := range parts {
		f.live.append(req.BuildID, p)
		time.Sleep(15 * time.Millisecond)
	}
	f.finish(t, req.BuildID, status, exit, strings.Join(parts, ""))
}

func TestHelpDocumentsExitCodes(t *testing.T) {
	t.Parallel()
	r := runEnv(t, nil, nil, "--help")
	r.want(t, 0, "")
	for _, want := range []string{"DECAP_URL", "DECAP_TOKEN", "DECAP_TOKEN_FILE", "-o json", "Exit codes",
		"0    ok", "1    the server said no", "2    usage", "3    not found", "4    authentication", "5    unavailable"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("decapctl --help does not mention %q:\n%s", want, r.stdout)
		}
	}
}

func TestBuildAndHistory(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	id := f.queueBuild(t, "decap-ci/hello", "feature/Locks")
	rec, err := f.records.Get(context.Background(), id)
	if err != nil || rec.Ref != "feature/Locks" || rec.RefType != build.Branch || rec.Trigger != build.TriggerAPI {
		t.Fatalf("record = %+v, %v; want a queued API build of feature/Locks", rec, err)
	}

	r := f.run(t, nil, "build", "decap-ci/hello", "v1.0", "--tag", "--sha", "6113728f27ae82c7")
	r.want(t, 0, "")
	tagID := build.ID(strings.TrimSpace(r.stdout))
	if rec, err := f.records.Get(context.Background(), tagID); err != nil || rec.RefType != build.Tag || rec.SHA != "6113728f27ae82c7" {
		t.Fatalf("tag record = %+v, %v", rec, err)
	}
	f.finish(t, tagID, build.StatusFailed, 2, "boom\n")

	r = f.run(t, nil, "builds", "decap-ci/hello")
	r.want(t, 0, "")
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "ID ") || !strings.Contains(lines[0], "STATUS") {
		t.Fatalf("builds table:\n%s\nwant a header and two rows", r.stdout)
	}
	// Newest first.
	if !strings.HasPrefix(lines[1], string(tagID)) || !strings.Contains(lines[1], "failed (2)") || !strings.Contains(lines[1], "6113728f27ae") {
		t.Errorf("first row %q, want the failed tag build", lines[1])
	}
	if !strings.HasPrefix(lines[2], string(id)) || !strings.Contains(lines[2], "queued") || !strings.Contains(lines[2], "feature/Locks") {
		t.Errorf("second row %q, want the queued branch build", lines[2])
	}
	// Columns line up.
	if strings.Index(lines[1], "failed") != strings.Index(lines[0], "STATUS") {
		t.Errorf("columns are not aligned:\n%s", r.stdout)
	}

	r = f.run(t, nil, "builds", "decap-ci/hello", "--limit", "1")
	r.want(t, 0, "")
	if !strings.Contains(r.stderr, "--cursor") {
		t.Errorf("a full page does not say how to get the next: stderr %q", r.stderr)
	}

	r = f.run(t, nil, "-o", "json", "builds", "decap-ci/hello")
	r.want(t, 0, "")
	var page struct {
		Builds []build.Record `json:"builds"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &page); err != nil || len(page.Builds) != 2 {
		t.Fatalf("-o json builds: %v, %d builds:\n%s", err, len(page.Builds), r.stdout)
	}
	if !strings.Contains(r.stdout, "\n  ") {
		t.Errorf("-o json is not indented:\n%s", r.stdout)
	}

	r = f.run(t, nil, "-o", "json", "build", "decap-ci/hello", "main")
	r.want(t, 0, "")
	var qb struct{ ID, LockKey string }
	if err := json.Unmarshal([]byte(r.stdout), &qb); err != nil || qb.LockKey != "decap-ci/hello/main" {
		t.Errorf("-o json build printed %q", r.stdout)
	}

	r = f.run(t, nil, "builds", "decap-ci/nothing")
	r.want(t, 0, "")
	if !strings.Contains(r.stdout, "no builds") {
		t.Errorf("builds of a project without builds printed %q", r.stdout)
	}
}

func TestBuildRefusals(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	tests := []struct {
		name string
		env  map[string]string
		args []string
		code int
		msg  string
	}{
		{"no token", map[string]string{"DECAP_TOKEN": ""}, []string{"build", "decap-ci/hello", "main"}, cli.ExitAuth, "DECAP_TOKEN"},
		{"wrong token", map[string]string{"DECAP_TOKEN": "guess"}, []string{"build", "decap-ci/hello", "main"}, cli.ExitAuth, "refused"},
		{"unknown project", nil, []string{"build", "nobody/nothing", "main"}, cli.ExitNotFound, "project nobody/nothing is not in the build-scripts repository"},
		{"unbuildable project", nil, []string{"build", "decap-ci/broken", "main"}, cli.ExitFailed, "not buildable"},
		{"hostile ref", nil, []string{"build", "decap-ci/hello", "a/../b"}, cli.ExitUsage, "not a valid git ref"},
		{"hostile project", nil, []string{"build", "../etc", "main"}, cli.ExitUsage, "team"},
		{"no ref", nil, []string{"build", "decap-ci/hello"}, cli.ExitUsage, "team/project REF"},
		{"bad sha", nil, []string{"build", "decap-ci/hello", "main", "--sha", "xyz"}, cli.ExitUsage, "--sha"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f.run(t, tt.env, tt.args...).want(t, tt.code, tt.msg)
		})
	}
	if st, _ := f.queue.Stats(context.Background()); st.Visible != 0 {
		t.Errorf("refused builds queued %d requests", st.Visible)
	}
}

// Reads need the token too: decapctl sends it on every call, and says
// which setting to fix when it is missing or refused.
func TestReadsSendTheToken(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	for _, args := range [][]string{{"queue"}, {"locks"}, {"builds", "decap-ci/hello"}, {"dispatch"}} {
		f.run(t, nil, args...).want(t, 0, "")
		f.run(t, map[string]string{"DECAP_TOKEN": ""}, args...).want(t, cli.ExitAuth, "DECAP_TOKEN")
		f.run(t, map[string]string{"DECAP_TOKEN": "guess"}, args...).want(t, cli.ExitAuth, "refused")
	}
}

func TestBuildWait(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		status build.Status
		exit   int
		code   int
		msg    string
	}{
		{"succeeded", build.StatusSucceeded, 0, cli.ExitOK, ""},
		{"failed", build.StatusFailed, 3, cli.ExitFailed, "failed with exit code 3"},
		{"timed out", build.StatusTimedOut, -1, cli.ExitFailed, "timed out"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t)
			done := make(chan struct{})
			go func() {
				defer close(done)
				f.dispatchNext(t, tt.status, tt.exit, "step 1\n", "step 2\n", "done\n")
			}()
			r := f.run(t, nil, "build", "decap-ci/hello", "main", "--wait")
			<-done
			r.want(t, tt.code, tt.msg)
			if r.stdout != "step 1\nstep 2\ndone\n" {
				t.Errorf("stdout %q, want the whole log once", r.stdout)
			}
			if !strings.Contains(r.stderr, "queued") {
				t.Errorf("stderr %q does not say the build was queued", r.stderr)
			}
			if tt.code == 0 && !strings.Contains(r.stderr, "succeeded in") {
				t.Errorf("stderr %q does not give the result", r.stderr)
			}
		})
	}
	t.Run("json", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t)
		done := make(chan struct{})
		go func() {
			defer close(done)
			f.dispatchNext(t, build.StatusSucceeded, 0, "ok\n")
		}()
		r := f.run(t, nil, "-o", "json", "build", "decap-ci/hello", "main", "--wait")
		<-done
		r.want(t, 0, "")
		var rec build.Record
		if err := json.Unmarshal([]byte(r.stdout), &rec); err != nil || rec.Status != build.StatusSucceeded {
			t.Errorf("stdout %q, want the final record", r.stdout)
		}
	})
}

func TestLogs(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ended := f.queueBuild(t, "decap-ci/hello", "main")
	f.finish(t, ended, build.StatusSucceeded, 0, "line 1\nline 2\n")
	f.run(t, nil, "logs", string(ended)).want(t, 0, "")
	if r := f.run(t, nil, "logs", string(ended)); r.stdout != "line 1\nline 2\n" {
		t.Errorf("logs of an ended build printed %q", r.stdout)
	}
	if r := f.run(t, nil, "logs", "-f", string(ended)); r.code != 0 || r.stdout != "line 1\nline 2\n" {
		t.Errorf("logs -f of an ended build: exit %d, printed %q", r.code, r.stdout)
	}

	running := f.queueBuild(t, "decap-ci/hello", "feature")
	f.start(t, running)
	f.live.append(running, "compiling\n")
	done := make(chan struct{})
	go func() {
		defer close(done)
		time.Sleep(100 * time.Millisecond)
		f.live.append(running, "testing\n")
		time.Sleep(50 * time.Millisecond)
		f.finish(t, running, build.StatusSucceeded, 0, "compiling\ntesting\n")
	}()
	r := f.run(t, nil, "logs", "--follow", string(running))
	<-done
	if r.code != 0 || r.stdout != "compiling\ntesting\n" {
		t.Errorf("logs -f of a running build: exit %d (%v), printed %q", r.code, r.err, r.stdout)
	}

	// A build that has not started has no log yet: nothing to print, which
	// is no error (it exited 3, "not found", for a build that exists).
	queued := f.queueBuild(t, "decap-ci/hello", "other")
	r = f.run(t, nil, "logs", string(queued))
	r.want(t, 0, "")
	if r.stdout != "" || !strings.Contains(r.stderr, "has not started yet (queued)") || !strings.Contains(r.stderr, "logs -f") {
		t.Errorf("logs of a queued build: stdout %q, stderr %q; want nothing, and a note that it has not started and -f waits", r.stdout, r.stderr)
	}
	unknown := build.NewID(time.Now())
	f.run(t, nil, "logs", string(unknown)).want(t, cli.ExitNotFound, "build "+string(unknown)+" not found")
	f.run(t, nil, "logs", "-f", string(unknown)).want(t, cli.ExitNotFound, "not found")
	f.run(t, nil, "logs", "not-an-id").want(t, cli.ExitUsage, "not a UUID")
	f.run(t, nil, "logs").want(t, cli.ExitUsage, "ID")
}

func TestCancel(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.requireRoute(t, http.MethodDelete, "/api/v1/builds/"+string(build.NewID(time.Now())))
	queued := f.queueBuild(t, "decap-ci/hello", "main")
	r := f.run(t, nil, "cancel", string(queued))
	r.want(t, 0, "")
	if !strings.Contains(r.stdout, "cancel") {
		t.Errorf("cancel printed %q", r.stdout)
	}
	if rec, _ := f.records.Get(context.Background(), queued); rec.Status != build.StatusCancelled {
		t.Errorf("record after cancel = %+v, want cancelled", rec)
	}
	running := f.queueBuild(t, "decap-ci/hello", "feature")
	f.start(t, running)
	r = f.run(t, nil, "cancel", string(running))
	r.want(t, 0, "")
	if !strings.Contains(r.stdout, "is being cancelled") || !slices.Contains(f.cancels.cancelled(), running) {
		t.Errorf("cancel of a running build printed %q; executor asked to stop %v", r.stdout, f.cancels.cancelled())
	}
	ended := f.queueBuild(t, "decap-ci/hello", "other")
	f.finish(t, ended, build.StatusSucceeded, 0, "")
	f.run(t, nil, "cancel", string(ended)).want(t, cli.ExitFailed, "already succeeded")
	unknown := build.NewID(time.Now())
	f.run(t, nil, "cancel", string(unknown)).want(t, cli.ExitNotFound, "build "+string(unknown)+" not found")
	f.run(t, map[string]string{"DECAP_TOKEN": "guess"}, "cancel", string(queued)).want(t, cli.ExitAuth, "")
}

func TestQueue(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.requireRoute(t, http.MethodGet, "/api/v1/queue")
	a := f.queueBuild(t, "decap-ci/hello", "main")
	b := f.queueBuild(t, "decap-ci/hello", "feature/x")
	r := f.run(t, nil, "queue")
	r.want(t, 0, "")
	for _, want := range []string{"ready to dispatch 2", string(a), string(b), "decap-ci/hello/feature/x"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("queue output lacks %q:\n%s", want, r.stdout)
		}
	}
	r = f.run(t, nil, "-o", "json", "queue")
	r.want(t, 0, "")
	var q struct {
		Stats   build.QueueStats  `json:"stats"`
		Waiting []json.RawMessage `json:"waiting"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &q); err != nil || q.Stats.Visible != 2 || len(q.Waiting) != 2 {
		t.Errorf("-o json queue: %v\n%s", err, r.stdout)
	}
	if strings.Contains(r.stdout, "more waiting") {
		t.Errorf("queue of two says more wait:\n%s", r.stdout)
	}
	// The API lists the oldest 100: the output says how many more wait.
	for i := range 101 {
		f.queueBuild(t, "decap-ci/hello", fmt.Sprintf("many/%d", i))
	}
	r = f.run(t, nil, "queue")
	r.want(t, 0, "")
	if !strings.Contains(r.stdout, "... and 3 more waiting requests") || strings.Contains(r.stdout, "many/100") {
		t.Errorf("queue of 103 does not list the oldest 100 and say 3 more wait:\n%s", r.stdout)
	}
	if r := f.run(t, nil, "builds"); !strings.Contains(r.stdout, "... and 3 more waiting requests") {
		t.Errorf("builds with 103 waiting does not say 3 more wait:\n%s", r.stdout)
	}
}

func TestLocks(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.requireRoute(t, http.MethodGet, "/api/v1/locks")
	id := build.NewID(time.Now())
	now := time.Now()
	lease := build.Lease{Key: "decap-ci/hello/feature/x", BuildID: id, Owner: "dispatcher-1", AcquiredAt: now, ExpiresAt: now.Add(time.Hour)}
	if err := f.locks.Acquire(context.Background(), lease, 0); err != nil {
		t.Fatal(err)
	}
	r := f.run(t, nil, "locks")
	r.want(t, 0, "")
	for _, want := range []string{"LOCK KEY", "decap-ci/hello/feature/x", string(id), "dispatcher-1"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("locks output lacks %q:\n%s", want, r.stdout)
		}
	}

	f.run(t, nil, "unlock", "decap-ci/hello").want(t, cli.ExitUsage, "team/project/ref")
	f.requireRoute(t, http.MethodDelete, "/api/v1/locks/decap-ci/hello/feature/x")
	f.run(t, map[string]string{"DECAP_TOKEN": ""}, "unlock", "decap-ci/hello/feature/x").want(t, cli.ExitAuth, "DECAP_TOKEN")
	r = f.run(t, nil, "unlock", "decap-ci/hello/feature/x")
	r.want(t, 0, "")
	if !strings.Contains(r.stdout, "released lock decap-ci/hello/feature/x") {
		t.Errorf("unlock printed %q", r.stdout)
	}
	if held, _ := f.locks.List(context.Background()); len(held) != 0 {
		t.Errorf("locks after unlock: %v", held)
	}
	f.run(t, nil, "unlock", "decap-ci/hello/feature/x").want(t, cli.ExitNotFound, "lock decap-ci/hello/feature/x is not held")
	// Refs travel as path segments, escaped where they need it.
	odd := "decap-ci/hello/fix/ü#1%20"
	if err := f.locks.Acquire(context.Background(), build.Lease{Key: odd, BuildID: id, Owner: "d", AcquiredAt: now, ExpiresAt: now.Add(time.Hour)}, 0); err != nil {
		t.Fatal(err)
	}
	if r := f.run(t, nil, "unlock", odd); r.code != 0 || !strings.Contains(r.stdout, odd) {
		t.Errorf("unlock %s: exit %d (%v), printed %q", odd, r.code, r.err, r.stdout)
	}
	if r := f.run(t, nil, "locks"); !strings.Contains(r.stdout, "no locks") {
		t.Errorf("locks without locks printed %q", r.stdout)
	}
}

func TestActiveBuilds(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.requireRoute(t, http.MethodGet, "/api/v1/locks")
	f.requireRoute(t, http.MethodGet, "/api/v1/queue")
	running := f.queueBuild(t, "decap-ci/hello", "main")
	waiting := f.queueBuild(t, "decap-ci/hello", "feature/x")
	f.start(t, running)
	now := time.Now()
	if err := f.locks.Acquire(context.Background(), build.Lease{Key: "decap-ci/hello/main", BuildID: running, Owner: "d", AcquiredAt: now, ExpiresAt: now.Add(time.Hour)}, 0); err != nil {
		t.Fatal(err)
	}
	r := f.run(t, nil, "builds")
	r.want(t, 0, "")
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(lines) < 3 || !strings.HasPrefix(lines[1], string(running)) || !strings.Contains(lines[1], "running") ||
		!strings.Contains(r.stdout, string(waiting)) {
		t.Errorf("builds without argument:\n%s\nwant the running build, then the waiting one", r.stdout)
	}
	r = f.run(t, nil, "-o", "json", "builds")
	r.want(t, 0, "")
	var v struct {
		Running []build.Record    `json:"running"`
		Waiting []json.RawMessage `json:"waiting"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &v); err != nil || len(v.Running) != 1 || v.Running[0].BuildID != running {
		t.Errorf("-o json builds: %v\n%s", err, r.stdout)
	}
}

func TestDispatchGate(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.requireRoute(t, http.MethodGet, "/api/v1/dispatch")
	f.requireRoute(t, http.MethodPost, "/api/v1/dispatch/pause")
	f.requireRoute(t, http.MethodPost, "/api/v1/dispatch/resume")
	ctx := context.Background()
	f.run(t, map[string]string{"DECAP_TOKEN": ""}, "pause").want(t, cli.ExitAuth, "")
	r := f.run(t, nil, "pause", "--reason", "cluster upgrade")
	r.want(t, 0, "")
	if g, _ := f.gate.Get(ctx); !g.Paused || g.Reason != "cluster upgrade" {
		t.Errorf("gate after pause = %+v", g)
	}
	if !strings.Contains(r.stdout, "PAUSED") || !strings.Contains(r.stdout, "cluster upgrade") {
		t.Errorf("pause printed %q", r.stdout)
	}
	if r := f.run(t, nil, "dispatch"); !strings.Contains(r.stdout, "PAUSED") {
		t.Errorf("dispatch printed %q", r.stdout)
	}
	if r := f.run(t, nil, "queue"); r.code == 0 && !strings.Contains(r.stdout, "PAUSED") {
		t.Errorf("queue while paused does not say so:\n%s", r.stdout)
	}
	f.run(t, nil, "resume").want(t, 0, "")
	if g, _ := f.gate.Get(ctx); g.Paused {
		t.Errorf("gate after resume = %+v", g)
	}
	r = f.run(t, nil, "-o", "json", "dispatch")
	r.want(t, 0, "")
	var g build.GateState
	if err := json.Unmarshal([]byte(r.stdout), &g); err != nil || g.Paused {
		t.Errorf("-o json dispatch: %v %q", err, r.stdout)
	}
}

func TestRefs(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.requireRoute(t, http.MethodGet, "/api/v1/projects/decap-ci/hello/refs")
	if !f.refsWired {
		t.Skip("ingest.Deps has no field that *github.Refs (build.RefInfo) satisfies yet")
	}
	r := f.run(t, nil, "refs", "decap-ci/hello")
	r.want(t, 0, "")
	for _, want := range []string{"branch", "main", "6113728f27ae82c7b1a177c8d03f9e96e0adf246", "tag", "v1.0"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("refs output lacks %q:\n%s", want, r.stdout)
		}
	}
	f.run(t, nil, "refs", "decap-ci/nothing").want(t, cli.ExitNotFound, "")
}

func TestHookPush(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	secretFile := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secretFile, []byte(secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	withSecret := map[string]string{"DECAP_GITHUB_WEBHOOK_SECRET": secret}

	r := f.run(t, withSecret, "hook", "push", "decap-ci/hello", "main", "--delivery", "d-1", "--sha", "6113728f27ae82c7b1a177c8d03f9e96e0adf246")
	r.want(t, 0, "")
	id := build.ID(strings.TrimSpace(r.stdout))
	rec, err := f.records.Get(context.Background(), id)
	if err != nil || rec.Trigger != build.TriggerPush || rec.DeliveryID != "d-1" || rec.SHA != "6113728f27ae82c7b1a177c8d03f9e96e0adf246" || rec.Ref != "main" {
		t.Fatalf("record of the push = %+v, %v", rec, err)
	}
	// A redelivery answers with the first build.
	r = f.run(t, map[string]string{"DECAP_GITHUB_WEBHOOK_SECRET_FILE": secretFile}, "hook", "push", "decap-ci/hello", "main", "--delivery", "d-1")
	r.want(t, 0, "")
	if got := build.ID(strings.TrimSpace(r.stdout)); got != id {
		t.Errorf("redelivery printed %q, want the first build %s", got, id)
	}
	dataDir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dataDir, "github-webhook-secret"), []byte(secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	f.run(t, map[string]string{"DECAP_DATA_DIR": dataDir}, "hook", "push", "decap-ci/hello", "main").want(t, 0, "")
	r = f.run(t, nil, "hook", "push", "decap-ci/hello", "v1.0", "--tag", "--secret", secret)
	r.want(t, 0, "")
	if rec, err := f.records.Get(context.Background(), build.ID(strings.TrimSpace(r.stdout))); err != nil || rec.RefType != build.Tag {
		t.Errorf("tag push record = %+v, %v", rec, err)
	}

	tests := []struct {
		name string
		env  map[string]string
		args []string
		code int
		msg  string
	}{
		{"wrong secret", nil, []string{"--secret", "guess"}, cli.ExitAuth, "does not match"},
		{"no secret", nil, nil, cli.ExitAuth, "DECAP_GITHUB_WEBHOOK_SECRET"},
		{"secret twice", map[string]string{"DECAP_GITHUB_WEBHOOK_SECRET": secret, "DECAP_GITHUB_WEBHOOK_SECRET_FILE": secretFile}, nil, cli.ExitUsage, "not both"},
		{"missing secret file", map[string]string{"DECAP_GITHUB_WEBHOOK_SECRET_FILE": secretFile + ".missing"}, nil, cli.ExitUsage, "cannot read"},
		{"bad sha", withSecret, []string{"--sha", "0000000"}, cli.ExitUsage, "--sha"},
		{"bad delivery", withSecret, []string{"--delivery", "two words"}, cli.ExitUsage, "--delivery"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f.run(t, tt.env, append([]string{"hook", "push", "decap-ci/hello", "main"}, tt.args...)...).want(t, tt.code, tt.msg)
		})
	}
	t.Run("ignored", func(t *testing.T) {
		t.Parallel()
		f.run(t, withSecret, "hook", "push", "Codertocat/Hello-World", "master-old").want(t, cli.ExitFailed, "ignored the push: ref \"master-old\" does not match")
		f.run(t, withSecret, "hook", "push", "nobody/nothing", "main").want(t, cli.ExitFailed, "not in the build-scripts repository")
	})
}

func TestServerDown(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close()
	for _, args := range [][]string{
		{"builds", "decap-ci/hello"}, {"builds"}, {"build", "decap-ci/hello", "main"},
		{"logs", "-f", string(build.NewID(time.Now()))}, {"cancel", string(build.NewID(time.Now()))},
		{"queue"}, {"locks"}, {"unlock", "a/b/c"}, {"pause"}, {"resume"}, {"dispatch"}, {"refs", "a/b"},
		{"hook", "push", "a/b", "main", "--secret", "s"},
	} {
		r := runEnv(t, map[string]string{"DECAP_URL": url, "DECAP_TOKEN": token}, nil, args...)
		r.want(t, cli.ExitUnavailable, "cannot reach Decap at "+url+": connection refused (is it running? set DECAP_URL)")
		if r.stdout != "" || r.stderr != "" {
			t.Errorf("decapctl %v printed %q / %q besides the error", args, r.stdout, r.stderr)
		}
	}
}

// stub is a server that answers every request with one status and body.
func stub(t *testing.T, status int, body string) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		io.WriteString(w, body)
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

func TestServerAnswers(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		status int
		body   string
		code   int
		msg    string
	}{
		{"backend unavailable", 503, `{"error":"backend unavailable, try again","detail":{"status":503}}`, cli.ExitUnavailable, "failed: 503 backend unavailable, try again"},
		{"html 502 from a proxy", 502, "<html>Bad Gateway</html>", cli.ExitUnavailable, "502 Bad Gateway"},
		{"route missing", 404, `{"error":"Not Found","detail":{"status":404}}`, cli.ExitFailed, "does not offer GET /api/v1/queue"},
		{"method missing", 405, `{"error":"Method Not Allowed"}`, cli.ExitFailed, "does not offer"},
		{"not implemented", 501, `{"error":"no lock store configured"}`, cli.ExitFailed, "cannot do that: no lock store configured"},
		{"forbidden", 403, `{"error":"forbidden"}`, cli.ExitAuth, "forbidden"},
		{"not json", 200, `hello`, cli.ExitUnavailable, "not the expected JSON"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			runEnv(t, map[string]string{"DECAP_URL": stub(t, tt.status, tt.body)}, nil, "queue").want(t, tt.code, tt.msg)
		})
	}
	t.Run("slow", func(t *testing.T) {
		t.Parallel()
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			select {
			case <-r.Context().Done():
			case <-time.After(5 * time.Second):
			}
		}))
		defer srv.Close()
		runEnv(t, map[string]string{"DECAP_URL": srv.URL}, nil, "--timeout", "100ms", "queue").want(t, cli.ExitUnavailable, "did not answer within 100ms")
	})
}

func TestUsageErrors(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		env  map[string]string
		args []string
		msg  string
	}{
		{"unknown command", nil, []string{"bild"}, `did you mean build`},
		{"unknown flag", nil, []string{"queue", "--bogus"}, "unknown flag: --bogus"},
		{"extra argument", nil, []string{"queue", "now"}, "usage: decapctl queue"},
		{"bad output", nil, []string{"-o", "yaml", "queue"}, `-o "yaml"`},
		{"bad url", map[string]string{"DECAP_URL": "127.0.0.1:8080"}, []string{"queue"}, "not an http:// or https:// URL"},
		{"bad url flag", nil, []string{"--url", "ftp://x", "queue"}, "not an http:// or https:// URL"},
		{"token twice", map[string]string{"DECAP_TOKEN_FILE": tokenFile}, []string{"queue"}, "either DECAP_TOKEN or DECAP_TOKEN_FILE"},
		{"token file missing", map[string]string{"DECAP_TOKEN": "", "DECAP_TOKEN_FILE": tokenFile + ".missing"}, []string{"queue"}, "DECAP_TOKEN_FILE: cannot read"},
		{"bad build id", nil, []string{"cancel", "0193"}, "not a UUID"},
		{"bad project", nil, []string{"builds", "hello"}, "not team/project"},
		{"bad limit", nil, []string{"builds", "decap-ci/hello", "--limit", "0"}, "--limit"},
		{"bad timeout", nil, []string{"--timeout", "soon", "queue"}, "--timeout"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f.run(t, tt.env, tt.args...).want(t, cli.ExitUsage, tt.msg)
		})
	}
}

func TestTokenSources(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	f.run(t, map[string]string{"DECAP_TOKEN": "", "DECAP_TOKEN_FILE": tokenFile}, "build", "decap-ci/hello", "main").want(t, 0, "")
	f.run(t, map[string]string{"DECAP_TOKEN": "guess"}, "--token", token, "build", "decap-ci/hello", "main").want(t, 0, "")
	f.run(t, nil, "--token", "guess", "build", "decap-ci/hello", "main").want(t, cli.ExitAuth, "")
	// Without a token set, the one make run generates in the data directory.
	dataDir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dataDir, "api-token"), []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	f.run(t, map[string]string{"DECAP_TOKEN": "", "DECAP_DATA_DIR": dataDir}, "build", "decap-ci/hello", "main").want(t, 0, "")
	// --url wins over DECAP_URL.
	runEnv(t, map[string]string{"DECAP_URL": "http://127.0.0.1:1", "DECAP_TOKEN": token}, nil, "--url", f.url+"/", "build", "decap-ci/hello", "main").want(t, 0, "")
}

// TestLogFollowResumes breaks a followed log stream half way: decapctl
// asks again and prints the rest without repeating what it printed.
func TestLogFollowResumes(t *testing.T) {
	t.Parallel()
	id := build.NewID(time.Now())
	var mu sync.Mutex
	logRequests := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		n := logRequests
		mu.Unlock()
		switch r.URL.Path {
		case "/api/v1/builds/" + string(id):
			status := build.StatusRunning
			if n > 0 {
				status = build.StatusSucceeded
			}
			w.Header().Set("Content-Type", "application/json")
			json.NewEncoder(w).Encode(build.Record{BuildID: id, Team: "decap-ci", Project: "hello", Ref: "main", Status: status})
		case "/api/v1/builds/" + string(id) + "/log":
			mu.Lock()
			logRequests++
			mu.Unlock()
			w.Header().Set("Content-Type", "text/plain")
			if n == 0 {
				if r.URL.Query().Get("follow") != "1" {
					t.Errorf("first log request %s does not follow", r.URL)
				}
				w.WriteHeader(http.StatusOK)
				io.WriteString(w, "part 1\npart 2 is cut")
				w.(http.Flusher).Flush()
				conn, _, err := w.(http.Hijacker).Hijack()
				if err == nil {
					conn.Close() // mid-chunk: the client sees an unexpected EOF
				}
				return
			}
			io.WriteString(w, "part 1\npart 2 is cut short\npart 3\n")
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	r := runEnv(t, map[string]string{"DECAP_URL": srv.URL}, nil, "logs", "-f", string(id))
	r.want(t, 0, "")
	if want := "part 1\npart 2 is cut short\npart 3\n"; r.stdout != want {
		t.Errorf("stdout %q, want %q", r.stdout, want)
	}
}

// TestTokenFromTheCheckout checks that decapctl finds the token make run
// generated from any directory of the checkout, not only its top: it looks
// for .decap/api-token in the current directory and the ones above, and
// takes only a file of its own user's.
func TestTokenFromTheCheckout(t *testing.T) {
	f := newFixture(t)
	checkout := t.TempDir()
	deep := filepath.Join(checkout, "internal", "cli")
	if err := os.MkdirAll(filepath.Join(checkout, ".decap"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(deep, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(checkout, ".decap", "api-token"), []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Chdir(deep)
	noToken := map[string]string{"DECAP_TOKEN": "", "DECAP_DATA_DIR": ""}
	f.run(t, noToken, "build", "decap-ci/hello", "main").want(t, 0, "")

	// Outside the checkout there is none, and the refusal says where
	// decapctl looked.
	t.Chdir(t.TempDir())
	f.run(t, noToken, "build", "decap-ci/hello", "main").want(t, cli.ExitAuth, ".decap/api-token")
}

// TestUnlockOfARunningBuild checks that a build whose lock was
// force-released is still listed as running (decapctl builds listed the
// locks, so it vanished while it ran on), marked as without its lock, and
// that unlock warns that another build of the branch may now start beside
// it.
func TestUnlockOfARunningBuild(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	running := f.queueBuild(t, "decap-ci/hello", "main")
	f.start(t, running)
	now := time.Now()
	if err := f.locks.Acquire(context.Background(), build.Lease{Key: "decap-ci/hello/main", BuildID: running, Owner: "d", AcquiredAt: now, ExpiresAt: now.Add(time.Hour)}, 0); err != nil {
		t.Fatal(err)
	}
	r := f.run(t, nil, "unlock", "decap-ci/hello/main")
	r.want(t, 0, "")
	for _, want := range []string{string(running), "still runs", "may start beside it", "decapctl cancel"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("unlock of a running build's lock: stderr %q lacks %q", r.stderr, want)
		}
	}
	r = f.run(t, nil, "builds")
	r.want(t, 0, "")
	if !strings.Contains(r.stdout, string(running)) || !strings.Contains(r.stdout, "running") || !strings.Contains(r.stdout, "lock released") {
		t.Errorf("builds after the unlock:\n%s\nwant the build, running, noted as without its lock", r.stdout)
	}
	// A lock nobody's record explains (a lost build) is still shown.
	lost := build.NewID(now)
	if err := f.locks.Acquire(context.Background(), build.Lease{Key: "decap-ci/hello/lost", BuildID: lost, Owner: "d", AcquiredAt: now, ExpiresAt: now.Add(time.Hour)}, 0); err != nil {
		t.Fatal(err)
	}
	if r := f.run(t, nil, "builds"); !strings.Contains(r.stdout, string(lost)) || !strings.Contains(r.stdout, "locked") {
		t.Errorf("builds with a lock of no record:\n%s", r.stdout)
	}
	// Unlocking a lock whose build has ended warns of nothing.
	if r := f.run(t, nil, "unlock", "decap-ci/hello/lost"); r.code != 0 || r.stderr != "" {
		t.Errorf("unlock of a lost build's lock: exit %d, stderr %q", r.code, r.stderr)
	}
}

// TestRefresh checks decapctl refresh: the build-scripts repository read
// again at once through POST /hooks/buildscripts, signed with the webhook
// secret like a webhook (there was no command, nor a documented way).
func TestRefresh(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	r := f.run(t, map[string]string{"DECAP_GITHUB_WEBHOOK_SECRET": secret}, "refresh")
	r.want(t, 0, "")
	if f.catalog.Refreshes != 1 || !strings.Contains(r.stdout, "3 projects") {
		t.Errorf("refresh: %d refreshes, printed %q; want 1 and the number of projects", f.catalog.Refreshes, r.stdout)
	}
	f.run(t, nil, "refresh", "--secret", "guess").want(t, cli.ExitAuth, "does not match")
	f.run(t, nil, "refresh").want(t, cli.ExitAuth, "DECAP_GITHUB_WEBHOOK_SECRET")
	f.run(t, nil, "refresh", "extra").want(t, cli.ExitUsage, "usage")
	if f.catalog.Refreshes != 1 {
		t.Errorf("refreshes after refused ones: %d, want 1", f.catalog.Refreshes)
	}
}

// TestWaitingWhilePaused checks that while dispatch is paused, decapctl
// queue and decapctl builds say that the waiting requests wait for it,
// and that they are tried when it resumes, rather than no reason and a
// next attempt long past.
func TestWaitingWhilePaused(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	queued := f.queueBuild(t, "decap-ci/hello", "main")
	overdue := f.queueBuild(t, "decap-ci/hello", "feature/x")
	rec, err := f.records.Get(ctx, overdue)
	if err != nil {
		t.Fatal(err)
	}
	rec.Status, rec.Reason, rec.NextAttemptAt = build.StatusDeferred, "concurrency cap reached (4)", time.Now().Add(-10*time.Minute)
	if err := f.records.Save(ctx, rec); err != nil {
		t.Fatal(err)
	}
	f.run(t, nil, "pause", "--reason", "upgrading").want(t, 0, "")
	for _, args := range [][]string{{"queue"}, {"builds"}} {
		r := f.run(t, nil, args...)
		r.want(t, 0, "")
		for _, id := range []build.ID{queued, overdue} {
			line := lineOf(r.stdout, string(id))
			if !strings.Contains(line, "dispatch is paused (upgrading)") || !strings.Contains(line, "when dispatch resumes") {
				t.Errorf("decapctl %s: the line of %s does not say it waits for dispatch to resume:\n%s", args[0], id, line)
			}
		}
		if line := lineOf(r.stdout, string(overdue)); !strings.Contains(line, "concurrency cap reached (4)") {
			t.Errorf("decapctl %s: the overdue line lost its reason:\n%s", args[0], line)
		}
	}
}

// lineOf returns the line of s in which sub appears.
func lineOf(s, sub string) string {
	for line := range strings.Lines(s) {
		if strings.Contains(line, sub) {
			return line
		}
	}
	return ""
}
