package reliability_test

// HTTP helpers, after e2e/client_test.go; they return errors instead of
// failing the test, since they run on many goroutines and through outages.

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
	"strings"
	"time"
)

// buildRecord is the JSON of GET /api/v1/builds/{id}, as far as the suite
// reads it.
type buildRecord struct {
	ID         string `json:"id"`
	Ref        string `json:"ref"`
	Trigger    string `json:"trigger"`
	DeliveryID string `json:"deliveryId"`
	Status     string `json:"status"`
	ExitCode   *int   `json:"exitCode"`
	Reason     string `json:"reason"`
}

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

func (r buildRecord) succeeded() bool {
	return r.Status == "succeeded" && r.ExitCode != nil && *r.ExitCode == 0
}

func (c *cluster) url(path string) string { return "http://" + c.ingestAddr + path }

// doWith sends a request to ingest with client and returns status and body.
func (c *cluster) doWith(client *http.Client, method, path string, header http.Header, body []byte) (int, []byte, error) {
	req, err := http.NewRequest(method, c.url(path), bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
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

func (c *cluster) do(method, path string, header http.Header, body []byte) (int, []byte, error) {
	return c.doWith(c.client, method, path, header, body)
}

func sign(secret string, body []byte) string {
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write(body)
	return "sha256=" + hex.EncodeToString(mac.Sum(nil))
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func newDelivery() string { return "rel-" + randomHex(16) }

// pushPayload is a minimal GitHub push payload of a branch.
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
		"pusher": map[string]string{"name": "reliability"},
		"sender": map[string]string{"login": "reliability"},
	})
	return body
}

// pushWith posts a signed push webhook (body as GitHub would send it again
// on a redelivery) and returns the build ID of the 202 answer.
func (c *cluster) pushWith(client *http.Client, delivery string, body []byte) (string, error) {
	h := http.Header{}
	h.Set("Content-Type", "application/json")
	h.Set("X-GitHub-Event", "push")
	h.Set("X-GitHub-Delivery", delivery)
	h.Set("X-Hub-Signature-256", sign(webhookSecret, body))
	status, data, err := c.doWith(client, http.MethodPost, "/hooks/github", h, body)
	if err != nil {
		return "", err
	}
	var ans struct {
		Builds []struct {
			ID string `json:"id"`
		} `json:"builds"`
	}
	if status != http.StatusAccepted || json.Unmarshal(data, &ans) != nil || len(ans.Builds) != 1 || ans.Builds[0].ID == "" {
		return "", fmt.Errorf("push %s: got %d %.300s, want 202 with one build", delivery, status, data)
	}
	return ans.Builds[0].ID, nil
}

// requestBuild asks for a build through the API and returns its ID.
func (c *cluster) requestBuild(team, repo, ref string) (string, error) {
	body, _ := json.Marshal(map[string]string{"ref": ref})
	h := http.Header{}
	h.Set("Content-Type", "application/json")
	h.Set("Authorization", "Bearer "+apiToken)
	status, data, err := c.do(http.MethodPost, "/api/v1/projects/"+team+"/"+repo+"/builds", h, body)
	if err != nil {
		return "", err
	}
	var ans struct {
		ID string `json:"id"`
	}
	if status != http.StatusAccepted || json.Unmarshal(data, &ans) != nil || ans.ID == "" {
		return "", fmt.Errorf("request build of %s/%s %s: got %d %.300s, want 202 with an id", team, repo, ref, status, data)
	}
	return ans.ID, nil
}

// getBuild returns the record of id and the HTTP status.
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

// lease is one entry of GET /api/v1/locks.
type lease struct {
	LockKey   string    `json:"lockKey"`
	BuildID   string    `json:"buildId"`
	Owner     string    `json:"owner"`
	ExpiresAt time.Time `json:"expiresAt"`
}

func (c *cluster) locks() ([]lease, error) {
	status, data, err := c.do(http.MethodGet, "/api/v1/locks", nil, nil)
	if err != nil {
		return nil, err
	}
	var ans struct {
		Locks []lease `json:"locks"`
	}
	if status != http.StatusOK || json.Unmarshal(data, &ans) != nil {
		return nil, fmt.Errorf("GET /api/v1/locks: got %d %.300s", status, data)
	}
	return ans.Locks, nil
}

// queueStats is the "stats" of GET /api/v1/queue.
type queueStats struct {
	Visible, InFlight, DeadLettered int
}

func (c *cluster) queue() (queueStats, error) {
	status, data, err := c.do(http.MethodGet, "/api/v1/queue", nil, nil)
	if err != nil {
		return queueStats{}, err
	}
	var ans struct {
		Stats struct {
			Visible      int `json:"visible"`
			InFlight     int `json:"inFlight"`
			DeadLettered int `json:"deadLettered"`
		} `json:"stats"`
	}
	if status != http.StatusOK || json.Unmarshal(data, &ans) != nil {
		return queueStats{}, fmt.Errorf("GET /api/v1/queue: got %d %.300s", status, data)
	}
	return queueStats{ans.Stats.Visible, ans.Stats.InFlight, ans.Stats.DeadLettered}, nil
}

// ready reports whether addr answers /readyz with 200 within client's
// timeout.
func ready(client *http.Client, addr string) bool {
	resp, err := client.Get("http://" + addr + "/readyz")
	if err != nil {
		return false
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}
