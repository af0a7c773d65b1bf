package e2e_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/decap-ci/decap/internal/api"
	"github.com/decap-ci/decap/internal/proctest"
)

// The tests in this file run the same processes on the AWS backend
// (DECAP_BACKEND=aws) against the emulator at AWS_ENDPOINT_URL, each on
// resources of its own prefix that aws-resources/create-world.sh creates and
// destroy-world.sh removes. Without AWS_ENDPOINT_URL or the aws command
// they are skipped.
//
// moto's long poll snapshots the busy message groups when a
// ReceiveMessage call starts: a branch's next request waits for the next
// call (up to 20 s) when the branch's previous request was settled during
// the poll. The tests therefore wait by polling, with the harness's
// generous timeouts, and never assert how fast anything happens.

// TestAWSReplicasNeverDoubleBuildOrExceedCap runs three dispatcher
// processes with a cap of three running builds on the AWS backend (locks
// and cap slots in DynamoDB) and pushes ten branches, then two of them
// again (invariant 3): every build runs once, never more than three at a
// time, never two of one branch at a time, a branch's builds in request
// order; and the ten branches do build in parallel.
//
// It is the slowest AWS test, so it comes first and overlaps the others.
func TestAWSReplicasNeverDoubleBuildOrExceedCap(t *testing.T) {
	t.Parallel()
	const capacity, branches = 3, 10
	w := newAWSWorld(t)
	s := newScripts(t)
	// Every push of a branch builds; the first build waits for a second.
	s.addSideBySide("e2e", "app", keepEveryRequest, time.Second)
	c := w.cluster(proctest.Options{Scripts: s.dir, Trace: s.trace, Cap: capacity})
	c.Start("reaper")
	dispatchers := []*proctest.Service{c.Start("dispatcher"), c.Start("dispatcher"), c.Start("dispatcher")}
	c.Start("ingest")

	var ids []string
	perBranch := map[string][]string{} // build IDs in request order
	push := func(branch string) {
		id := c.Push("e2e", "app", branch)
		ids = append(ids, id)
		perBranch[branch] = append(perBranch[branch], id)
	}
	for i := range branches {
		push(fmt.Sprintf("branch-%02d", i))
	}
	push("branch-00")
	push("branch-01")
	recs := c.WaitSucceeded(ids...)

	tr := s.readTrace()
	tr.checkStartedOnce(t, ids...)
	tr.checkBranchesSerialized(t)
	for branch, bids := range perBranch {
		tr.checkSerialized(t, bids...)
		for _, id := range bids {
			if got := recs[id].Ref; got != branch {
				t.Errorf("build %s: got ref %q, want %q", id, got, branch)
			}
		}
	}
	most := tr.maxOverlap()
	if most > capacity {
		t.Errorf("most builds running at once: got %d, want at most the cap of %d\n%s", most, capacity, tr)
	}
	// Twelve builds of ten branches, queued at once, the first waiting for
	// a second: two run side by side unless the cap is enforced as 1 (or
	// not across replicas at all). On a loaded moto a launch took longer
	// than a 1 s build (CI at 6220944), hence the wait.
	if most < 2 {
		t.Errorf("most builds running at once: got %d, want 2 to %d (builds ran one at a time)\n%s", most, capacity, tr)
	}
	t.Logf("most builds running at once: %d", most)
	for _, d := range dispatchers {
		log, _ := os.ReadFile(d.LogPath)
		t.Logf("%s launched %d builds", d.Name, strings.Count(string(log), "build launched"))
	}
}

