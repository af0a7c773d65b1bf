package e2e_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/decap-ci/decap/internal/proctest"
)

// The pull request tests send GitHub's documented pull_request and
// issue_comment payloads (internal/ingest/testdata/github-webhooks, from
// octokit/webhooks), signed, with the fields that decide rewritten: the
// repository, the pull request's number, head repository (a fork), author
// association, head SHA and times, and the comment's author and text.

// prScript is the build.sh of the pull request tests' project: it traces
// its start and end as the traced builds do, prints what a pull request's
// build sees, and runs until it is stopped when its head branch says
// "slow".
const prScript = `#!/usr/bin/env bash
set -euo pipefail
trace=%s
echo "start ${BUILD_ID} ${BRANCH_TO_BUILD} $(date +%%s%%N)" >> "${trace}"
echo "pull request: number=${PULL_REQUEST_NUMBER:-} trusted=${PULL_REQUEST_TRUSTED:-} ref=${PULL_REQUEST_REF:-} base=${PULL_REQUEST_BASE_REF:-} head=${PULL_REQUEST_HEAD_REF:-} repo=${PULL_REQUEST_HEAD_REPO:-} sha=${COMMIT_SHA:-}"
case "${PULL_REQUEST_HEAD_REF:-}" in
*slow*) sleep 600 ;;
esac
echo "end ${BUILD_ID} ${BRANCH_TO_BUILD} $(date +%%s%%N)" >> "${trace}"
`

// prProject is the project of the pull request tests: e2e/pr, whose pull
// requests into main are built (untrusted ones once approved).
func (s *scriptsDir) addPullRequestProject() {
	s.t.Helper()
	s.add("e2e", "pr", `{"buildImage": "debian:bookworm-slim", "pullRequests": {"baseRefRegex": "main"}}`,
		fmt.Sprintf(prScript, shellQuote(s.trace)))
}

// prEvent is a pull_request or issue_comment payload of a pull request of
// team/project (e2e/pr when empty).
type prEvent struct {
	t             *testing.T
	team, project string
	number        int
	fork          bool
	assoc         string
	head          string // head SHA
	branch        string // head branch
	at            time.Time
}

// payloadFile reads one of ingest's payload fixtures as a JSON object.
func payloadFile(t *testing.T, name string) map[string]any {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(moduleRoot, "internal", "ingest", "testdata", "github-webhooks", name))
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func obj(m map[string]any, path ...string) map[string]any {
	for _, p := range path {
		m = m[p].(map[string]any)
	}
	return m
}

// repo makes a payload's repository object the event's repository (id
// 1000), or a fork of it.
func (e prEvent) repo(r map[string]any, fork bool) {
	team, project := e.team, e.project
	if team == "" {
		team, project = "e2e", "pr"
	}
	r["id"], r["name"], r["full_name"] = float64(1000), project, team+"/"+project
	obj(r, "owner")["login"] = team
	if fork {
		r["id"], r["full_name"] = float64(2000), "contributor/"+project
		obj(r, "owner")["login"] = "contributor"
	}
}

// pullRequest returns the pull_request event of action.
func (e prEvent) pullRequest(action string) []byte {
	m := payloadFile(e.t, "pull_request-opened.json")
	m["action"], m["number"] = action, float64(e.number)
	e.repo(obj(m, "repository"), false)
	pr := obj(m, "pull_request")
	pr["number"], pr["author_association"], pr["updated_at"] = float64(e.number), e.assoc, e.at.UTC().Format(time.RFC3339)
	pr["state"], pr["draft"] = "open", false
	if action == "closed" {
		pr["state"] = "closed"
	}
	e.repo(obj(pr, "base", "repo"), false)
	obj(pr, "base")["ref"] = "main"
	e.repo(obj(pr, "head", "repo"), e.fork)
	obj(pr, "head")["ref"], obj(pr, "head")["sha"] = e.branch, e.head
	b, err := json.Marshal(m)
	if err != nil {
		e.t.Fatal(err)
	}
	return b
}

// comment returns an issue_comment event: body written on the pull
// request by login, whom GitHub calls assoc, at at.
func (e prEvent) comment(body, login, assoc string, at time.Time) []byte {
	m := payloadFile(e.t, "issue_comment-created.json")
	e.repo(obj(m, "repository"), false)
	issue := obj(m, "issue")
	issue["number"] = float64(e.number)
	issue["pull_request"] = map[string]any{"url": fmt.Sprintf("https://api.github.com/repos/%s/pulls/%d", obj(m, "repository")["full_name"], e.number)}
	c := obj(m, "comment")
	c["body"], c["author_association"], c["created_at"] = body, assoc, at.UTC().Format(time.RFC3339)
	c["id"] = float64(at.Unix())
	obj(c, "user")["login"] = login
	b, err := json.Marshal(m)
	if err != nil {
		e.t.Fatal(err)
	}
	return b
}

