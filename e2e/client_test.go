package e2e_test

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
)

// buildRecord is the JSON of GET /api/v1/builds/{id}, as far as the tests
// read it.
type buildRecord struct {
	ID            string    `json:"id"`
	Team          string    `json:"team"`
	Project       string    `json:"project"`
	Ref           string    `json:"ref"`
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
}

// finalStatuses are the statuses a build record never leaves.
var finalStatuses = []string{"succeeded", "failed", "timed_out", "cancelled", "errored", "expired", "skipped"}

func isFinal(status string) bool { return slices.Contains(finalStatuses, status) }

func (r buildRecord) String() string {
	s := r.Status
	if r.ExitCode != nil {
		s += fmt.Sprintf(" exit %d", *r.ExitCode)
	}
	if r.Reason != "" {
		s += " (" + r.Reason + ")"
	}
	return s
}

// hookAnswer is the JSON answer of POST /hooks/github.
type hookAnswer struct {
	Builds []struct {
		ID      string `json:"id"`
		LockKey string `json:"lockKey"`
	} `json:"builds"`
	Ignored string `json:"ignored"`
	Error   string `json:"error"`
}

// project is one entry of GET /api/v1/projects.
type project struct {
	Team       string          `json:"team"`
	Project    string          `json:"project"`
	Descriptor json.RawMessage `json:"descriptor"`
	Error      string          `json:"error"`
}

// url returns the ingest URL of path.
func (c *cluster) url(path string) string { return "http://" + c.ingestAddr + path }

// do sends a request to ingest and returns the status and body; a transport
// error is returned, not fatal, so that callers may poll through restarts.
func (c *cluster) do(method, path string, header http.Header, body []byte) (int, []byte, error) {
	req, err := http.NewRequest(method, c.url(path), bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	for k, vs := range header {
		req.Header[k] = vs
	}
	resp, err := c.client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	return resp.StatusCode, data, err
}

// mustDo is do that fails the test on a transport error.
func (c *cluster) mustDo(method, path string, header http.Header, body []byte) (int, []byte) {
	c.t.Helper()
	status, data, err := c.do(method, path, header, body)
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, path, err)
	}
	return status, data
}

// sign returns the X-Hub-Signature-256 value GitHub sends for body.
func sign(secret string, body []byte) string {
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write(body)
	return "sha256=" + hex.EncodeToString(mac.Sum(nil))
}

// newDelivery returns a fresh X-GitHub-Delivery value.
func newDelivery() string { return "e2e-" + randomHex(16) }

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// sendHook posts a webhook with the given signature header ("" for none).
func (c *cluster) sendHook(event, delivery, signature string, body []byte) (int, hookAnswer, []byte) {
	c.t.Helper()
	h := http.Header{}
	h.Set("Content-Type", "application/json")
	h.Set("X-GitHub-Event", event)
	h.Set("X-GitHub-Delivery", delivery)
	if signature != "" {
		h.Set("X-Hub-Signature-256", signature)
	}
	status, data := c.mustDo(http.MethodPost, "/hooks/github", h, body)
	var ans hookAnswer
	_ = json.Unmarshal(data, &ans) // not every answer is a hookAnswer
	return status, ans, data
}

// signedHook posts a webhook signed with the cluster's secret.
func (c *cluster) signedHook(event, delivery string, body []byte) (int, hookAnswer, []byte) {
	c.t.Helper()
	return c.sendHook(event, delivery, sign(webhookSecret, body), body)
}

// pushPayload is a minimal GitHub push payload of ref (a branch name).
func pushPayload(team, repo, branch string) []byte {
	body, _ := json.Marshal(map[string]any{
		"ref":     "refs/heads/" + branch,
		"before":  strings.Repeat("0", 40),
		"after":   randomHex(20),
		"created": false,
		"deleted": false,
		"repository": map[string]any{
			"name":      repo,
			"full_name": team + "/" + repo,
			"owner":     map[string]string{"login": team, "name": team},
		},
		"pusher": map[string]string{"name": "e2e"},
		"sender": map[string]string{"login": "e2e"},
	})
	return body
}

// push sends a signed push of branch with a fresh delivery and returns the
// build ID of the 202 answer.
func (c *cluster) push(team, repo, branch string) string {
	c.t.Helper()
	return c.pushDelivery(team, repo, branch, newDelivery())
}

func (c *cluster) pushDelivery(team, repo, branch, delivery string) string {
	c.t.Helper()
	status, ans, data := c.signedHook("push", delivery, pushPayload(team, repo, branch))
	if status != http.StatusAccepted || len(ans.Builds) != 1 || ans.Builds[0].ID == "" {
		c.t.Fatalf("push %s/%s %s: got %d %s, want 202 with one build", team, repo, branch, status, data)
	}
	return ans.Builds[0].ID
}

