package proctest

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/decap-ci/decap/internal/api"
	"github.com/decap-ci/decap/internal/build"
)

// The Cluster's HTTP methods talk to ingest. The Try… and Send… methods
// and Do return what went wrong, for callers that poll through restarts
// and outages or run on other goroutines; the others fail the test.

// Record is a build as the tests read it: api.Build with plain strings.
// The Cluster decodes every answer into internal/api's types and converts
// (RecordOf); Record's JSON tags serve tests that decode an answer
// themselves, and TestRecordDecodesAsAPIBuild keeps them api.Build's.
type Record struct {
	ID            string    `json:"id"`
	Number        int       `json:"number"`
	RebuildOf     string    `json:"rebuildOf"`
	Team          string    `json:"team"`
	Project       string    `json:"project"`
	Ref           string    `json:"ref"`
	RefType       string    `json:"refType"`
	SHA           string    `json:"sha"`
	Trigger       string    `json:"trigger"`
	RequestedBy   string    `json:"requestedBy"`
	DeliveryID    string    `json:"deliveryId"`
	Status        string    `json:"status"`
	ExitCode      *int      `json:"exitCode"`
	Reason        string    `json:"reason"`
	StartedAt     time.Time `json:"startedAt"`
	FinishedAt    time.Time `json:"finishedAt"`
	LogKey        string    `json:"logKey"`
	ArtifactsKey  string    `json:"artifactsKey"`
	PodName       string    `json:"podName"`
	CatalogCommit string    `json:"catalogCommit"`
	QueuedAt      time.Time `json:"queuedAt"`
	Attempt       int       `json:"attempt"`
	RetryOf       string    `json:"retryOf"`
	Infra         string    `json:"infra"`
	SupersededBy  string    `json:"supersededBy"`
	InfraRetries  int       `json:"infraRetries"`
	Supersedable  bool      `json:"supersedable"`
	// Secrets names the secrets the build was given; SecretsWithheld says
	// why it got fewer or none.
	Secrets         []string `json:"secrets"`
	SecretsWithheld string   `json:"secretsWithheld"`
}

// RecordOf converts the API's build to a Record.
func RecordOf(b api.Build) Record {
	return Record{
		ID: string(b.ID), Number: b.Number, RebuildOf: string(b.RebuildOf), Team: b.Team, Project: b.Project,
		Ref: b.Ref, RefType: string(b.RefType), SHA: b.SHA, Trigger: string(b.Trigger), RequestedBy: b.RequestedBy,
		DeliveryID: b.DeliveryID, Status: string(b.Status), ExitCode: b.ExitCode, Reason: b.Reason,
		StartedAt: b.StartedAt, FinishedAt: b.FinishedAt, LogKey: b.LogKey, ArtifactsKey: b.ArtifactsKey,
		PodName: b.PodName, CatalogCommit: b.CatalogCommit, QueuedAt: b.QueuedAt, Attempt: b.Attempt,
		RetryOf: string(b.RetryOf), Infra: string(b.Infra), SupersededBy: string(b.SupersededBy),
		InfraRetries: b.InfraRetries, Supersedable: b.Supersedable, Secrets: b.Secrets, SecretsWithheld: b.SecretsWithheld,
	}
}

// finalStatuses are the statuses a build record never leaves.
var finalStatuses = []string{"succeeded", "failed", "timed_out", "cancelled", "errored", "expired", "skipped", "superseded"}

// IsFinal reports whether a build record with status never changes again.
func IsFinal(status string) bool { return slices.Contains(finalStatuses, status) }

// Succeeded reports whether the build succeeded with exit code 0.
func (r Record) Succeeded() bool {
	return r.Status == "succeeded" && r.ExitCode != nil && *r.ExitCode == 0
}

// String returns the status, the exit code and the reason, as far as set:
// "failed exit 3 (Error 3)".
func (r Record) String() string {
	s := r.Status
	if r.ExitCode != nil {
		s += fmt.Sprintf(" exit %d", *r.ExitCode)
	}
	if r.Reason != "" {
		s += " (" + r.Reason + ")"
	}
	return s
}

// HookAnswer is the answer of POST /hooks/github as the tests read it
// (see HookAnswerOf).
type HookAnswer struct {
	Builds []struct {
		ID      string `json:"id"`
		LockKey string `json:"lockKey"`
	} `json:"builds"`
	Ignored string `json:"ignored"`
	Error   string `json:"error"`
}

// HookAnswerOf converts the API's webhook answer to a HookAnswer.
func HookAnswerOf(a api.HookAnswer) HookAnswer {
	out := HookAnswer{Ignored: a.Ignored, Error: a.Error}
	for _, q := range a.Builds {
		out.Builds = append(out.Builds, struct {
			ID      string `json:"id"`
			LockKey string `json:"lockKey"`
		}{ID: string(q.ID), LockKey: q.LockKey})
	}
	return out
}

