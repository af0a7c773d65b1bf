package e2e_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/decap-ci/decap/internal/localexec"
	"github.com/decap-ci/decap/internal/proctest"
)

// keepEveryRequest is the project.json field of a project whose every
// request builds: a newer request of a branch supersedes none, as the
// tests of serialization, queueing and cancels want.
const keepEveryRequest = `"supersede": {"queued": false}`

// addSlow adds a traced project (see traced-build.sh.tmpl) that builds for
// sleep, with descriptor's fields added to a valid project.json.
func (s *scriptsDir) addSlow(team, project, fields string, sleep time.Duration) {
	s.t.Helper()
	s.add(team, project, descriptorWith(fields), tracedScript(s.t, s.trace, sleep, 0))
}

// addSideBySide adds a traced project like addSlow's whose first build
// waits for a second to start (companyWait), for tests that assert builds
// ran side by side.
func (s *scriptsDir) addSideBySide(team, project, fields string, sleep time.Duration) {
	s.t.Helper()
	s.add(team, project, descriptorWith(fields), tracedScript(s.t, s.trace, sleep, companyWait))
}

// descriptorWith is a valid project.json with fields added.
func descriptorWith(fields string) string {
	if fields == "" {
		return validDescriptor
	}
	return strings.TrimSuffix(validDescriptor, "}") + ", " + fields + "}"
}

// waitStarted waits until build id's script has written its start line.
func (s *scriptsDir) waitStarted(c *proctest.Cluster, id string) {
	s.t.Helper()
	c.WaitFor(proctest.BuildTimeout, "build "+id+"'s script to start", func() (bool, string) {
		sp := s.readTrace().spans[id]
		return sp != nil && sp.starts > 0, "no start in the trace yet"
	})
}

// checkOneRunningPerBranch reports builds of recs that ran at the same
// time, by their records (a stopped build writes no end to the trace).
func checkOneRunningPerBranch(t *testing.T, recs map[string]proctest.Record) {
	t.Helper()
	var ran []proctest.Record
	for _, r := range recs {
		if !r.StartedAt.IsZero() {
			ran = append(ran, r)
		}
	}
	for i, a := range ran {
		for _, b := range ran[i+1:] {
			if a.Ref == b.Ref && a.StartedAt.Before(b.FinishedAt) && b.StartedAt.Before(a.FinishedAt) {
				t.Errorf("builds %s [%s, %s] and %s [%s, %s] of %s ran at once", a.ID, fmtTime(a.StartedAt), fmtTime(a.FinishedAt),
					b.ID, fmtTime(b.StartedAt), fmtTime(b.FinishedAt), a.Ref)
			}
		}
	}
}

// TestThreePushesBuildFirstAndLast pushes a slow project's branch three
// times in quick succession (the second and third while the first runs):
// with supersede's defaults, the third supersedes the second, which never
// runs; the first and the third build. Then, with supersede.running, three
// more pushes: each stops the build before it, and only the last
// completes.
func TestThreePushesBuildFirstAndLast(t *testing.T) {
	t.Parallel()
	s := newScripts(t)
	s.addSlow("e2e", "queued", "", 4*time.Second)
	s.addSlow("e2e", "running", `"supersede": {"running": true}`, 10*time.Minute)
	c := s.cluster(4)
	c.Start("reaper")
	c.Start("dispatcher")
	c.Start("ingest")

	t.Run("queued", func(t *testing.T) {
		first := c.Push("e2e", "queued", "main")
		s.waitStarted(c, first)
		second, third := c.Push("e2e", "queued", "main"), c.Push("e2e", "queued", "main")
		recs := c.WaitFinal(first, second, third)
		if !recs[first].Succeeded() || !recs[third].Succeeded() {
			t.Errorf("first and last push: %s, %s; want both succeeded", recs[first], recs[third])
		}
		if r := recs[second]; r.Status != "superseded" || r.SupersededBy != third || !strings.Contains(r.Reason, third) {
			t.Errorf("second push: %s, superseded by %q; want superseded by the third, %s", r, r.SupersededBy, third)
		}
		tr := s.readTrace()
		if sp := tr.spans[second]; sp != nil {
			t.Errorf("the superseded request ran: %+v", *sp)
		}
		tr.checkSerialized(t, first, third)
	})

	t.Run("running", func(t *testing.T) {
		first := c.Push("e2e", "running", "main")
		s.waitStarted(c, first)
		second := c.Push("e2e", "running", "main")
		third := c.Push("e2e", "running", "main")
		recs := c.WaitFinal(first, second)
		for _, id := range []string{first, second} {
			if r := recs[id]; r.Status != "superseded" || r.SupersededBy == "" {
				t.Errorf("build %s: %s; want superseded", id, r)
			}
		}
		if r := recs[first]; r.SupersededBy != second && r.SupersededBy != third {
			t.Errorf("first build superseded by %s, want a later push", r.SupersededBy)
		}
		// The last one runs on its own: a long build, stopped here by a
		// cancel once it ran a while.
		s.waitStarted(c, third)
		if r, _, err := c.GetBuild(third); err != nil || r.Status != "running" {
			t.Fatalf("last push: %s (%v), want running", r, err)
		}
		auth := map[string][]string{"Authorization": {"Bearer " + apiToken}}
		if status, body := c.MustDo("DELETE", "/api/v1/builds/"+third, auth, nil); status != 202 {
			t.Fatalf("cancel of the last build: %d %s", status, body)
		}
		recs = c.WaitFinal(first, second, third)
		if r := recs[third]; r.Status != "cancelled" {
			t.Errorf("last build: %s, want cancelled on request (it was neither superseded nor retried)", r)
		}
		checkOneRunningPerBranch(t, recs)
		if n := s.readTrace().ended(); n != 2 {
			// The queued subtest's two builds; none of these three ran to its end.
			t.Errorf("%d builds wrote their end, want 2:\n%s", n, s.readTrace())
		}
	})
}