// prAnswer is what ingest answers a pull request event.
type prAnswer struct {
	proctest.HookAnswer
	Waiting   string   `json:"waiting"`
	LockKey   string   `json:"lockKey"`
	Cancelled []string `json:"cancelled"`
}

func sendPR(t *testing.T, c *proctest.Cluster, event string, body []byte) prAnswer {
	t.Helper()
	status, _, raw := c.SignedHook(event, proctest.NewDelivery(), body)
	var ans prAnswer
	if err := json.Unmarshal(raw, &ans); err != nil || status != http.StatusAccepted {
		t.Fatalf("%s: got %d %s, want 202", event, status, raw)
	}
	return ans
}

// prRecord is a build record with its pull request.
type prRecord struct {
	proctest.Record
	PullRequest *struct {
		Number     int    `json:"number"`
		Trusted    bool   `json:"trusted"`
		ApprovedBy string `json:"approvedBy"`
		HeadSHA    string `json:"headSha"`
	} `json:"pullRequest"`
}

func getPRRecord(t *testing.T, c *proctest.Cluster, id string) prRecord {
	t.Helper()
	status, body := c.MustDo(http.MethodGet, "/api/v1/builds/"+id, nil, nil)
	var r prRecord
	if err := json.Unmarshal(body, &r); err != nil || status != http.StatusOK {
		t.Fatalf("GET build %s: %d %s", id, status, body)
	}
	return r
}

// openPulls returns the state of each open pull request of e2e/pr.
func openPulls(t *testing.T, c *proctest.Cluster) map[int]string {
	t.Helper()
	status, body := c.MustDo(http.MethodGet, "/api/v1/projects/e2e/pr/pulls", nil, nil)
	var list struct {
		Pulls []struct {
			Number int    `json:"number"`
			State  string `json:"state"`
		} `json:"pulls"`
	}
	if err := json.Unmarshal(body, &list); err != nil || status != http.StatusOK {
		t.Fatalf("GET pulls: %d %s", status, body)
	}
	out := map[int]string{}
	for _, p := range list.Pulls {
		out[p.Number] = p.State
	}
	return out
}

const (
	prHead1 = "1111111111111111111111111111111111111111"
	prHead2 = "2222222222222222222222222222222222222222"
	prHead3 = "3333333333333333333333333333333333333333"
	prHead4 = "4444444444444444444444444444444444444444"
)

// TestPullRequests runs the pull request scenario on the embedded default.
func TestPullRequests(t *testing.T) {
	t.Parallel()
	s := newScripts(t)
	s.addPullRequestProject()
	c := s.cluster(4)
	c.Start("reaper")
	c.Start("dispatcher")
	c.Start("ingest")
	pullRequestScenario(t, s, c)
}

// TestAWSPullRequests runs it on the AWS backend (moto): the pull requests'
// state lives in the builds table there.
func TestAWSPullRequests(t *testing.T) {
	t.Parallel()
	w := newAWSWorld(t)
	s := newScripts(t)
	s.addPullRequestProject()
	c := w.cluster(proctest.Options{Scripts: s.dir, Trace: s.trace, Cap: 4})
	c.Start("reaper")
	c.Start("dispatcher")
	c.Start("ingest")
	pullRequestScenario(t, s, c)
}

