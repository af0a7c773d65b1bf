package e2e_test

import (
	"net/http"
	"os"
	"strings"
	"testing"

	"github.com/decap-ci/decap/internal/proctest"
)

// sidecarDescriptor is a project with a database sidecar whose password
// is in project.json, as projects keep them.
const sidecarDescriptor = `{"buildImage": "debian:bookworm-slim", "sidecars": [{"name": "db", "image": "postgres:16",
  "env": [{"name": "POSTGRES_PASSWORD", "value": "sidecar-password-e2e-7f3a"}]}]}`

// TestReadsNeedCredentials checks the real ingest process (issue 12 items
// 1, 4 and 10): reads need the token or a session, a session is not the
// token and ends on the server when signed out, a sidecar's env value is
// never shown, and 200 wrong tokens in a burst are throttled and logged
// once, without the token.
func TestReadsNeedCredentials(t *testing.T) {
	t.Parallel()
	s := newScripts(t)
	s.add("e2e", "with-db", sidecarDescriptor, "#!/usr/bin/env bash\necho hello\n")
	c := newCluster(t, proctest.Options{Scripts: s.dir})
	ingest := c.Start("ingest")

	noAuth := proctest.NoAuth()
	for _, path := range []string{"/api/v1/projects", "/api/v1/queue", "/api/v1/teams", "/api/v1/dispatch"} {
		if status, body := c.MustDo(http.MethodGet, path, noAuth, nil); status != http.StatusUnauthorized {
			t.Errorf("GET %s without credentials: %d %.200s, want 401", path, status, body)
		}
	}
	status, body := c.MustDo(http.MethodGet, "/api/v1/projects", nil, nil)
	if status != http.StatusOK || !strings.Contains(string(body), "POSTGRES_PASSWORD") || strings.Contains(string(body), "sidecar-password-e2e-7f3a") {
		t.Errorf("GET /api/v1/projects with the token: %d %s; want the sidecar's env name and not its value", status, body)
	}

	// A session: its cookie is not the token, it reads, and signing out
	// ends it on the server.
	h := http.Header{"Content-Type": {"application/json"}}
	req, _ := http.NewRequest(http.MethodPost, c.URL("/api/v1/session"), strings.NewReader(`{"token":"`+apiToken+`"}`))
	req.Header = h
	resp, err := c.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	var cookie *http.Cookie
	for _, ck := range resp.Cookies() {
		if ck.Name == "decap_session" {
			cookie = ck
		}
	}
	if resp.StatusCode != http.StatusNoContent || cookie == nil || strings.Contains(cookie.Value, apiToken) {
		t.Fatalf("sign in: %d, cookie %v; want 204 and a session cookie that is not the token", resp.StatusCode, cookie)
	}
	withCookie := http.Header{"Authorization": nil, "Cookie": {cookie.Name + "=" + cookie.Value}}
	if status, body := c.MustDo(http.MethodGet, "/api/v1/queue", withCookie, nil); status != http.StatusOK {
		t.Errorf("GET /api/v1/queue with the session: %d %.200s", status, body)
	}
	if status, body := c.MustDo(http.MethodDelete, "/api/v1/session", withCookie, nil); status != http.StatusNoContent {
		t.Fatalf("sign out: %d %.200s", status, body)
	}
	if status, _ := c.MustDo(http.MethodGet, "/api/v1/queue", withCookie, nil); status != http.StatusUnauthorized {
		t.Errorf("GET /api/v1/queue with the signed-out session's cookie: %d, want 401", status)
	}

	// A burst of wrong tokens: refused, then throttled, logged once.
	codes := map[int]int{}
	for range 200 {
		status, _ := c.MustDo(http.MethodGet, "/api/v1/queue", http.Header{"Authorization": {"Bearer wrong-" + apiToken}}, nil)
		codes[status]++
	}
	if codes[http.StatusUnauthorized] < 1 || codes[http.StatusTooManyRequests] < 150 || codes[http.StatusUnauthorized]+codes[http.StatusTooManyRequests] != 200 {
		t.Errorf("200 wrong tokens answered %v, want some 401s, then 429s", codes)
	}
	if status, _ := c.MustDo(http.MethodGet, "/api/v1/queue", nil, nil); status != http.StatusTooManyRequests {
		t.Errorf("the right token from the throttled address: %d, want 429", status)
	}
	log, err := os.ReadFile(ingest.LogPath)
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for line := range strings.Lines(string(log)) {
		if strings.Contains(line, "authentication") {
			lines = append(lines, line)
		}
	}
	if len(lines) == 0 || len(lines) > 3 {
		t.Errorf("ingest logged %d lines about failed authentication, want 1 to 3:\n%s", len(lines), strings.Join(lines, ""))
	}
	if strings.Contains(string(log), apiToken) || strings.Contains(string(log), cookie.Value) {
		t.Errorf("ingest's log shows the token or a session ID")
	}
}

// TestReadsPublic checks DECAP_READ_AUTH=public on the real ingest process:
// reads need nothing, mutations still need the token, and a Host that DNS
// rebinding could send is refused.
func TestReadsPublic(t *testing.T) {
	t.Parallel()
	s := newScripts(t)
	s.add("e2e", "hello", validDescriptor, "#!/usr/bin/env bash\necho hello\n")
	c := newCluster(t, proctest.Options{Scripts: s.dir, Env: []string{"DECAP_READ_AUTH=public"}})
	c.Start("ingest")

	noAuth := proctest.NoAuth()
	for _, path := range []string{"/api/v1/projects", "/api/v1/queue", "/", "/ui/queue"} {
		if status, body := c.MustDo(http.MethodGet, path, noAuth, nil); status != http.StatusOK {
			t.Errorf("GET %s without credentials: %d %.200s, want 200", path, status, body)
		}
	}
	if status, _ := c.MustDo(http.MethodPost, "/api/v1/dispatch/pause", noAuth, nil); status != http.StatusUnauthorized {
		t.Errorf("pause without credentials: %d, want 401", status)
	}
	req, _ := http.NewRequest(http.MethodGet, c.URL("/api/v1/projects"), nil)
	req.Host = "rebound.attacker.example"
	resp, err := c.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("GET with Host rebound.attacker.example: %d, want 403", resp.StatusCode)
	}
}
