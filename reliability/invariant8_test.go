package reliability_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
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

// waitFinal waits until every build of ids has a final record.
func waitFinal(t *testing.T, c *proctest.Cluster, m *monitor, ids []string) {
	t.Helper()
	pending := map[string]bool{}
	for _, id := range ids {
		if id != "" {
			pending[id] = true
		}
	}
	last := time.Now()
	c.WaitFor(cfg.wait, fmt.Sprintf("%d requests to have a final record", len(pending)), func() (bool, string) {
		var first string
		for id := range pending {
			rec, code, err := c.GetBuild(id)
			if err == nil && code == http.StatusOK && proctest.IsFinal(rec.Status) {
				delete(pending, id)
			} else if first == "" {
				first = id + ": " + rec.String()
			}
		}
		m.mu.Lock()
		status := fmt.Sprintf("%d pending (e.g. %s); trace: %d started, %d ended", len(pending), first, len(m.tr), m.tr.ended())
		m.mu.Unlock()
		if time.Since(last) > 15*time.Second {
			t.Logf("waiting: %s", status)
			last = time.Now()
		}
		return len(pending) == 0, status
	})
}

// allBuilds returns every build record of team/project, through every
// page of the project's history.
func allBuilds(c *proctest.Cluster, project string) ([]proctest.Record, error) {
	var out []proctest.Record
	cursor := ""
	for page := 0; ; page++ {
		if page > 1000 {
			return nil, fmt.Errorf("builds of %s: more than 1000 pages", project)
		}
		path := "/api/v1/projects/" + project + "/builds?limit=200"
		if cursor != "" {
			path += "&cursor=" + url.QueryEscape(cursor)
		}
		status, data, err := c.Do(http.MethodGet, path, nil, nil)
		if err != nil {
			return nil, err
		}
		var ans struct {
			Builds     []proctest.Record `json:"builds"`
			NextCursor string            `json:"nextCursor"`
		}
		if status != http.StatusOK || json.Unmarshal(data, &ans) != nil {
			return nil, fmt.Errorf("GET %s: %d %.200s", path, status, data)
		}
		out = append(out, ans.Builds...)
		if ans.NextCursor == "" {
			return out, nil
		}
		cursor = ans.NextCursor
	}
}

// waitAllFinal waits until every build of projects ("team/project") has a
// final record — the accepted ones and the retries the reaper makes after
// them — and returns them by ID.
func waitAllFinal(t *testing.T, r *row, c *proctest.Cluster, projects map[string]bool) map[string]proctest.Record {
	t.Helper()
	var recs map[string]proctest.Record
	c.WaitFor(cfg.wait, "every build of the scenario, retries included, to have a final record", func() (bool, string) {
		recs = map[string]proctest.Record{}
		pending := 0
		var first string
		for p := range projects {
			builds, err := allBuilds(c, p)
			if err != nil {
				return false, err.Error()
			}
			for _, b := range builds {
				recs[b.ID] = b
				if !proctest.IsFinal(b.Status) {
					pending++
					if first == "" {
						first = b.ID + ": " + b.String()
					}
				}
			}
		}
		return pending == 0, fmt.Sprintf("%d of %d not final, e.g. %s", pending, len(recs), first)
	})
	return recs
}

// older reports whether a was accepted before b, as the services order a
// lock key's requests (build.Record.Older): by queue time, then build ID.
func older(a, b proctest.Record) bool {
	if !a.QueuedAt.Equal(b.QueuedAt) {
		return a.QueuedAt.Before(b.QueuedAt)
	}
	return a.ID < b.ID
}

func lockKey(r proctest.Record) string { return r.Team + "/" + r.Project + "/" + r.Ref }