// TestAWSSignedPushBecomesSucceededBuild sends GitHub's sample push webhook,
// signed, to the example build-scripts repository on the AWS backend and
// follows it to a log and artifacts stored in S3; then sends the same
// delivery again, which must build nothing (invariants 1 and 2).
func TestAWSSignedPushBecomesSucceededBuild(t *testing.T) {
	t.Parallel()
	w := newAWSWorld(t)
	payload, err := os.ReadFile(filepath.Join(moduleRoot, "internal", "ingest", "testdata", "github-webhooks", "push-with-new-branch.json"))
	if err != nil {
		t.Fatalf("read sample push: %v", err)
	}
	c := w.cluster(proctest.Options{Scripts: filepath.Join(moduleRoot, "examples", "build-scripts"), Cap: 4})
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
	logKey, artifactsKey := "logs/"+id+"/console.log.gz", "artifacts/"+id+"/artifacts.tar.gz"
	timesKey := "logs/" + id + "/console.times.json.gz"
	for _, f := range []struct{ name, got, want string }{
		{"team", rec.Team, "Codertocat"},
		{"project", rec.Project, "Hello-World"},
		{"ref", rec.Ref, "master"},
		{"trigger", rec.Trigger, "push"},
		{"deliveryId", rec.DeliveryID, delivery},
		{"logKey", rec.LogKey, logKey},
		{"artifactsKey", rec.ArtifactsKey, artifactsKey},
	} {
		if f.got != f.want {
			t.Errorf("record %s: got %q, want %q", f.name, f.got, f.want)
		}
	}

	// ingest serves the log and the artifacts from S3.
	log := c.BuildLog(id)
	for _, want := range []string{"== compiling", "== Decap build " + id, "branch:   master"} {
		if !strings.Contains(log, want) {
			t.Errorf("console log of %s lacks %q; got:\n%s", id, want, log)
		}
	}
	files := tarFiles(t, c.Artifacts(id))
	if info, ok := files["build-info.txt"]; !ok {
		t.Errorf("artifacts of %s: got files %v, want build-info.txt among them", id, mapKeys(files))
	} else if want := "build_id=" + id; !strings.Contains(info, want) {
		t.Errorf("build-info.txt: got %q, want it to contain %q", info, want)
	}
	// And the log's line times, uploaded through a presigned URL of their
	// own (issue 16): line 1 has the first pair, a few milliseconds after
	// the start at most (0 on a quiet machine, 1 in a loaded CI run).
	code, body := c.MustDo(http.MethodGet, "/api/v1/builds/"+id+"/log?times=1", nil, nil)
	var times api.LogTimes
	if err := json.Unmarshal(body, &times); code != http.StatusOK || err != nil || !times.Complete ||
		times.Lines != int64(strings.Count(log, "\n")) || len(times.Times) == 0 || times.Times[0][0] != 1 || times.Times[0][1] > 5000 {
		t.Errorf("line times of %s: got %d %s (%v), want the complete index of its %d lines", id, code, body, err, strings.Count(log, "\n"))
	}
	// And they are where DESIGN.md's S3 layout puts them.
	for _, key := range []string{logKey, timesKey, artifactsKey} {
		obj, err := w.headObject(key)
		switch {
		case err != nil:
			t.Errorf("object %s in bucket %s: got %v, want it stored", key, w.bucket(), err)
		case obj.ContentLength == 0:
			t.Errorf("object %s in bucket %s: got %d bytes, want some", key, w.bucket(), obj.ContentLength)
		}
	}

	// GitHub redelivers with the same X-GitHub-Delivery: ingest answers
	// with the delivery's first build and publishes it again under that
	// ID. SQS would deduplicate it for 5 minutes; moto forgets the
	// deduplication ID of a deleted message, so here the dispatcher's
	// once-only check is what drops it.
	status, again, body := c.SignedHook("push", delivery, payload)
	if status != http.StatusAccepted || len(again.Builds) != 1 {
		t.Fatalf("redelivered push: got %d %s, want 202 with one build", status, body)
	}
	if again.Builds[0].ID != id {
		t.Errorf("redelivery answered with build %s, want the delivery's first build %s", again.Builds[0].ID, id)
	}
	// Once the queue is empty the redelivery was dropped or decided; a
	// decision writes the record before the message is deleted.
	waitQueueEmpty(c, w, w.queueURL(w.queue()), "the redelivery to leave the queue")
	if after, code, err := c.GetBuild(id); err != nil || code != http.StatusOK || after.Status != "succeeded" ||
		!after.StartedAt.Equal(rec.StartedAt) || !after.FinishedAt.Equal(rec.FinishedAt) {
		t.Errorf("build %s after its redelivery: got %s started %s finished %s (HTTP %d, %v); want still succeeded, started %s, finished %s",
			id, after, after.StartedAt, after.FinishedAt, code, err, rec.StartedAt, rec.FinishedAt)
	}
	var builds []string
	for _, r := range c.ProjectBuilds("Codertocat", "Hello-World") {
		builds = append(builds, r.ID+" "+r.Status)
	}
	if want := []string{id + " succeeded"}; !slices.Equal(builds, want) {
		t.Errorf("builds of Codertocat/Hello-World: got %v, want %v (one per unique delivery)", builds, want)
	}
	if got, want := w.objectKeys("logs/"), []string{logKey, timesKey}; !slices.Equal(got, want) {
		t.Errorf("console logs in bucket %s: got %v, want %v (one per unique delivery)", w.bucket(), got, want)
	}
}

// uuidPattern is a canonical lowercase UUID.
var uuidPattern = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)