// requestBuild asks for a build through the API and returns its ID.
func (c *cluster) requestBuild(team, repo, ref string) string {
	c.t.Helper()
	status, data, err := c.requestBuildRaw(team, repo, ref, apiToken)
	if err != nil {
		c.t.Fatalf("request build of %s/%s %s: %v", team, repo, ref, err)
	}
	var ans struct {
		ID string `json:"id"`
	}
	if status != http.StatusAccepted || json.Unmarshal(data, &ans) != nil || ans.ID == "" {
		c.t.Fatalf("request build of %s/%s %s: got %d %s, want 202 with an id", team, repo, ref, status, data)
	}
	return ans.ID
}

func (c *cluster) requestBuildRaw(team, repo, ref, token string) (int, []byte, error) {
	body, _ := json.Marshal(map[string]string{"ref": ref})
	h := http.Header{}
	h.Set("Content-Type", "application/json")
	if token != "" {
		h.Set("Authorization", "Bearer "+token)
	}
	return c.do(http.MethodPost, "/api/v1/projects/"+team+"/"+repo+"/builds", h, body)
}

// getBuild returns the record of id and the HTTP status (404 while no
// dispatcher has seen the request).
func (c *cluster) getBuild(id string) (buildRecord, int, error) {
	status, data, err := c.do(http.MethodGet, "/api/v1/builds/"+id, nil, nil)
	if err != nil {
		return buildRecord{}, 0, err
	}
	var rec buildRecord
	if status == http.StatusOK {
		if err := json.Unmarshal(data, &rec); err != nil {
			return buildRecord{}, status, fmt.Errorf("decode record %s: %w (%s)", id, err, data)
		}
	}
	return rec, status, nil
}

// waitStatus waits until every build's record satisfies ok and returns the
// records.
func (c *cluster) waitStatus(what string, ok func(buildRecord) bool, ids ...string) map[string]buildRecord {
	c.t.Helper()
	recs := map[string]buildRecord{}
	c.waitFor(buildTimeout, what, func() (bool, string) {
		var pending []string
		for _, id := range ids {
			if r, seen := recs[id]; seen && ok(r) && isFinal(r.Status) {
				continue // final records do not change
			}
			rec, status, err := c.getBuild(id)
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

// waitFinal waits until every build has a final record.
func (c *cluster) waitFinal(ids ...string) map[string]buildRecord {
	c.t.Helper()
	return c.waitStatus(fmt.Sprintf("%d builds to end", len(ids)), func(r buildRecord) bool { return isFinal(r.Status) }, ids...)
}

// waitSucceeded waits until every build has a final record and fails the
// test unless each succeeded with exit code 0.
func (c *cluster) waitSucceeded(ids ...string) map[string]buildRecord {
	c.t.Helper()
	recs := c.waitFinal(ids...)
	for _, id := range ids {
		r := recs[id]
		if r.Status != "succeeded" || r.ExitCode == nil || *r.ExitCode != 0 {
			c.t.Errorf("build %s (%s): got %s, want succeeded with exit code 0", id, r.Ref, r)
		}
	}
	return recs
}

// buildLog returns the console log of a build.
func (c *cluster) buildLog(id string) string {
	c.t.Helper()
	status, data := c.mustDo(http.MethodGet, "/api/v1/builds/"+id+"/log", nil, nil)
	if status != http.StatusOK {
		c.t.Fatalf("GET log of %s: got %d %s, want 200", id, status, data)
	}
	return string(data)
}

// artifacts returns the artifacts tarball of a build.
func (c *cluster) artifacts(id string) []byte {
	c.t.Helper()
	status, data := c.mustDo(http.MethodGet, "/api/v1/builds/"+id+"/artifacts", nil, nil)
	if status != http.StatusOK {
		c.t.Fatalf("GET artifacts of %s: got %d %.200s, want 200", id, status, data)
	}
	return data
}

// projectBuilds returns the records of a project's builds, newest first.
func (c *cluster) projectBuilds(team, repo string) []buildRecord {
	c.t.Helper()
	builds, err := c.tryProjectBuilds(team, repo)
	if err != nil {
		c.t.Fatal(err)
	}
	return builds
}

// tryProjectBuilds is projectBuilds that returns what went wrong, for
// callers that poll.
func (c *cluster) tryProjectBuilds(team, repo string) ([]buildRecord, error) {
	status, data, err := c.do(http.MethodGet, "/api/v1/projects/"+team+"/"+repo+"/builds?limit=200", nil, nil)
	if err != nil {
		return nil, fmt.Errorf("GET builds of %s/%s: %w", team, repo, err)
	}
	var page struct {
		Builds []buildRecord `json:"builds"`
	}
	if status != http.StatusOK || json.Unmarshal(data, &page) != nil {
		return nil, fmt.Errorf("GET builds of %s/%s: got %d %s, want 200 with builds", team, repo, status, data)
	}
	return page.Builds, nil
}

// projects returns GET /api/v1/projects.
func (c *cluster) projects() []project {
	c.t.Helper()
	status, data := c.mustDo(http.MethodGet, "/api/v1/projects", nil, nil)
	var ans struct {
		Projects []project `json:"projects"`
	}
	if status != http.StatusOK || json.Unmarshal(data, &ans) != nil {
		c.t.Fatalf("GET /api/v1/projects: got %d %s, want 200 with projects", status, data)
	}
	return ans.Projects
}
