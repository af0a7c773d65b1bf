package e2e_test

import (
	"bytes"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"text/template"
	"time"

	"github.com/decap-ci/decap/internal/proctest"
)

var hostileTemplate = template.Must(template.ParseFiles(filepath.Join("testdata", "hostile-build.sh.tmpl")))

// victimScript is a build that keeps a secret in its workspace, made
// readable by anyone who gets that far, and runs until it is cancelled.
func victimScript(secret string) string {
	return `#!/usr/bin/env bash
set -eu
echo ` + shellQuote(secret) + ` > secret.txt
chmod 0644 secret.txt
chmod 0755 .
echo "victim ready"
sleep 120
`
}

// TestHostileBuildFindsNothing runs a build.sh that attacks everything a
// local build could reach (issue 12, item 2; DESIGN.md "Trust"): the
// secrets and database in the data directory, the services' and the
// entrypoints' /proc (environ, memory, descriptors), signals and ptrace,
// the blob store, its own result and log, another running build's
// directory, the API with any token it found, requests sent blind (the
// socket closed before the service reads them), and a process left
// behind with setsid. Every attempt must fail, no secret may show up in
// its log or artifacts, and nothing of it may outlive the build.
//
// It runs twice: as a branch's build, granted its project's secret
// HOSTILE_OWN, and as an untrusted pull request's build (a fork's, approved
// by a member: DESIGN.md "Untrusted builds get no secrets"), which must
// find not even that one.
func TestHostileBuildFindsNothing(t *testing.T) {
	t.Parallel()
	requireE2E(t)
	if os.Geteuid() != 0 {
		t.Skip("the local executor runs builds under their own uids only when Decap runs as root (CI does); as another user it warns at start instead, see README \"What a build sees\"")
	}
	// One after the other: the hostile build looks for every victim build
	// on the machine, and must meet its own cluster's.
	t.Run("branch", func(t *testing.T) { hostileBuild(t, false) })
	t.Run("untrusted pull request", func(t *testing.T) { hostileBuild(t, true) })
}