// retryOnceScript is a build script that, on its first run (no marker
// file yet), writes the marker and sleeps long, to be killed from outside;
// on later runs it succeeds at once. Both trace their start and end.
func retryOnceScript(trace, marker string) string {
	return fmt.Sprintf(`#!/usr/bin/env bash
set -euo pipefail
trace=%s
marker=%s
echo "start ${BUILD_ID} ${BRANCH_TO_BUILD} $(date +%%s%%N)" >> "${trace}"
if [ ! -s "${marker}" ]; then
  echo "${BUILD_ID}" > "${marker}"
  echo "first attempt: waiting to be killed"
  sleep 600
fi
echo "built ${BUILD_ID}"
echo "end ${BUILD_ID} ${BRANCH_TO_BUILD} $(date +%%s%%N)" >> "${trace}"
`, shellQuote(trace), shellQuote(marker))
}

// TestKilledBuildIsRetried kills a running build's build.sh with SIGKILL,
// from outside Decap (its pid from the local executor's run directory,
// script.pid): an infrastructure failure. The reaper records it errored
// (killed) and starts a retry, a build of its own linked to it, with the
// same ref and commit, which succeeds as attempt 2.
func TestKilledBuildIsRetried(t *testing.T) {
	t.Parallel()
	s := newScripts(t)
	marker := filepath.Join(filepath.Dir(s.trace), "marker")
	proctest.BuildWritable(t, marker)
	s.add("e2e", "flaky", validDescriptor, retryOnceScript(s.trace, marker))
	c := s.cluster(4)
	c.Start("reaper")
	c.Start("dispatcher")
	c.Start("ingest")

	first := c.Push("e2e", "flaky", "main")
	s.waitStarted(c, first)
	runDir, _ := localexec.RunDirFor(c.DataDir())
	pidFile := filepath.Join(runDir, "build-"+first, "script.pid")
	var pid int
	c.WaitFor(proctest.BuildTimeout, "build.sh's pid in "+pidFile, func() (bool, string) {
		data, err := os.ReadFile(pidFile)
		if err != nil {
			return false, err.Error()
		}
		f := strings.Fields(string(data))
		if len(f) == 0 {
			return false, "empty"
		}
		pid, err = strconv.Atoi(f[0])
		return err == nil && pid > 1, string(data)
	})
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatalf("kill build.sh (pid %d): %v", pid, err)
	}

	r := c.WaitFinal(first)[first]
	if r.Status != "errored" || r.Infra != "killed" {
		t.Fatalf("killed build: %s, infra %q; want errored, killed", r, r.Infra)
	}
	var retry proctest.Record
	c.WaitFor(proctest.BuildTimeout, "the retry to succeed", func() (bool, string) {
		for _, b := range c.ProjectBuilds("e2e", "flaky") {
			if b.RetryOf == first {
				retry = b
				return b.Succeeded(), b.String()
			}
		}
		return false, "no retry recorded"
	})
	if retry.Attempt != 2 || retry.Ref != r.Ref || retry.SHA != r.SHA || retry.SHA == "" || retry.Trigger != r.Trigger {
		t.Errorf("retry: attempt %d, ref %s, sha %s, trigger %s; want attempt 2 of ref %s at %s, %s",
			retry.Attempt, retry.Ref, retry.SHA, retry.Trigger, r.Ref, r.SHA, r.Trigger)
	}
	if retry.Number <= r.Number {
		t.Errorf("retry numbered #%d, the first #%d: want a number of its own, later", retry.Number, r.Number)
	}
	s.readTrace().checkStartedOnce(t, first, retry.ID)
	// No third attempt: the retry succeeded.
	time.Sleep(time.Second)
	if n := len(c.ProjectBuilds("e2e", "flaky")); n != 2 {
		t.Errorf("%d builds of the project, want the first and its one retry", n)
	}
}