// Project is one entry of GET /api/v1/projects as the tests read it,
// the descriptor as JSON.
type Project struct {
	Team       string          `json:"team"`
	Project    string          `json:"project"`
	Descriptor json.RawMessage `json:"descriptor"`
	Error      string          `json:"error"`
}

// Lease is one entry of GET /api/v1/locks as the tests read it.
type Lease struct {
	LockKey   string    `json:"lockKey"`
	BuildID   string    `json:"buildId"`
	Owner     string    `json:"owner"`
	ExpiresAt time.Time `json:"expiresAt"`
}

// QueueStats are the "stats" of GET /api/v1/queue.
type QueueStats = build.QueueStats

// Sign returns the X-Hub-Signature-256 value GitHub sends for body.
func Sign(secret string, body []byte) string {
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write(body)
	return "sha256=" + hex.EncodeToString(mac.Sum(nil))
}

// RandomHex returns n random bytes in hex.
func RandomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// NewDelivery returns a fresh X-GitHub-Delivery value.
func NewDelivery() string { return "proctest-" + RandomHex(16) }

// PushPayload is a minimal GitHub push payload of a branch, with a random
// commit.
func PushPayload(team, repo, branch string) []byte {
	body, _ := json.Marshal(map[string]any{
		"ref":     "refs/heads/" + branch,
		"before":  strings.Repeat("0", 40),
		"after":   RandomHex(20),
		"created": false,
		"deleted": false,
		"repository": map[string]any{
			"name":      repo,
			"full_name": team + "/" + repo,
			"owner":     map[string]string{"login": team, "name": team},
		},
		"pusher": map[string]string{"name": "proctest"},
		"sender": map[string]string{"login": "proctest"},
	})
	return body
}