// checkInvariant8 checks invariant 8 over a scenario's final records and
// its trace (whose per-branch serialization checkExact checks: supersede
// and retry never put two builds of a key, or more than the cap, at once):
//   - a superseded request names the request that superseded it, of its
//     lock key and newer; one superseded while it waited never started
//     (no start in the trace, no start in its record); one that started was
//     stopped as a running build (supersede.running) and was not retried;
//   - every retry is linked (retryOf) to a build of its key that ended
//     errored by an infrastructure failure, is its next attempt, builds
//     the same ref and commit, and no build has two retries;
//   - every build an infrastructure failure ended with retries left was
//     retried, unless a newer request of its key superseded it.
func checkInvariant8(t *testing.T, r *row, tr trace, recs map[string]proctest.Record) {
	t.Helper()
	retriesOf := map[string][]string{}
	for id, rec := range recs {
		if rec.RetryOf != "" {
			retriesOf[rec.RetryOf] = append(retriesOf[rec.RetryOf], id)
		}
	}
	newerOfKey := func(rec proctest.Record) string {
		for id, o := range recs {
			if id != rec.ID && lockKey(o) == lockKey(rec) && older(rec, o) {
				return id
			}
		}
		return ""
	}
	for id, rec := range recs {
		sp := tr[id]
		if rec.Status == "superseded" {
			r.add(&r.superseded, 1)
			by, ok := recs[rec.SupersededBy]
			switch {
			case !ok:
				r.violate(t, "build %s: superseded by %q, which is none of the scenario's builds", id, rec.SupersededBy)
			case lockKey(by) != lockKey(rec):
				r.violate(t, "build %s of %s superseded by %s of another lock key, %s", id, lockKey(rec), by.ID, lockKey(by))
			case rec.StartedAt.IsZero() && !older(rec, by):
				r.violate(t, "build %s superseded by %s, which is not newer", id, by.ID)
			}
			if rec.StartedAt.IsZero() && sp != nil {
				r.violate(t, "build %s was superseded while it waited, yet it started at %s: a superseded request ran",
					id, sp.start.Format("15:04:05.000000"))
			}
			if n := len(retriesOf[id]); n > 0 {
				r.violate(t, "build %s was superseded and retried %d times", id, n)
			}
		}
		if rec.RetryOf != "" {
			r.add(&r.retries, 1)
			orig, ok := recs[rec.RetryOf]
			switch {
			case !ok:
				r.violate(t, "build %s is a retry of %s, which is none of the scenario's builds", id, rec.RetryOf)
			case orig.Status != "errored" || orig.Infra == "":
				r.violate(t, "build %s is a retry of %s, which ended %s (infra %q), not by an infrastructure failure", id, orig.ID, orig, orig.Infra)
			case rec.Attempt != max(orig.Attempt, 1)+1 || lockKey(rec) != lockKey(orig) || rec.SHA != orig.SHA:
				r.violate(t, "build %s, retry of %s: attempt %d of %s at %q; want attempt %d of %s at %q",
					id, orig.ID, rec.Attempt, lockKey(rec), rec.SHA, max(orig.Attempt, 1)+1, lockKey(orig), orig.SHA)
			}
		}
		if n := len(retriesOf[id]); n > 1 {
			r.violate(t, "build %s has %d retries %v, want at most one", id, n, retriesOf[id])
		}
		if rec.Status == "errored" && rec.Infra != "" && max(rec.Attempt, 1) <= rec.InfraRetries && len(retriesOf[id]) == 0 {
			if newer := newerOfKey(rec); !rec.Supersedable || newer == "" {
				r.violate(t, "build %s ended by an infrastructure failure (%s) at attempt %d of %d retries and was not retried (supersedable %t, newer request %q)",
					id, rec.Infra, max(rec.Attempt, 1), rec.InfraRetries, rec.Supersedable, newer)
			}
		}
	}
	t.Logf("invariant 8: %d superseded, %d retries", r.superseded, r.retries)
}

// killBuildScript kills the build.sh of a running build with SIGKILL, from
// outside Decap (its pid from the local executor's run directory), and
// appends the build's end to the trace: nothing else can, and the process
// is gone. It reports false when the build ended or cannot be found.
func killBuildScript(c *proctest.Cluster, m *monitor) (string, bool) {
	m.mu.Lock()
	var victim *span
	for _, sp := range m.running {
		victim = sp
		break
	}
	m.mu.Unlock()
	if victim == nil {
		return "", false
	}
	runDir, _ := localexec.RunDirFor(c.DataDir())
	data, err := os.ReadFile(filepath.Join(runDir, "build-"+victim.id, "script.pid"))
	if err != nil {
		return "", false
	}
	f := strings.Fields(string(data))
	if len(f) < 2 {
		return "", false
	}
	pid, err := strconv.Atoi(f[0])
	if err != nil || pid <= 1 || startTime(pid) != f[1] {
		return "", false // ended, and its pid may be another process's now
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		return "", false
	}
	for range 200 {
		if startTime(pid) != f[1] {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	tf, err := os.OpenFile(c.Trace(), os.O_APPEND|os.O_WRONLY, 0)
	if err == nil {
		fmt.Fprintf(tf, "end %s %s %d\n", victim.id, victim.branch, time.Now().UnixNano())
		tf.Close()
	}
	return victim.id, true
}

// startTime returns field 22 of /proc/<pid>/stat (the process's start
// time, as the local executor records it beside the pid), or "" when
// there is no such process.
func startTime(pid int) string {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return ""
	}
	// The command name may hold spaces: fields count after its ')'.
	s := string(data)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return ""
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 20 {
		return ""
	}
	return f[19] // field 22 is the 20th after the name
}
