package e2e_test

import (
	"bytes"
	"compress/gzip"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/decap-ci/decap/internal/proctest"
)

// A secret of the secrets test: random, so that no other text contains
// it by chance, with a prefix that says what it is.
type secret struct{ name, value string }

func newSecret(name, prefix string) secret {
	const alphabet = "ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789"
	b := make([]byte, 32)
	rand.Read(b)
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return secret{name: name, value: prefix + string(b)}
}

// forms are the ways a secret could show up: as it is, its random part
// alone (a shortened or partly quoted form), and base64-encoded (a dumped
// header or configuration).
func (s secret) forms() []string {
	core := s.value[len(s.value)-24:]
	return []string{s.value, core, base64.StdEncoding.EncodeToString([]byte(s.value)), base64.RawURLEncoding.EncodeToString([]byte(s.value))}
}

// leaks reports every secret found in data, described as where.
func leaks(where string, data []byte, secrets []secret) []string {
	var out []string
	for _, s := range secrets {
		for _, form := range s.forms() {
			if i := bytes.Index(data, []byte(form)); i >= 0 {
				from, to := max(i-60, 0), min(i+len(form)+60, len(data))
				context := string(data[from:to])
				for _, o := range secrets {
					context = strings.ReplaceAll(context, o.value, "<"+o.name+">")
				}
				context = strings.ReplaceAll(context, form, "<"+s.name+">")
				out = append(out, fmt.Sprintf("%s contains %s: …%q…", where, s.name, context))
				break
			}
		}
	}
	return out
}

// leaksUnpacked is leaks of data and, when data is gzipped (a stored log,
// an artifacts tarball), of its unpacked content too.
func leaksUnpacked(where string, data []byte, secrets []secret) []string {
	out := leaks(where, data, secrets)
	if zr, err := gzip.NewReader(bytes.NewReader(data)); err == nil {
		plain, _ := io.ReadAll(zr)
		out = append(out, leaks(where+" (unpacked)", plain, secrets)...)
	}
	return out
}

// recordingTransport keeps every answer the test's HTTP client received,
// headers and body, so the test can look for secrets in all of them.
type recordingTransport struct {
	base http.RoundTripper

	mu      sync.Mutex
	answers []recordedAnswer
}

type recordedAnswer struct {
	request string
	status  int
	header  http.Header
	body    []byte
}

func (rt *recordingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := rt.base.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	rt.mu.Lock()
	rt.answers = append(rt.answers, recordedAnswer{request: req.Method + " " + req.URL.String(), status: resp.StatusCode, header: resp.Header.Clone(), body: body})
	rt.mu.Unlock()
	resp.Body = io.NopCloser(bytes.NewReader(body))
	return resp, err
}

func (rt *recordingTransport) CloseIdleConnections() {
	if c, ok := rt.base.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}

func (rt *recordingTransport) recorded() []recordedAnswer {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	return slices.Clone(rt.answers)
}

// fakeGitHub is GitHub's REST API as far as Decap uses it: branches, tags
// and commit statuses. Repository "e2e/denied" answers 401 Bad credentials
// and "e2e/flaky" 500, as GitHub does when a token is revoked or GitHub is
// down. It records the requests it got.
type fakeGitHub struct {
	*httptest.Server
	mu       sync.Mutex
	requests []string // method, path and the Authorization header
	statuses []string // "<sha> <state>"
}

func newFakeGitHub(t *testing.T) *fakeGitHub {
	t.Helper()
	gh := &fakeGitHub{}
	repo := regexp.MustCompile(`^/repos/([^/]+)/([^/]+)/(branches|tags|statuses/([0-9a-f]+))$`)
	gh.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		gh.mu.Lock()
		gh.requests = append(gh.requests, r.Method+" "+r.URL.Path+" Authorization: "+r.Header.Get("Authorization")+" body: "+string(body))
		gh.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		m := repo.FindStringSubmatch(r.URL.Path)
		switch {
		case m == nil:
			w.WriteHeader(http.StatusNotFound)
			io.WriteString(w, `{"message":"Not Found"}`)
		case m[1]+"/"+m[2] == "e2e/denied":
			w.WriteHeader(http.StatusUnauthorized)
			io.WriteString(w, `{"message":"Bad credentials","documentation_url":"https://docs.github.com/rest"}`)
		case m[1]+"/"+m[2] == "e2e/flaky":
			w.WriteHeader(http.StatusInternalServerError)
			io.WriteString(w, `{"message":"Server Error"}`)
		case r.Method == http.MethodGet && m[3] == "branches":
			io.WriteString(w, `[{"name":"main","commit":{"sha":"6113728f27ae82c7b1a177c8d03f9e96e0adf246"}}]`)
		case r.Method == http.MethodGet && m[3] == "tags":
			io.WriteString(w, `[]`)
		case r.Method == http.MethodPost && m[4] != "":
			var st struct {
				State string `json:"state"`
			}
			_ = json.Unmarshal(body, &st)
			gh.mu.Lock()
			gh.statuses = append(gh.statuses, m[4]+" "+st.State)
			gh.mu.Unlock()
			w.WriteHeader(http.StatusCreated)
			io.WriteString(w, `{"id":1,"state":"`+st.State+`"}`)
		default:
			w.WriteHeader(http.StatusNotFound)
			io.WriteString(w, `{"message":"Not Found"}`)
		}
	}))
	t.Cleanup(gh.Close)
	return gh
}

