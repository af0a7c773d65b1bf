package e2e_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/decap-ci/decap/internal/proctest"
)

// TestSignedPushBecomesSucceededBuild sends GitHub's sample push webhook,
// signed, to the example build-scripts repository and follows it to a
// stored log and artifacts; then sends the same delivery again, which must
// build nothing (invariants 1 and 2).
func TestSignedPushBecomesSucceededBuild(t *testing.T) {
	t.Parallel()
	requireE2E(t)
	payload, err := os.ReadFile(filepath.Join(moduleRoot, "internal", "ingest", "testdata", "github-webhooks", "push-with-new-branch.json"))
	if err != nil {
		t.Fatalf("read sample push: %v", err)
	}
	c := newCluster(t, proctest.Options{Scripts: filepath.Join(moduleRoot, "examples", "build-scripts"), Cap: 4})
	c.Start("reaper")
	c.Start("dispatcher")
	c.Start("ingest")

	delivery := proctest.NewDelivery()
	status, ans, body := c.SignedHook("push", delivery, payload)
	if status != http.StatusAccepted || len(ans.Builds) != 1 {
		t.Fatalf("signed push: got %d %s, want 202 with one build", status, body)
	}
	id := ans.Builds[0].ID
	if got, want := ans.Builds[0].LockKey, "Codertocat/Hello-World/master"; got != want {
		t.Errorf("lock key: got %q, want %q", got, want)
	}

	rec := c.WaitSucceeded(id)[id]
	for _, f := range []struct{ name, got, want string }{
		{"team", rec.Team, "Codertocat"},
		{"project", rec.Project, "Hello-World"},
		{"ref", rec.Ref, "master"},
		{"trigger", rec.Trigger, "push"},
		{"deliveryId", rec.DeliveryID, delivery},
	} {
		if f.got != f.want {
			t.Errorf("record %s: got %q, want %q", f.name, f.got, f.want)
		}
	}
	if rec.StartedAt.IsZero() || rec.FinishedAt.Before(rec.StartedAt) {
		t.Errorf("record times: got started %s, finished %s; want both set, in order", rec.StartedAt, rec.FinishedAt)
	}

	log := c.BuildLog(id)
	for _, want := range []string{"== compiling", "== Decap build " + id, "branch:   master"} {
		if !strings.Contains(log, want) {
			t.Errorf("console log of %s lacks %q; got:\n%s", id, want, log)
		}
	}
	files := tarFiles(t, c.Artifacts(id))
	info, ok := files["build-info.txt"]
	if !ok {
		t.Errorf("artifacts of %s: got files %v, want build-info.txt among them", id, mapKeys(files))
	} else if want := "build_id=" + id; !strings.Contains(info, want) {
		t.Errorf("build-info.txt: got %q, want it to contain %q", info, want)
	}

	// GitHub redelivers with the same X-GitHub-Delivery: ingest answers
	// with the delivery's first build, which has a record, and builds
	// nothing new (invariants 1 and 2).
	status, again, body := c.SignedHook("push", delivery, payload)
	if status != http.StatusAccepted || len(again.Builds) != 1 {
		t.Fatalf("redelivered push: got %d %s, want 202 with one build", status, body)
	}
	if again.Builds[0].ID != id {
		t.Errorf("redelivery answered with build %s, want the delivery's first build %s", again.Builds[0].ID, id)
	}
	// The same signed body under a new delivery ID is a replay, not a new
	// push (GitHub sends each push once): answered with the first build,
	// nothing queued.
	status, replay, body := c.SignedHook("push", proctest.NewDelivery(), payload)
	if status != http.StatusAccepted || len(replay.Builds) != 1 || replay.Builds[0].ID != id {
		t.Fatalf("replayed push under a new delivery: got %d %s, want 202 with the first build %s", status, body, id)
	}
	// A new push of the branch (another commit) has the same lock key, so
	// the queue hands it out only after the redelivery was decided: once it
	// has ended, the redelivery's fate is known.
	var ev map[string]any
	if err := json.Unmarshal(payload, &ev); err != nil {
		t.Fatal(err)
	}
	ev["before"], ev["after"] = ev["after"], "0123456789abcdef0123456789abcdef01234567"
	newPush, _ := json.Marshal(ev)
	status, next, body := c.SignedHook("push", proctest.NewDelivery(), newPush)
	if status != http.StatusAccepted || len(next.Builds) != 1 {
		t.Fatalf("new push with a new delivery: got %d %s, want 202 with one build", status, body)
	}
	nextID := next.Builds[0].ID
	c.WaitSucceeded(nextID)
	if rec, code, err := c.GetBuild(id); err != nil || code != http.StatusOK || rec.Status != "succeeded" {
		t.Errorf("first build after its redelivery: got %s (HTTP %d, %v), want still succeeded", rec, code, err)
	}

	var ran []string
	for _, r := range c.ProjectBuilds("Codertocat", "Hello-World") {
		if r.Status != "skipped" {
			ran = append(ran, r.ID)
		}
	}
	slices.Sort(ran)
	want := []string{id, nextID}
	slices.Sort(want)
	if !slices.Equal(ran, want) {
		t.Errorf("builds of Codertocat/Hello-World that were not skipped: got %v, want %v (one per unique push)", ran, want)
	}
	logs, _ := filepath.Glob(filepath.Join(c.DataDir(), "blobs", "logs", "*"))
	if len(logs) != 2 {
		t.Errorf("stored console logs: got %d (%v), want 2, one per unique push", len(logs), logs)
	}
}