// hostileBuild runs the hostile build of TestHostileBuildFindsNothing, as
// a fork's approved pull request when untrusted.
func hostileBuild(t *testing.T, untrusted bool) {
	victimSecret := newSecret("the victim build's secret", "victim-")
	ghToken := newSecret("the GitHub token", "ghp_")

	// Build secrets: the victim's, granted to it; the hostile project's own,
	// one granted and one not (DESIGN.md invariant 6).
	victimToken := newSecret("the victim's build secret", "victok-")
	hostileOwn := newSecret("the hostile build's own granted secret", "own-")
	notGranted := newSecret("a secret of the hostile project it was not granted", "notgranted-")

	s := newScripts(t)
	s.add("e2e", "victim", `{"buildImage": "debian:bookworm-slim", "secrets": ["VICTIM_TOKEN"]}`, victimScript(victimSecret.value))
	c := newCluster(t, proctest.Options{Scripts: s.dir, Cap: 4, Env: []string{
		// Secrets kept in files of the data directory, as
		// scripts/run-local.sh keeps them, and one in the environment only.
		"DECAP_API_TOKEN=",
		"DECAP_API_TOKEN_FILE=" + filepath.Join("data", "api-token"),
		"DECAP_GITHUB_WEBHOOK_SECRET=",
		"DECAP_GITHUB_WEBHOOK_SECRET_FILE=" + filepath.Join("data", "github-webhook-secret"),
		"DECAP_GITHUB_TOKEN=" + ghToken.value,
		// Reads as `make run` serves them: only the network path keeps a
		// build from every build's logs.
		"DECAP_READ_AUTH=public",
	}})
	// The hostile script is written once the services run and their
	// addresses are known; the catalog knows the project from the start,
	// and a directory source exports the files as they are at launch.
	hostileDescriptor := `{"buildImage": "debian:bookworm-slim", "secrets": ["HOSTILE_OWN"], "pullRequests": {}}`
	s.add("e2e", "hostile", hostileDescriptor, "exit 0\n")
	// Whatever the hostile build leaves running, should the test fail
	// before it checks: its processes' working directory is in the data
	// directory, and their command line need not say so.
	t.Cleanup(func() { killProcessesIn(c.DataDir()) })

	// Written as a careless operator would (0644); the services tighten
	// them at start.
	data := c.DataDir()
	if err := os.MkdirAll(data, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, value := range map[string]string{"api-token": apiToken, "github-webhook-secret": webhookSecret} {
		if err := os.WriteFile(filepath.Join(data, name), []byte(value+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	secrets := []string{apiToken, webhookSecret, ghToken.value, victimSecret.value}

	c.Start("reaper")
	c.Start("dispatcher")
	c.Start("ingest")
	checkDataDirModes(t, data)
	var addrs []string
	for _, svc := range c.Services() {
		addrs = append(addrs, svc.Addr)
	}
	var script bytes.Buffer
	if err := hostileTemplate.Execute(&script, map[string]string{
		"Ingest": shellQuote(c.IngestAddr()), "Services": shellQuote(strings.Join(addrs, " ")),
	}); err != nil {
		t.Fatalf("render hostile build script: %v", err)
	}
	s.add("e2e", "hostile", hostileDescriptor, script.String())
	for _, sec := range []struct {
		project, name string
		s             secret
	}{{"victim", "VICTIM_TOKEN", victimToken}, {"hostile", "HOSTILE_OWN", hostileOwn}, {"hostile", "NOT_GRANTED", notGranted}} {
		status, body := c.MustDo(http.MethodPut, "/api/v1/projects/e2e/"+sec.project+"/secrets/"+sec.name, http.Header{"Authorization": {"Bearer " + apiToken}}, []byte(sec.s.value))
		if status != http.StatusOK {
			t.Fatalf("set secret %s of e2e/%s: got %d %s", sec.name, sec.project, status, body)
		}
	}
	keyFile, err := os.ReadFile(filepath.Join(data, "secrets.key"))
	if err != nil {
		t.Fatalf("the secrets' key file: %v", err)
	}
	secrets = append(secrets, victimToken.value, notGranted.value, strings.TrimSpace(string(keyFile)))
	if untrusted {
		secrets = append(secrets, hostileOwn.value)
	}

	victim := c.RequestBuild("e2e", "victim", "main")
	c.WaitFor(proctest.BuildTimeout, "the victim build to be ready", func() (bool, string) {
		log, _ := os.ReadFile(filepath.Join(c.RunDir(victim), "console.log"))
		return bytes.Contains(log, []byte("victim ready")), string(log)
	})

	var hostile string
	if untrusted {
		hostile = approvedForkBuild(t, c, "e2e", "hostile")
	} else {
		hostile = c.RequestBuild("e2e", "hostile", "main")
	}
	rec := c.WaitFinal(hostile)[hostile]
	log := c.BuildLog(hostile)
	if rec.Status != "succeeded" {
		t.Errorf("hostile build: got %s, want succeeded (its result forged or its run broken)\n%s", rec, log)
	}
	if !strings.Contains(log, "hostile build done") {
		t.Fatalf("the hostile build did not run to its end:\n%s", log)
	}
	t.Logf("hostile build's log:\n%s", log)

	// It tried: it saw the services and the victim, so every DENIED is a
	// real refusal.
	for _, want := range []string{"TARGET ingest ", "TARGET dispatcher ", "TARGET reaper ", "TARGET decap-entrypoint ", "TARGET victim ", "VICTIM " + c.RunDir(victim)} {
		if !strings.Contains(log, want) {
			t.Errorf("the hostile build never saw %q; its attacks were not tried", strings.TrimSpace(want))
		}
	}
	for _, line := range strings.Split(log, "\n") {
		if strings.HasPrefix(line, "FOUND ") {
			t.Errorf("hostile build: %s", line)
		}
	}
	checkIdentity(t, log, c.RunDir(hostile))
	switch {
	case untrusted:
		if rec.Ref != "pull/7" || rec.RefType != "pull" {
			t.Errorf("the untrusted hostile build is %s, want pull request 7's", rec)
		}
		if !strings.Contains(log, "OWN_SECRETS \n") {
			t.Errorf("the untrusted hostile build has secrets of its own:\n%s", log)
		}
		if len(rec.Secrets) != 0 || rec.SecretsWithheld != "an untrusted build gets no secrets" {
			t.Errorf("the untrusted hostile build's record says it got secrets %q (withheld: %q), want none: untrusted", rec.Secrets, rec.SecretsWithheld)
		}
	default:
		if !strings.Contains(log, "OWN_SECRETS HOSTILE_OWN \n") {
			t.Errorf("the hostile build's own secrets are not HOSTILE_OWN alone:\n%s", log)
		}
		if rec.Secrets == nil || strings.Join(rec.Secrets, ",") != "HOSTILE_OWN" {
			t.Errorf("the hostile build's record says it got secrets %q, want [HOSTILE_OWN]", rec.Secrets)
		}
	}

	// No secret anywhere it could have put one.
	files := tarFiles(t, c.Artifacts(hostile))
	for _, secret := range secrets {
		if strings.Contains(log, secret) {
			t.Errorf("the hostile build's console log contains a secret: %.12s…", secret)
		}
		for name, content := range files {
			if strings.Contains(content, secret) {
				t.Errorf("the hostile build's artifact %s contains a secret: %.12s…", name, secret)
			}
		}
	}

	// Its environment carries nothing of the services'.
	if env, ok := files["loot/own-env"]; !ok {
		t.Errorf("the hostile build's artifacts lack its environment (loot/own-env): %v", mapKeys(files))
	} else {
		for _, line := range strings.Split(env, "\n") {
			if strings.HasPrefix(line, "DECAP_") || strings.HasPrefix(line, "AWS_") {
				t.Errorf("the hostile build's environment has the services' setting %s", strings.SplitN(line, "=", 2)[0])
			}
		}
	}

	// Nothing it did stayed: the process it left behind, a paused gate,
	// files in the blob store or in the victim's workspace.
	checkEscapeeGone(t, c, log)
	status, body := c.MustDo(http.MethodGet, "/api/v1/dispatch", nil, nil)
	if status != http.StatusOK || bytes.Contains(body, []byte(`"paused":true`)) {
		t.Errorf("dispatch gate after the hostile build: got %d %s, want 200, not paused", status, body)
	}
	for _, p := range []string{filepath.Join(data, "blobs", "hostile"), filepath.Join(c.RunDir(victim), "workspace", "hostile")} {
		if _, err := os.Lstat(p); err == nil {
			t.Errorf("the hostile build wrote %s", p)
		}
	}

	// The victim is unharmed, and ends when cancelled.
	status, body = c.MustDo(http.MethodDelete, "/api/v1/builds/"+victim, http.Header{"Authorization": {"Bearer " + apiToken}}, nil)
	if status == http.StatusTooManyRequests {
		t.Fatalf("cancel the victim: got %d %s: this address is blocked by the failed-auth throttle, so the hostile build's blind requests (BLIND) were served", status, body)
	}
	if status != http.StatusAccepted && status != http.StatusOK {
		t.Fatalf("cancel the victim: got %d %s", status, body)
	}
	if r := c.WaitFinal(victim)[victim]; r.Status != "cancelled" {
		t.Errorf("victim: got %s, want cancelled", r)
	}
	if vlog := c.BuildLog(victim); strings.Contains(vlog, "hostile was here") {
		t.Errorf("the hostile build wrote into the victim's console log:\n%s", vlog)
	}
}

// checkDataDirModes checks what the services made of the data directory:
// nothing in it readable by other users, and only run/ traversable, so
// that a build reaches its own directory and nothing else.
func checkDataDirModes(t *testing.T, data string) {
	t.Helper()
	for _, tc := range []struct {
		name string
		want os.FileMode
	}{
		{".", 0o711},
		{"run", 0o711},
		{"api-token", 0o600},
		{"github-webhook-secret", 0o600},
		{"decap.db", 0o600},
		{"blobs", 0o700},
		{"catalog", 0o700},
		{"wake", 0o700},
		{"run/.watch", 0o700},
	} {
		info, err := os.Stat(filepath.Join(data, tc.name))
		if err != nil {
			t.Errorf("data directory: %v", err)
			continue
		}
		if got := info.Mode().Perm(); got != tc.want {
			t.Errorf("data directory: %s has mode %#o, want %#o", tc.name, got, tc.want)
		}
	}
	for _, name := range []string{"decap.db-wal", "decap.db-shm"} {
		if info, err := os.Stat(filepath.Join(data, name)); err == nil && info.Mode().Perm()&0o077 != 0 {
			t.Errorf("data directory: %s has mode %#o, want no access for group and others", name, info.Mode().Perm())
		}
	}
}

// checkIdentity checks the IDENTITY line of the hostile build: a uid of
// its own (not root), no groups but its own, HOME and TMPDIR in its own
// directory.
func checkIdentity(t *testing.T, log, dir string) {
	t.Helper()
	var line string
	for _, l := range strings.Split(log, "\n") {
		if strings.HasPrefix(l, "IDENTITY ") {
			line = l
		}
	}
	f := map[string]string{}
	for _, kv := range strings.Fields(strings.TrimPrefix(line, "IDENTITY ")) {
		k, v, _ := strings.Cut(kv, "=")
		f[k] = v
	}
	uid, err := strconv.Atoi(f["uid"])
	switch {
	case line == "":
		t.Errorf("the hostile build printed no IDENTITY line")
		return
	case err != nil || uid == 0 || uid == os.Geteuid():
		t.Errorf("the hostile build ran as uid %q, want a uid of its own, not root's or the services'", f["uid"])
	case f["gid"] != f["uid"] || f["groups"] != f["gid"]:
		t.Errorf("the hostile build ran with gid %s and groups %s, want its own gid %s and no other group", f["gid"], f["groups"], f["uid"])
	}
	for _, k := range []string{"home", "tmpdir"} {
		if !strings.HasPrefix(f[k], dir+"/") {
			t.Errorf("the hostile build's %s is %q, want a directory in its own %s", strings.ToUpper(k), f[k], dir)
		}
	}
}

// checkEscapeeGone checks that the process the hostile build started with
// setsid, named by its ESCAPEE line (pid and start time), is gone.
func checkEscapeeGone(t *testing.T, c *proctest.Cluster, log string) {
	t.Helper()
	var pid, start string
	for _, l := range strings.Split(log, "\n") {
		if f := strings.Fields(l); len(f) == 3 && f[0] == "ESCAPEE" {
			pid, start = f[1], f[2]
		}
	}
	if pid == "" || start == "" {
		t.Errorf("the hostile build did not report the process it left behind")
		return
	}
	alive := func() bool {
		stat, err := os.ReadFile("/proc/" + pid + "/stat")
		if err != nil {
			return false
		}
		s := string(stat)
		fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		return len(fields) > 19 && fields[19] == start && fields[0] != "Z"
	}
	// The build is recorded only after its entrypoint stopped it; a little
	// slack for a machine under load.
	deadline := time.Now().Add(10 * time.Second)
	for alive() && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	if alive() {
		t.Errorf("process %s, which the hostile build started with setsid, outlived the build", pid)
		if p, err := os.FindProcess(mustAtoi(pid)); err == nil {
			p.Kill()
		}
	}
}

// killProcessesIn SIGKILLs every process whose working directory is in
// dir.
func killProcessesIn(dir string) {
	entries, _ := os.ReadDir("/proc")
	for _, ent := range entries {
		pid, err := strconv.Atoi(ent.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		if cwd, err := os.Readlink("/proc/" + ent.Name() + "/cwd"); err == nil && strings.HasPrefix(cwd, dir+"/") {
			if p, err := os.FindProcess(pid); err == nil {
				p.Kill()
			}
		}
	}
}

func mustAtoi(s string) int {
	n, err := strconv.Atoi(s)
	if err != nil {
		panic(fmt.Sprintf("not a number: %q", s))
	}
	return n
}

// approvedForkBuild opens a fork's pull request #7 of team/project by a
// first-time contributor, approves it as a member (/ok-to-test), and
// returns its build: an untrusted one.
func approvedForkBuild(t *testing.T, c *proctest.Cluster, team, project string) string {
	t.Helper()
	at := time.Now().Add(-time.Hour).Truncate(time.Second)
	pr := prEvent{t: t, team: team, project: project, number: 7, fork: true, assoc: "FIRST_TIME_CONTRIBUTOR",
		head: prHead1, branch: "innocent", at: at}
	if ans := sendPR(t, c, "pull_request", pr.pullRequest("opened")); ans.Waiting == "" {
		t.Fatalf("the fork's pull request: answer %+v, want it waiting for approval", ans)
	}
	ans := sendPR(t, c, "issue_comment", pr.comment("/ok-to-test", "a-member", "MEMBER", at.Add(time.Minute)))
	if len(ans.Builds) != 1 {
		t.Fatalf("/ok-to-test: answer %+v, want one build", ans)
	}
	return ans.Builds[0].ID
}