// pullRequestScenario: a fork's pull request waits for approval, with no
// build; a contributor's /ok-to-test is ignored, a member's builds it,
// untrusted (PULL_REQUEST_TRUSTED=false) from refs/pull/<N>/head; a push
// to it waits again. A member's pull request from the repository itself
// builds at once, trusted; a push to it supersedes its waiting build. A
// close cancels a running build.
func pullRequestScenario(t *testing.T, s *scriptsDir, c *proctest.Cluster) {
	t0 := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)

	// A fork's pull request waits.
	fork := prEvent{t: t, number: 2, fork: true, assoc: "CONTRIBUTOR", head: prHead1, branch: "fix-typo", at: t0}
	ans := sendPR(t, c, "pull_request", fork.pullRequest("opened"))
	if !strings.Contains(ans.Waiting, "pending: waiting for approval") || len(ans.Builds) != 0 {
		t.Fatalf("fork opened: answer %+v, want waiting for approval", ans)
	}
	if got := openPulls(t, c)[2]; got != "waiting" {
		t.Errorf("pull request #2: state %q, want waiting", got)
	}
	if builds := c.ProjectBuilds("e2e", "pr"); len(builds) != 0 {
		t.Errorf("a waiting pull request has builds: %v", builds)
	}
	// Its author cannot approve it; a member can.
	if ans := sendPR(t, c, "issue_comment", fork.comment("/ok-to-test", "contributor", "CONTRIBUTOR", t0.Add(time.Minute))); len(ans.Builds) != 0 || ans.Ignored == "" {
		t.Fatalf("/ok-to-test by the contributor: answer %+v, want ignored", ans)
	}
	ans = sendPR(t, c, "issue_comment", fork.comment("Looks harmless.\n/ok-to-test", "a-member", "MEMBER", t0.Add(2*time.Minute)))
	if len(ans.Builds) != 1 {
		t.Fatalf("/ok-to-test by a member: answer %+v, want one build", ans)
	}
	forkBuild := ans.Builds[0].ID
	c.WaitSucceeded(forkBuild)
	if log := c.BuildLog(forkBuild); !strings.Contains(log,
		"pull request: number=2 trusted=false ref=refs/pull/2/head base=main head=fix-typo repo=contributor/pr sha="+prHead1) {
		t.Errorf("the approved fork's build saw the wrong pull request:\n%s", log)
	}
	if r := getPRRecord(t, c, forkBuild); r.Ref != "pull/2" || r.RefType != "pull" || r.SHA != prHead1 || r.PullRequest == nil ||
		r.PullRequest.Trusted || r.PullRequest.ApprovedBy != "a-member" {
		t.Errorf("the approved fork's record: %+v %+v, want pull/2 at %s, untrusted, approved by a-member", r.Record, r.PullRequest, prHead1)
	}
	// A push to it waits again: the approval was for that head only.
	fork.head, fork.at = prHead2, t0.Add(3*time.Minute)
	if ans := sendPR(t, c, "pull_request", fork.pullRequest("synchronize")); ans.Waiting == "" || len(ans.Builds) != 0 {
		t.Fatalf("push to the approved fork: answer %+v, want waiting", ans)
	}

	// A member's pull request from the repository itself builds at once,
	// trusted.
	own := prEvent{t: t, number: 3, assoc: "MEMBER", head: prHead1, branch: "feature", at: t0}
	ans = sendPR(t, c, "pull_request", own.pullRequest("opened"))
	if len(ans.Builds) != 1 || ans.Builds[0].LockKey != "e2e/pr/pull/3" {
		t.Fatalf("member's pull request opened: answer %+v, want one build of e2e/pr/pull/3", ans)
	}
	ownBuild := ans.Builds[0].ID
	c.WaitSucceeded(ownBuild)
	if log := c.BuildLog(ownBuild); !strings.Contains(log, "pull request: number=3 trusted=true ref=refs/pull/3/head base=main head=feature repo=e2e/pr") {
		t.Errorf("the member's build saw the wrong pull request:\n%s", log)
	}

	// A push supersedes its waiting build: with dispatch paused, two
	// pushes queue two builds, and the second ends the first.
	if status, body := c.MustDo(http.MethodPost, "/api/v1/dispatch/pause", nil, []byte(`{"reason":"pull request test"}`)); status != http.StatusOK {
		t.Fatalf("pause dispatch: %d %s", status, body)
	}
	own.head, own.at = prHead2, t0.Add(time.Minute)
	waiting := sendPR(t, c, "pull_request", own.pullRequest("synchronize")).Builds
	own.head, own.at = prHead3, t0.Add(2*time.Minute)
	newer := sendPR(t, c, "pull_request", own.pullRequest("synchronize")).Builds
	if len(waiting) != 1 || len(newer) != 1 {
		t.Fatalf("pushes: builds %v and %v, want one each", waiting, newer)
	}
	recs := c.WaitFinal(waiting[0].ID)
	if r := recs[waiting[0].ID]; r.Status != "superseded" || r.SupersededBy != newer[0].ID {
		t.Errorf("the older push's build: %s, want superseded by %s", r, newer[0].ID)
	}
	if status, body := c.MustDo(http.MethodPost, "/api/v1/dispatch/resume", nil, nil); status != http.StatusOK {
		t.Fatalf("resume dispatch: %d %s", status, body)
	}
	c.WaitSucceeded(newer[0].ID)
	if log := c.BuildLog(newer[0].ID); !strings.Contains(log, "sha="+prHead3) {
		t.Errorf("the newest push's build did not build %s:\n%s", prHead3, log)
	}

	// Closing a pull request cancels its running build.
	slow := prEvent{t: t, number: 4, assoc: "OWNER", head: prHead4, branch: "slow-feature", at: t0}
	ans = sendPR(t, c, "pull_request", slow.pullRequest("opened"))
	if len(ans.Builds) != 1 {
		t.Fatalf("slow pull request opened: answer %+v, want one build", ans)
	}
	running := ans.Builds[0].ID
	s.waitStarted(c, running)
	slow.at = t0.Add(time.Minute)
	ans = sendPR(t, c, "pull_request", slow.pullRequest("closed"))
	if len(ans.Cancelled) != 1 || ans.Cancelled[0] != running {
		t.Fatalf("closed: answer %+v, want its running build %s cancelled", ans, running)
	}
	if r := c.WaitFinal(running)[running]; r.Status != "cancelled" {
		t.Errorf("the closed pull request's build: %s, want cancelled", r)
	}
	if _, open := openPulls(t, c)[4]; open {
		t.Error("the closed pull request is still listed as open")
	}
	if sp := s.readTrace().spans[waiting[0].ID]; sp != nil {
		t.Errorf("the superseded build ran: %+v", *sp)
	}
}