// tarFiles returns the regular files of a gzipped tarball by their path
// (without a leading "./") and their content.
func tarFiles(t *testing.T, tgz []byte) map[string]string {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(tgz))
	if err != nil {
		t.Fatalf("artifacts are not gzip: %v", err)
	}
	tr := tar.NewReader(zr)
	files := map[string]string{}
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("artifacts are not a tar archive: %v", err)
		}
		if h.Typeflag != tar.TypeReg {
			continue
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatalf("read %s from artifacts: %v", h.Name, err)
		}
		files[strings.TrimPrefix(h.Name, "./")] = string(data)
	}
	return files
}

func mapKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// TestBadInputBreaksNothing sends bad webhooks and API requests next to an
// invalid project.json (invariant 5): each gets a clear answer, none builds
// anything, and a valid push still builds afterwards.
func TestBadInputBreaksNothing(t *testing.T) {
	t.Parallel()
	s := newScripts(t)
	s.addTraced("e2e", "app", 200*time.Millisecond)
	s.add("e2e", "broken-json", `{"buildImage": "debian:bookworm-slim",`, "#!/usr/bin/env bash\necho never\n")
	s.add("e2e", "no-image", `{"repoManager": "github"}`, "#!/usr/bin/env bash\necho never\n")
	s.add("e2e", "bad-regex", `{"buildImage": "debian:bookworm-slim", "managedRefRegex": "release/(.+"}`, "#!/usr/bin/env bash\necho never\n")
	c := s.cluster(4)
	c.Start("reaper")
	c.Start("dispatcher")
	c.Start("ingest")

	// The catalog lists every project; the invalid ones with their error.
	invalid := []string{"e2e/bad-regex", "e2e/broken-json", "e2e/no-image"}
	listed := map[string]proctest.Project{}
	for _, p := range c.Projects() {
		listed[p.Team+"/"+p.Project] = p
	}
	if p, ok := listed["e2e/app"]; !ok || p.Error != "" || len(p.Descriptor) == 0 || string(p.Descriptor) == "null" {
		t.Errorf("GET /api/v1/projects: e2e/app: got %+v (listed %t), want a descriptor and no error", p, ok)
	}
	for _, key := range invalid {
		p, ok := listed[key]
		if !ok || p.Error == "" {
			t.Errorf("GET /api/v1/projects: %s: got %+v (listed %t), want it listed with an error", key, p, ok)
		}
	}

	push := proctest.PushPayload
	deleted := func() []byte {
		var m map[string]any
		_ = json.Unmarshal(push("e2e", "app", "gone"), &m)
		m["deleted"], m["after"] = true, strings.Repeat("0", 40)
		b, _ := json.Marshal(m)
		return b
	}
	signed := func(b []byte) string { return proctest.Sign(webhookSecret, b) }
	hooks := []struct {
		name        string
		event       string
		body        []byte
		signature   func([]byte) string
		wantStatus  int
		wantIgnored string // part of the "ignored" reason of a 202
	}{
		{"signed with another secret", "push", push("e2e", "app", "main"), func(b []byte) string { return proctest.Sign("not-the-secret", b) }, http.StatusUnauthorized, ""},
		{"unsigned", "push", push("e2e", "app", "main"), func([]byte) string { return "" }, http.StatusUnauthorized, ""},
		{"signature of another body", "push", push("e2e", "app", "main"), func([]byte) string { return signed(push("e2e", "app", "other")) }, http.StatusUnauthorized, ""},
		{"signature not hex", "push", push("e2e", "app", "main"), func([]byte) string { return "sha256=zz" }, http.StatusUnauthorized, ""},
		{"malformed body", "push", []byte(`{"ref": "refs/heads/main", `), signed, http.StatusBadRequest, ""},
		{"hostile ref", "push", push("e2e", "app", "../../etc"), signed, http.StatusBadRequest, ""},
		{"hostile team", "push", push("../etc", "app", "main"), signed, http.StatusBadRequest, ""},
		{"ping", "ping", []byte(`{"zen": "Keep it logically awesome."}`), signed, http.StatusOK, ""},
		{"event that builds nothing", "issues", []byte(`{}`), signed, http.StatusAccepted, "does not trigger builds"},
		{"deleted branch", "push", deleted(), signed, http.StatusAccepted, "was deleted"},
		{"unknown project", "push", push("e2e", "nowhere", "main"), signed, http.StatusAccepted, "not in the build-scripts repository"},
		{"invalid JSON in project.json", "push", push("e2e", "broken-json", "main"), signed, http.StatusAccepted, "not buildable"},
		{"project.json without buildImage", "push", push("e2e", "no-image", "main"), signed, http.StatusAccepted, "not buildable"},
		{"project.json with a bad regex", "push", push("e2e", "bad-regex", "main"), signed, http.StatusAccepted, "not buildable"},
	}
	for _, tc := range hooks {
		t.Run("hook/"+tc.name, func(t *testing.T) {
			status, ans, body := c.SendHook(tc.event, proctest.NewDelivery(), tc.signature(tc.body), tc.body)
			if status != tc.wantStatus {
				t.Fatalf("got %d %s, want %d", status, body, tc.wantStatus)
			}
			if len(ans.Builds) != 0 {
				t.Errorf("got builds %s, want none", body)
			}
			if tc.wantIgnored != "" && !strings.Contains(ans.Ignored, tc.wantIgnored) {
				t.Errorf("ignored reason: got %q, want it to contain %q", ans.Ignored, tc.wantIgnored)
			}
			if status >= 400 && ans.Error == "" {
				t.Errorf("error answer: got %s, want JSON with an \"error\"", body)
			}
		})
	}

	api := []struct {
		name, project, ref, token string
		wantStatus                int
	}{
		{"no token", "app", "main", "", http.StatusUnauthorized},
		{"wrong token", "app", "main", "not-the-token", http.StatusUnauthorized},
		{"invalid project", "broken-json", "main", apiToken, http.StatusUnprocessableEntity},
		{"unknown project", "nowhere", "main", apiToken, http.StatusNotFound},
		{"hostile ref", "app", "a..b", apiToken, http.StatusBadRequest},
	}
	for _, tc := range api {
		t.Run("api/"+tc.name, func(t *testing.T) {
			status, body, err := c.RequestBuildRaw("e2e", tc.project, tc.ref, tc.token)
			if err != nil {
				t.Fatal(err)
			}
			if status != tc.wantStatus {
				t.Errorf("got %d %s, want %d", status, body, tc.wantStatus)
			}
		})
	}

	// Nothing of that broke anything: a valid push builds, and it is the
	// only build that ever started.
	id := c.Push("e2e", "app", "main")
	c.WaitSucceeded(id)
	s.readTrace().checkStartedOnce(t, id)
	for _, key := range invalid {
		team, repo, _ := strings.Cut(key, "/")
		if got := c.ProjectBuilds(team, repo); len(got) != 0 {
			t.Errorf("builds of %s: got %d (%v), want none", key, len(got), got)
		}
	}
}