// TestAWSOtherSystemSupersedes runs supersede on the AWS backend (moto)
// with requests of another system, sent to SQS without a build ID, next to
// ingest's: a producer's request is accepted when a dispatcher receives it,
// so it supersedes from then on. The project stops running builds
// (supersede.running). The other system's first build runs; a build
// requested through the API stops it (superseded by the API request); the
// other system's second message, sent at once, is received only after the
// API request left the queue (SQS hands out no later message of a group
// while an earlier one waits), and then stops that build in turn. Only
// the last runs on; never two of the branch at once.
func TestAWSOtherSystemSupersedes(t *testing.T) {
	t.Parallel()
	w := newAWSWorld(t)
	s := newScripts(t)
	s.addSlow("e2e", "app", `"supersede": {"running": true}`, 10*time.Minute)
	c := w.cluster(proctest.Options{Scripts: s.dir, Trace: s.trace, Cap: 4})
	c.Start("reaper")
	c.Start("dispatcher")
	c.Start("ingest")
	queueURL := w.queueURL(w.queue())
	send := func(by string) {
		body, err := json.Marshal(map[string]any{
			"v": 1, "team": "e2e", "project": "app", "ref": "main", "refType": "branch",
			"trigger": "api", "requestedBy": by, "requestedAt": time.Now().UTC().Format(time.RFC3339Nano),
		})
		if err != nil {
			t.Fatal(err)
		}
		w.sendMessage(queueURL, "e2e/app/main", by+"-"+proctest.RandomHex(8), string(body))
	}
	requestedBy := func(by string) (proctest.Record, bool) {
		builds, err := c.TryProjectBuilds("e2e", "app")
		if err != nil {
			return proctest.Record{}, false
		}
		for _, r := range builds {
			if r.RequestedBy == by {
				return r, true
			}
		}
		return proctest.Record{}, false
	}
	waitRunning := func(what string, find func() (proctest.Record, bool)) proctest.Record {
		t.Helper()
		var rec proctest.Record
		c.WaitFor(proctest.BuildTimeout, what+" to run", func() (bool, string) {
			r, ok := find()
			if !ok {
				return false, "no record yet"
			}
			rec = r
			sp := s.readTrace().spans[r.ID]
			return r.Status == "running" && sp != nil, r.String()
		})
		return rec
	}

	send("other-system-1")
	first := waitRunning("the other system's first build", func() (proctest.Record, bool) { return requestedBy("other-system-1") })
	api := c.RequestBuild("e2e", "app", "main")
	send("other-system-2")
	waitRunning("the API build", func() (proctest.Record, bool) {
		r, _, err := c.GetBuild(api)
		return r, err == nil
	})
	second := waitRunning("the other system's second build", func() (proctest.Record, bool) { return requestedBy("other-system-2") })

	recs := c.WaitFinal(first.ID, api)
	if r := recs[first.ID]; r.Status != "superseded" || r.SupersededBy != api {
		t.Errorf("the other system's first build: %s, superseded by %q; want superseded by the API request %s", r, r.SupersededBy, api)
	}
	if r := recs[api]; r.Status != "superseded" || r.SupersededBy != second.ID {
		t.Errorf("the API build: %s, superseded by %q; want superseded by the other system's second request %s", r, r.SupersededBy, second.ID)
	}
	auth := http.Header{"Authorization": {"Bearer " + apiToken}}
	if status, body := c.MustDo(http.MethodDelete, "/api/v1/builds/"+second.ID, auth, nil); status != http.StatusAccepted {
		t.Fatalf("cancel of the last build: %d %s", status, body)
	}
	recs = c.WaitFinal(first.ID, api, second.ID)
	if r := recs[second.ID]; r.Status != "cancelled" {
		t.Errorf("the other system's second build: %s, want cancelled (by the test)", r)
	}
	checkOneRunningPerBranch(t, recs)
}