func (gh *fakeGitHub) snapshot() (requests, statuses []string) {
	gh.mu.Lock()
	defer gh.mu.Unlock()
	return slices.Clone(gh.requests), slices.Clone(gh.statuses)
}

// envDumpScript prints the whole environment of the build to the console
// log and into the artifacts. Then it looks, outside the log and the
// artifacts, at what else a build could read: the environment of every
// process it can see in /proc.
func envDumpScript(probe string) string {
	return `#!/usr/bin/env bash
set -uo pipefail
echo "== environment of build ${BUILD_ID}"
env | sort
mkdir -p "${BUILD_ARTIFACTS}"
env | sort > "${BUILD_ARTIFACTS}/env.txt"
echo "== end of environment"
for f in /proc/[0-9]*/environ; do tr '\0' '\n' < "$f"; done > ` + shellQuote(probe) + ` 2>/dev/null
exit 0
`
}

// TestSecretsNeverLeak runs the services with distinctive secrets (the
// webhook secret, the API token and a GitHub token), exercises good and bad
// webhooks, bad tokens, a build that prints its whole environment, log and
// artifact downloads, the repository manager's failures and other error
// answers; then looks for each secret everywhere the test can see: every
// service log, every file in the data directory (logs and artifacts
// unpacked), every HTTP answer, the console log, the artifacts and the
// build's environment. None may appear.
func TestSecretsNeverLeak(t *testing.T) {
	t.Parallel()
	requireE2E(t)
	webhook := newSecret("the webhook secret", "whsec-")
	api := newSecret("the API token", "apitok-")
	ghToken := newSecret("the GitHub token", "ghp_")
	secrets := []secret{webhook, api, ghToken}
	gh := newFakeGitHub(t)
	probe := filepath.Join(t.TempDir(), "proc-environ")
	proctest.BuildWritable(t, probe) // builds may run under users of their own

	s := newScripts(t)
	s.add("e2e", "env-dump", validDescriptor, envDumpScript(probe))
	s.add("e2e", "denied", validDescriptor, "#!/usr/bin/env bash\necho never\n")
	s.add("e2e", "flaky", validDescriptor, "#!/usr/bin/env bash\necho never\n")
	// The harness reads with api.value (reads need the token).
	c := newCluster(t, proctest.Options{Scripts: s.dir, Cap: 2, APIToken: api.value, Env: []string{
		// After the harness's own secrets: os/exec keeps the last value of
		// a variable given twice, so these win.
		"DECAP_GITHUB_WEBHOOK_SECRET=" + webhook.value,
		"DECAP_API_TOKEN=" + api.value,
		"DECAP_GITHUB_TOKEN=" + ghToken.value,
		"DECAP_GITHUB_API_URL=" + gh.URL + "/",
		"DECAP_LOG_LEVEL=debug",
	}})
	rec := &recordingTransport{base: c.Client().Transport}
	c.Client().Transport = rec
	reaper := c.Start("reaper")
	dispatcher := c.Start("dispatcher")
	ingest := c.Start("ingest")

	hook := func(signature string, body []byte) (int, proctest.HookAnswer, []byte) {
		return c.SendHook("push", proctest.NewDelivery(), signature, body)
	}
	bearer := func(auth string) http.Header {
		h := proctest.NoAuth()
		h.Set("Content-Type", "application/json")
		if auth != "" {
			h.Set("Authorization", auth)
		}
		return h
	}
	expect := func(what string, got, want int, body []byte) {
		t.Helper()
		if got != want {
			t.Errorf("%s: got %d %.300s, want %d", what, got, body, want)
		}
	}

	// A good webhook builds; the build prints its environment.
	payload := proctest.PushPayload("e2e", "env-dump", "main")
	status, ans, body := hook(proctest.Sign(webhook.value, payload), payload)
	if status != http.StatusAccepted || len(ans.Builds) != 1 {
		t.Fatalf("signed push: got %d %s, want 202 with one build", status, body)
	}
	id := ans.Builds[0].ID
	var pushed struct {
		After string `json:"after"`
	}
	_ = json.Unmarshal(payload, &pushed)

	// Bad webhooks; some carry a secret where it does not belong, which
	// the answer and the logs must not repeat.
	hostile, unknown := proctest.PushPayload("e2e", "env-dump", "../../etc"), proctest.PushPayload("e2e", "nowhere", "main")
	for _, tc := range []struct {
		name      string
		signature string
		body      []byte
		want      int
	}{
		{"unsigned", "", payload, http.StatusUnauthorized},
		{"signed with the harness's default secret", proctest.Sign(webhookSecret, payload), payload, http.StatusUnauthorized},
		{"signed with the API token", proctest.Sign(api.value, payload), payload, http.StatusUnauthorized},
		{"the secret itself as the signature", webhook.value, payload, http.StatusUnauthorized},
		{"the secret itself after sha256=", "sha256=" + webhook.value, payload, http.StatusUnauthorized},
		{"malformed body", proctest.Sign(webhook.value, []byte(`{"ref":`)), []byte(`{"ref":`), http.StatusBadRequest},
		{"hostile ref", proctest.Sign(webhook.value, hostile), hostile, http.StatusBadRequest},
		{"unknown project", proctest.Sign(webhook.value, unknown), unknown, http.StatusAccepted},
	} {
		status, ans, body := hook(tc.signature, tc.body)
		expect("webhook "+tc.name, status, tc.want, body)
		if len(ans.Builds) != 0 {
			t.Errorf("webhook %s: got builds %s, want none", tc.name, body)
		}
	}
	// The build-scripts hook, signed and not.
	status, body = c.MustDo(http.MethodPost, "/hooks/buildscripts", http.Header{"X-Hub-Signature-256": {proctest.Sign(webhook.value, nil)}}, nil)
	expect("signed buildscripts hook", status, http.StatusAccepted, body)
	status, body = c.MustDo(http.MethodPost, "/hooks/buildscripts", http.Header{"X-Hub-Signature-256": {"sha256=" + webhook.value}}, nil)
	expect("buildscripts hook with the secret as signature", status, http.StatusUnauthorized, body)

	// Bad tokens, and the right token on requests that fail otherwise.
	buildBody := []byte(`{"ref":"main"}`)
	for _, tc := range []struct {
		name, auth string
		body       []byte
		want       int
	}{
		{"no token", "", buildBody, http.StatusUnauthorized},
		{"wrong token", "Bearer not-the-token", buildBody, http.StatusUnauthorized},
		{"the harness's default token", "Bearer " + apiToken, buildBody, http.StatusUnauthorized},
		{"the token with a byte more", "Bearer " + api.value + "x", buildBody, http.StatusUnauthorized},
		{"the token without its last byte", "Bearer " + api.value[:len(api.value)-1], buildBody, http.StatusUnauthorized},
		{"the webhook secret as token", "Bearer " + webhook.value, buildBody, http.StatusUnauthorized},
		{"the GitHub token as token", "Bearer " + ghToken.value, buildBody, http.StatusUnauthorized},
		{"the token as basic auth", "Basic " + base64.StdEncoding.EncodeToString([]byte("decap:"+api.value)), buildBody, http.StatusUnauthorized},
		{"the token without Bearer", api.value, buildBody, http.StatusUnauthorized},
		{"the right token, a hostile ref", "Bearer " + api.value, []byte(`{"ref":"a..b"}`), http.StatusBadRequest},
		{"the right token, a malformed body", "Bearer " + api.value, []byte(`{"ref":`), http.StatusBadRequest},
	} {
		status, body := c.MustDo(http.MethodPost, "/api/v1/projects/e2e/env-dump/builds", bearer(tc.auth), tc.body)
		expect("build request with "+tc.name, status, tc.want, body)
	}
	status, body = c.MustDo(http.MethodPost, "/api/v1/session", bearer(""), []byte(`{"token":"`+api.value+`x"}`))
	expect("session with a wrong token", status, http.StatusUnauthorized, body)
	status, body = c.MustDo(http.MethodPost, "/api/v1/dispatch/pause", bearer("Bearer "+webhook.value), nil)
	expect("pause with the webhook secret as token", status, http.StatusUnauthorized, body)
	status, body = c.MustDo(http.MethodDelete, "/api/v1/locks/e2e/env-dump/nobody-holds-this", bearer("Bearer "+api.value), nil)
	expect("release a lock nobody holds", status, http.StatusNotFound, body)

	// The build: its record, console log and artifacts.
	c.WaitSucceeded(id)
	consoleLog := c.BuildLog(id)
	artifacts := c.Artifacts(id)
	files := tarFiles(t, artifacts)
	if !strings.Contains(consoleLog, "BUILD_ID="+id) || !strings.Contains(files["env.txt"], "BUILD_ID="+id) {
		t.Fatalf("the build did not print its environment: console log %q, artifacts %v", consoleLog, mapKeys(files))
	}
	for _, line := range strings.Split(files["env.txt"], "\n") {
		if strings.HasPrefix(line, "DECAP_") || strings.HasPrefix(line, "AWS_") {
			t.Errorf("the build's environment has the services' setting %q", strings.SplitN(line, "=", 2)[0])
		}
	}

	// More answers, errors among them, from all three services.
	status, body = c.MustDo(http.MethodDelete, "/api/v1/builds/"+id, bearer("Bearer "+api.value), nil)
	expect("cancel an ended build", status, http.StatusConflict, body)
	for _, tc := range []struct {
		path string
		want int // 0: any status below 500
	}{
		{"/api/v1/builds/" + id, http.StatusOK},
		{"/api/v1/builds/00000000-0000-7000-8000-000000000000", http.StatusNotFound},
		{"/api/v1/builds/..%2F..%2Fetc", http.StatusBadRequest},
		{"/api/v1/builds/00000000-0000-7000-8000-000000000000/log", http.StatusNotFound},
		{"/api/v1/projects", http.StatusOK},
		{"/api/v1/projects/e2e/env-dump/builds", http.StatusOK},
		{"/api/v1/projects/e2e/env-dump/refs", http.StatusOK},
		{"/api/v1/projects/e2e/denied/refs", http.StatusBadGateway},
		{"/api/v1/projects/e2e/flaky/refs", http.StatusServiceUnavailable},
		{"/api/v1/projects/e2e/nowhere/refs", http.StatusNotFound},
		{"/api/v1/teams", http.StatusOK},
		{"/api/v1/queue", http.StatusOK},
		{"/api/v1/locks", http.StatusOK},
		{"/api/v1/dispatch", http.StatusOK},
		{"/healthz", http.StatusOK},
		{"/readyz", http.StatusOK},
		{"/metrics", 0},
		{"/", 0},
		{"/ui/builds/" + id, 0},
		{"/ui/login", 0},
		{"/no/such/page", http.StatusNotFound},
	} {
		status, body := c.MustDo(http.MethodGet, tc.path, nil, nil)
		if tc.want == 0 && status >= 500 || tc.want != 0 && status != tc.want {
			t.Errorf("GET %s: got %d %.300s, want %d", tc.path, status, body, tc.want)
		}
	}
	for _, svc := range []*proctest.Service{dispatcher, reaper} {
		for _, path := range []string{"/healthz", "/readyz", "/metrics"} {
			resp, err := c.Client().Get("http://" + svc.Addr + path)
			if err != nil {
				t.Errorf("GET %s of %s: %v", path, svc.Name, err)
				continue
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}

	// The GitHub token was used (so this test is not vacuous): for the refs
	// and for the commit statuses, the last by the reaper when the build
	// ended. No other secret ever went to GitHub.
	c.WaitFor(proctest.BuildTimeout, "the reaper's commit status", func() (bool, string) {
		_, statuses := gh.snapshot()
		return slices.Contains(statuses, pushed.After+" success"), strings.Join(statuses, ", ")
	})
	requests, _ := gh.snapshot()
	used := false
	for _, r := range requests {
		used = used || strings.Contains(r, "Authorization: Bearer "+ghToken.value) || strings.Contains(r, "Authorization: token "+ghToken.value)
	}
	if !used {
		t.Errorf("GitHub never saw the GitHub token; requests: %q", requests)
	}
	all := []byte(strings.Join(requests, "\n"))
	for _, l := range leaks("the requests to GitHub", all, []secret{webhook, api}) {
		t.Error(l)
	}

	// Stop the services, so every log line is written, then look.
	c.Stop(ingest)
	c.Stop(dispatcher)
	c.Stop(reaper)

	var found []string
	for _, a := range rec.recorded() {
		head := fmt.Sprintf("%d %v", a.status, a.header)
		found = append(found, leaks("the answer to "+a.request, []byte(head), secrets)...)
		found = append(found, leaksUnpacked("the answer to "+a.request, a.body, secrets)...)
	}
	found = append(found, leaks("the console log", []byte(consoleLog), secrets)...)
	for name, content := range files {
		found = append(found, leaks("the artifact "+name, []byte(content), secrets)...)
	}
	searched := 0
	err := filepath.WalkDir(c.Dir(), func(path string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		searched++
		rel, _ := filepath.Rel(c.Dir(), path)
		found = append(found, leaksUnpacked(rel, data, secrets)...)
		return nil
	})
	if err != nil {
		t.Fatalf("walk %s: %v", c.Dir(), err)
	}
	logs, _ := filepath.Glob(filepath.Join(c.Dir(), "logs", "*.log"))
	if len(logs) != 3 || searched < 5 {
		t.Errorf("searched %d files with logs %v; want the three services' logs and the data directory", searched, logs)
	}
	for _, f := range found {
		t.Error(f)
	}
	for _, l := range logs {
		if data, _ := os.ReadFile(l); bytes.Contains(data, []byte("DECAP_INSECURE_SKIP_SIGNATURE is on")) {
			t.Errorf("%s warns of DECAP_INSECURE_SKIP_SIGNATURE, which is off", filepath.Base(l))
		}
	}
	if len(rec.recorded()) < 40 {
		t.Errorf("recorded %d answers, want every request of this test", len(rec.recorded()))
	}

	t.Run("a build cannot read the services' environment", func(t *testing.T) {
		data, err := os.ReadFile(probe)
		if err != nil {
			t.Fatalf("the build's probe of /proc/*/environ: %v", err)
		}
		// The services are not dumpable (internal/harden), and, run as
		// root, run builds under users of their own: neither way may a
		// build read their /proc/<pid>/environ.
		for _, f := range leaks("a build's reading of /proc/*/environ", data, secrets) {
			t.Error(f)
		}
	})
}

// TestInsecureSkipSignatureWarns starts ingest with
// DECAP_INSECURE_SKIP_SIGNATURE=1 and no webhook secret: it warns loudly
// (level WARN, naming the variable) at start, before it serves anything,
// and then accepts an unsigned push.
func TestInsecureSkipSignatureWarns(t *testing.T) {
	t.Parallel()
	s := newScripts(t)
	s.add("e2e", "app", validDescriptor, "#!/usr/bin/env bash\necho ok\n")
	c := newCluster(t, proctest.Options{Scripts: s.dir, Env: []string{
		"DECAP_INSECURE_SKIP_SIGNATURE=1",
		"DECAP_GITHUB_WEBHOOK_SECRET=",
	}})
	ingest := c.Start("ingest")

	data, err := os.ReadFile(ingest.LogPath)
	if err != nil {
		t.Fatal(err)
	}
	var warning string
	for _, line := range strings.Split(string(data), "\n") {
		if strings.Contains(line, "DECAP_INSECURE_SKIP_SIGNATURE") {
			warning = line
			break
		}
	}
	switch {
	case warning == "":
		t.Fatalf("ingest's log at start has no warning about DECAP_INSECURE_SKIP_SIGNATURE:\n%s", data)
	case !strings.Contains(warning, "level=WARN") && !strings.Contains(warning, "level=ERROR"):
		t.Errorf("the warning about DECAP_INSECURE_SKIP_SIGNATURE is not at level WARN or above: %s", warning)
	case !strings.Contains(strings.ToLower(warning), "without signature"):
		t.Errorf("the warning does not say webhooks are accepted without a signature: %s", warning)
	}

	payload := proctest.PushPayload("e2e", "app", "main")
	status, ans, body := c.SendHook("push", proctest.NewDelivery(), "", payload)
	if status != http.StatusAccepted || len(ans.Builds) != 1 {
		t.Errorf("unsigned push with the check off: got %d %s, want 202 with one build", status, body)
	}
	c.Stop(ingest)
}