// Ready reports whether addr answers /readyz with 200 through client, and
// the answer or the error as a status.
func Ready(client *http.Client, addr string) (bool, string) {
	resp, err := client.Get("http://" + addr + "/readyz")
	if err != nil {
		return false, err.Error()
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK, fmt.Sprintf("%d %s", resp.StatusCode, bytes.TrimSpace(body))
}

// URL returns the ingest URL of path.
func (c *Cluster) URL(path string) string { return "http://" + c.ingestAddr + path }

// Authorize sets Authorization: Bearer with Options.APIToken on req, for
// requests a test makes itself (reads need it too, unless the services run
// with DECAP_READ_AUTH=public); nothing without a token.
func (c *Cluster) Authorize(req *http.Request) {
	if c.opts.APIToken != "" {
		req.Header.Set("Authorization", "Bearer "+c.opts.APIToken)
	}
}

// Do sends a request to ingest and returns the status and body. It
// authorizes the request with Options.APIToken (Authorization: Bearer),
// reads and mutations alike, unless header has an Authorization key of its
// own: NoAuth() sends none at all.
func (c *Cluster) Do(method, path string, header http.Header, body []byte) (int, []byte, error) {
	return c.do(c.client, method, path, header, body)
}

// NoAuth is a header for Do that sends no credential.
func NoAuth() http.Header { return http.Header{"Authorization": nil} }

func (c *Cluster) do(client *http.Client, method, path string, header http.Header, body []byte) (int, []byte, error) {
	req, err := http.NewRequest(method, c.URL(path), bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	c.Authorize(req)
	for k, vs := range header {
		req.Header[k] = vs
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	return resp.StatusCode, data, err
}

// MustDo is Do that fails the test on a transport error.
func (c *Cluster) MustDo(method, path string, header http.Header, body []byte) (int, []byte) {
	c.tb.Helper()
	status, data, err := c.Do(method, path, header, body)
	if err != nil {
		c.tb.Fatalf("%s %s: %v", method, path, err)
	}
	return status, data
}

// hookHeader is the header of a GitHub webhook; signature "" sends none.
func hookHeader(event, delivery, signature string) http.Header {
	h := http.Header{}
	h.Set("Content-Type", "application/json")
	h.Set("X-GitHub-Event", event)
	h.Set("X-GitHub-Delivery", delivery)
	if signature != "" {
		h.Set("X-Hub-Signature-256", signature)
	}
	return h
}

// SendHook posts a webhook with the given signature header ("" for none)
// and returns the status, the answer as far as it is a HookAnswer, and the
// body.
func (c *Cluster) SendHook(event, delivery, signature string, body []byte) (int, HookAnswer, []byte) {
	c.tb.Helper()
	status, data := c.MustDo(http.MethodPost, "/hooks/github", hookHeader(event, delivery, signature), body)
	var got api.HookAnswer
	_ = json.Unmarshal(data, &got) // not every answer is a HookAnswer
	ans := HookAnswerOf(got)
	return status, ans, data
}

// SignedHook is SendHook signed with Options.WebhookSecret.
func (c *Cluster) SignedHook(event, delivery string, body []byte) (int, HookAnswer, []byte) {
	c.tb.Helper()
	return c.SendHook(event, delivery, Sign(c.opts.WebhookSecret, body), body)
}

// Push sends a signed push of branch with a fresh delivery and returns the
// build ID of the 202 answer; any other answer fails the test.
func (c *Cluster) Push(team, repo, branch string) string {
	c.tb.Helper()
	id, err := c.SendPush(c.client, NewDelivery(), PushPayload(team, repo, branch))
	if err != nil {
		c.tb.Fatalf("push %s/%s %s: %v", team, repo, branch, err)
	}
	return id
}

// SendPush posts a push webhook body, signed with Options.WebhookSecret,
// as delivery through client (a redelivery when delivery was sent before)
// and returns the build ID of the 202 answer. Any other answer is an
// error.
func (c *Cluster) SendPush(client *http.Client, delivery string, body []byte) (string, error) {
	h := hookHeader("push", delivery, Sign(c.opts.WebhookSecret, body))
	status, data, err := c.do(client, http.MethodPost, "/hooks/github", h, body)
	if err != nil {
		return "", err
	}
	var ans api.HookAnswer
	if status != http.StatusAccepted || json.Unmarshal(data, &ans) != nil || len(ans.Builds) != 1 || ans.Builds[0].ID == "" {
		return "", fmt.Errorf("got %d %.300s, want 202 with one build", status, data)
	}
	return string(ans.Builds[0].ID), nil
}

// RequestBuild asks for a build through the API with Options.APIToken and
// returns its ID; any answer but 202 with an ID fails the test.
func (c *Cluster) RequestBuild(team, repo, ref string) string {
	c.tb.Helper()
	id, err := c.TryRequestBuild(team, repo, ref)
	if err != nil {
		c.tb.Fatal(err)
	}
	return id
}

// TryRequestBuild is RequestBuild that returns what went wrong.
func (c *Cluster) TryRequestBuild(team, repo, ref string) (string, error) {
	status, data, err := c.RequestBuildRaw(team, repo, ref, c.opts.APIToken)
	if err != nil {
		return "", fmt.Errorf("request build of %s/%s %s: %w", team, repo, ref, err)
	}
	var ans api.Queued
	if status != http.StatusAccepted || json.Unmarshal(data, &ans) != nil || ans.ID == "" {
		return "", fmt.Errorf("request build of %s/%s %s: got %d %.300s, want 202 with an id", team, repo, ref, status, data)
	}
	return string(ans.ID), nil
}

// RequestBuildRaw asks for a build of ref through the API with token (""
// for no Authorization header) and returns the answer as it is.
func (c *Cluster) RequestBuildRaw(team, repo, ref, token string) (int, []byte, error) {
	body, _ := json.Marshal(api.BuildRequest{Ref: ref})
	h := NoAuth()
	h.Set("Content-Type", "application/json")
	if token != "" {
		h.Set("Authorization", "Bearer "+token)
	}
	return c.Do(http.MethodPost, "/api/v1/projects/"+team+"/"+repo+"/builds", h, body)
}

// GetBuild returns the record of id and the HTTP status (404 while no
// dispatcher has seen the request); the record is empty unless the status
// is 200.
func (c *Cluster) GetBuild(id string) (Record, int, error) {
	status, data, err := c.Do(http.MethodGet, "/api/v1/builds/"+id, nil, nil)
	if err != nil {
		return Record{}, 0, err
	}
	var b api.Build
	if status == http.StatusOK {
		if err := json.Unmarshal(data, &b); err != nil {
			return Record{}, status, fmt.Errorf("decode record %s: %w (%s)", id, err, data)
		}
		return RecordOf(b), status, nil
	}
	return Record{}, status, nil
}

// WaitStatus waits up to BuildTimeout until every build's record
// satisfies ok and returns the records by build ID.
func (c *Cluster) WaitStatus(what string, ok func(Record) bool, ids ...string) map[string]Record {
	c.tb.Helper()
	recs := map[string]Record{}
	c.WaitFor(BuildTimeout, what, func() (bool, string) {
		var pending []string
		for _, id := range ids {
			if r, seen := recs[id]; seen && ok(r) && IsFinal(r.Status) {
				continue // final records do not change
			}
			rec, status, err := c.GetBuild(id)
			switch {
			case err != nil:
				pending = append(pending, id+": "+err.Error())
			case status != http.StatusOK:
				pending = append(pending, fmt.Sprintf("%s: HTTP %d", id, status))
			default:
				recs[id] = rec
				if !ok(rec) {
					pending = append(pending, id+": "+rec.String())
				}
			}
		}
		sort.Strings(pending)
		return len(pending) == 0, strings.Join(pending, "; ")
	})
	return recs
}

// WaitFinal waits until every build has a final record.
func (c *Cluster) WaitFinal(ids ...string) map[string]Record {
	c.tb.Helper()
	return c.WaitStatus(fmt.Sprintf("%d builds to end", len(ids)), func(r Record) bool { return IsFinal(r.Status) }, ids...)
}

// WaitSucceeded waits until every build has a final record and fails the
// test unless each succeeded with exit code 0.
func (c *Cluster) WaitSucceeded(ids ...string) map[string]Record {
	c.tb.Helper()
	recs := c.WaitFinal(ids...)
	for _, id := range ids {
		if r := recs[id]; !r.Succeeded() {
			c.tb.Errorf("build %s (%s): got %s, want succeeded with exit code 0", id, r.Ref, r)
		}
	}
	return recs
}

// BuildLog returns the console log of a build.
func (c *Cluster) BuildLog(id string) string {
	c.tb.Helper()
	status, data := c.MustDo(http.MethodGet, "/api/v1/builds/"+id+"/log", nil, nil)
	if status != http.StatusOK {
		c.tb.Fatalf("GET log of %s: got %d %s, want 200", id, status, data)
	}
	return string(data)
}

// Artifacts returns the artifacts tarball of a build.
func (c *Cluster) Artifacts(id string) []byte {
	c.tb.Helper()
	status, data := c.MustDo(http.MethodGet, "/api/v1/builds/"+id+"/artifacts", nil, nil)
	if status != http.StatusOK {
		c.tb.Fatalf("GET artifacts of %s: got %d %.200s, want 200", id, status, data)
	}
	return data
}

// ProjectBuilds returns the records of a project's builds, newest first.
func (c *Cluster) ProjectBuilds(team, repo string) []Record {
	c.tb.Helper()
	builds, err := c.TryProjectBuilds(team, repo)
	if err != nil {
		c.tb.Fatal(err)
	}
	return builds
}

// TryProjectBuilds is ProjectBuilds that returns what went wrong.
func (c *Cluster) TryProjectBuilds(team, repo string) ([]Record, error) {
	status, data, err := c.Do(http.MethodGet, "/api/v1/projects/"+team+"/"+repo+"/builds?limit=200", nil, nil)
	if err != nil {
		return nil, fmt.Errorf("GET builds of %s/%s: %w", team, repo, err)
	}
	var page api.BuildPage
	if status != http.StatusOK || json.Unmarshal(data, &page) != nil {
		return nil, fmt.Errorf("GET builds of %s/%s: got %d %s, want 200 with builds", team, repo, status, data)
	}
	out := make([]Record, 0, len(page.Builds))
	for _, b := range page.Builds {
		out = append(out, RecordOf(b))
	}
	return out, nil
}

// Projects returns GET /api/v1/projects.
func (c *Cluster) Projects() []Project {
	c.tb.Helper()
	status, data := c.MustDo(http.MethodGet, "/api/v1/projects", nil, nil)
	var ans api.Projects
	if status != http.StatusOK || json.Unmarshal(data, &ans) != nil {
		c.tb.Fatalf("GET /api/v1/projects: got %d %s, want 200 with projects", status, data)
	}
	out := make([]Project, 0, len(ans.Projects))
	for _, p := range ans.Projects {
		q := Project{Team: p.Team, Project: p.Project.Project, Error: p.Error}
		if p.Descriptor != nil {
			q.Descriptor, _ = json.Marshal(p.Descriptor)
		}
		out = append(out, q)
	}
	return out
}

// Locks returns the held leases of GET /api/v1/locks.
func (c *Cluster) Locks() ([]Lease, error) {
	var ans api.Locks
	if err := c.getJSON("/api/v1/locks", &ans); err != nil {
		return nil, err
	}
	out := make([]Lease, 0, len(ans.Locks))
	for _, l := range ans.Locks {
		out = append(out, Lease{LockKey: l.Key, BuildID: string(l.BuildID), Owner: l.Owner, ExpiresAt: l.ExpiresAt})
	}
	return out, nil
}

// Queue returns the stats of GET /api/v1/queue.
func (c *Cluster) Queue() (QueueStats, error) {
	var ans api.Queue
	err := c.getJSON("/api/v1/queue", &ans)
	return ans.Stats, err
}

// getJSON decodes the answer of GET path into v; an answer other than 200
// is an error.
func (c *Cluster) getJSON(path string, v any) error {
	status, data, err := c.Do(http.MethodGet, path, nil, nil)
	if err != nil {
		return err
	}
	if status != http.StatusOK {
		return fmt.Errorf("GET %s: got %d %.300s", path, status, data)
	}
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("GET %s: decode %.300s: %w", path, data, err)
	}
	return nil
}