// TestAWSMessageFromAnotherSystem puts build requests on the SQS queue with
// the AWS CLI, as a system other than ingest would: a valid one without a
// build ID builds under an ID the dispatcher assigns; a malformed one lands
// in the dead-letter queue with its reason and leaves the main queue, and
// breaks nothing (invariant 5).
func TestAWSMessageFromAnotherSystem(t *testing.T) {
	t.Parallel()
	w := newAWSWorld(t)
	s := newScripts(t)
	s.addTraced("e2e", "app", 200*time.Millisecond)
	c := w.cluster(proctest.Options{Scripts: s.dir, Trace: s.trace, Cap: 4})
	c.Start("reaper")
	c.Start("dispatcher")
	c.Start("ingest")
	queueURL, dlqURL := w.queueURL(w.queue()), w.queueURL(w.dlq())

	body, err := json.Marshal(map[string]any{
		"v": 1, "team": "e2e", "project": "app", "ref": "main", "refType": "branch",
		"trigger": "api", "requestedBy": "other-system", "requestedAt": time.Now().UTC().Format(time.RFC3339),
	})
	if err != nil {
		t.Fatal(err)
	}
	w.sendMessage(queueURL, "e2e/app/main", "other-system-"+proctest.RandomHex(8), string(body))

	// Nobody told ingest: the build shows up once a dispatcher took it.
	var other proctest.Record
	c.WaitFor(proctest.BuildTimeout, "a build requested by other-system to end", func() (bool, string) {
		builds, err := c.TryProjectBuilds("e2e", "app")
		if err != nil {
			return false, err.Error()
		}
		for _, r := range builds {
			if r.RequestedBy == "other-system" {
				other = r
				return proctest.IsFinal(r.Status), r.ID + ": " + r.String()
			}
		}
		return false, fmt.Sprintf("%d builds of e2e/app, none requested by other-system", len(builds))
	})
	if other.Status != "succeeded" || other.ExitCode == nil || *other.ExitCode != 0 {
		t.Errorf("build %s requested by other-system: got %s, want succeeded with exit code 0", other.ID, other)
	}
	if !uuidPattern.MatchString(other.ID) {
		t.Errorf("build requested by other-system: got ID %q, want a lowercase UUID the dispatcher assigned", other.ID)
	}
	if other.Ref != "main" || other.Trigger != "api" {
		t.Errorf("build %s requested by other-system: got ref %q, trigger %q; want main, api", other.ID, other.Ref, other.Trigger)
	}
	if rec, code, err := c.GetBuild(other.ID); err != nil || code != http.StatusOK || rec.Status != other.Status {
		t.Errorf("GET /api/v1/builds/%s: got %s (HTTP %d, %v), want the record the project's history shows (%s)", other.ID, rec, code, err, other)
	}

	// A body that is not a build request at all.
	const garbage = "not json"
	sent := w.sendMessage(queueURL, "other-system/garbage", "garbage-"+proctest.RandomHex(8), garbage)
	var dead sqsMessage
	c.WaitFor(proctest.BuildTimeout, "the malformed message in "+w.dlq(), func() (bool, string) {
		msgs, err := w.receive(dlqURL, 2*time.Second)
		if err != nil {
			return false, err.Error()
		}
		var bodies []string
		for _, m := range msgs {
			if m.Body == garbage {
				dead = m
				return true, ""
			}
			bodies = append(bodies, fmt.Sprintf("%q", m.Body))
		}
		return false, fmt.Sprintf("received %d messages %v, none with body %q", len(msgs), bodies, garbage)
	})
	if reason := dead.MessageAttributes["reason"].StringValue; !strings.Contains(reason, "malformed") {
		t.Errorf("dead letter's reason attribute: got %q (attributes %+v), want it to mention \"malformed\"", reason, dead.MessageAttributes)
	}
	if got := dead.MessageAttributes["originalMessageId"].StringValue; got != sent {
		t.Errorf("dead letter's originalMessageId attribute: got %q, want the MessageId of the send, %q", got, sent)
	}
	waitQueueEmpty(c, w, queueURL, "the malformed message to leave the main queue")
	// Dead-lettered once: the one copy this test received (in flight or,
	// after its visibility timeout, visible again) and no other.
	if d, err := w.depth(dlqURL); err != nil || d.visible+d.inFlight != 1 {
		t.Errorf("%s: got %s (%v), want exactly the one dead letter", w.dlq(), d, err)
	}

	// The services keep working.
	id := c.Push("e2e", "app", "main")
	c.WaitSucceeded(id)
	s.readTrace().checkStartedOnce(t, other.ID, id)

	// The build uploaded through presigned URLs; its script saw neither
	// the services' AWS credentials nor those URLs.
	env := tarFiles(t, c.Artifacts(id))["env.txt"]
	if !strings.Contains(env, "BUILD_ID="+id) {
		t.Errorf("environment of build %s lacks BUILD_ID=%s; got:\n%s", id, id, env)
	}
	for _, leak := range []string{"AWS_", "DECAP_", "X-Amz-", w.endpoint} {
		if strings.Contains(env, leak) {
			t.Errorf("environment of build %s contains %q; got:\n%s", id, leak, env)
		}
	}
}

// waitQueueEmpty waits until the queue at url holds no message, visible or
// in flight.
func waitQueueEmpty(c *proctest.Cluster, w *awsWorld, url, what string) {
	w.t.Helper()
	c.WaitFor(proctest.BuildTimeout, what, func() (bool, string) {
		d, err := w.depth(url)
		if err != nil {
			return false, err.Error()
		}
		return d == queueDepth{}, "the queue holds " + d.String()
	})
}
