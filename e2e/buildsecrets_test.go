package e2e_test

import (
	"encoding/json"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/decap-ci/decap/internal/proctest"
)

// secretBuildScript reads its secret, prints it in the forms the
// entrypoint masks, keeps a copy in a file of the workspace (not the
// artifacts), and saves one artifact on purpose under another name.
const secretBuildScript = `#!/usr/bin/env bash
set -eu
echo "secrets dir: ${BUILD_SECRETS:-none}"
if [ -z "${BUILD_SECRETS:-}" ]; then echo done; exit 0; fi
ls -l "${BUILD_SECRETS}" || true
echo "the token is $(cat "${BUILD_SECRETS}/NPM_TOKEN")."
base64 < "${BUILD_SECRETS}/NPM_TOKEN"
cp "${BUILD_SECRETS}/NPM_TOKEN" ./token-copy
mkdir -p "${BUILD_ARTIFACTS}"
echo "built without leaking" > "${BUILD_ARTIFACTS}/result.txt"
if [ -e "${BUILD_SECRETS}/OTHER_PROJECT" ]; then echo "FOUND another project's secret"; fi
echo done
`

// noSecretScript is another project's build: it reports what it finds.
const noSecretScript = `#!/usr/bin/env bash
echo "secrets dir: ${BUILD_SECRETS:-none}"
echo done
`

// TestBuildSecretsEmbedded runs TestBuildSecrets' checks on the embedded
// default.
func TestBuildSecretsEmbedded(t *testing.T) {
	t.Parallel()
	s := newScripts(t)
	c := newCluster(t, proctest.Options{Scripts: s.dir, Cap: 2, Env: []string{"DECAP_LOG_LEVEL=debug"}})
	checkBuildSecrets(t, c, s)
}

// TestBuildSecretsAWS runs them on the AWS backend (moto): the secrets in
// Secrets Manager under <prefix>/<team>/<project>/<NAME>.
func TestBuildSecretsAWS(t *testing.T) {
	t.Parallel()
	w := newAWSWorld(t)
	s := newScripts(t)
	c := w.cluster(proctest.Options{Scripts: s.dir, Cap: 2, Env: []string{"DECAP_LOG_LEVEL=debug"}})
	checkBuildSecrets(t, c, s)
	var got struct{ Name string }
	w.cliJSON(&got, "secretsmanager", "describe-secret", "--secret-id", w.prefix+"/e2e/with-secret/NPM_TOKEN")
	if got.Name != w.prefix+"/e2e/with-secret/NPM_TOKEN" {
		t.Errorf("Secrets Manager has %q, want the secret under %s/e2e/with-secret/NPM_TOKEN", got.Name, w.prefix)
	}
}

// checkBuildSecrets: a build of a project with a secret gets it as a file
// and shows it masked in its log; its record names it and holds no value;
// no API answer, service log, stored file or artifact holds it; another
// project's secret is not given; a ref outside secretsRefRegex gets none,
// and its record says why.
func checkBuildSecrets(t *testing.T, c *proctest.Cluster, s *scriptsDir) {
	t.Helper()
	token := newSecret("the project's NPM token", "npm_")
	other := newSecret("another project's secret", "other-")
	s.add("e2e", "with-secret", `{"buildImage": "debian:bookworm-slim", "secrets": ["NPM_TOKEN", "UNSET_ONE"], "secretsRefRegex": "main|release/.*"}`, secretBuildScript)
	s.add("e2e", "other", `{"buildImage": "debian:bookworm-slim", "secrets": ["OTHER_PROJECT"]}`, noSecretScript)
	rec := &recordingTransport{base: c.Client().Transport}
	c.Client().Transport = rec
	c.Start("reaper")
	c.Start("dispatcher")
	c.Start("ingest")

	for _, sec := range []struct {
		project, name string
		s             secret
	}{{"with-secret", "NPM_TOKEN", token}, {"other", "OTHER_PROJECT", other}} {
		status, body := c.MustDo(http.MethodPut, "/api/v1/projects/e2e/"+sec.project+"/secrets/"+sec.name, nil, []byte(sec.s.value))
		if status != http.StatusOK {
			t.Fatalf("set secret %s: got %d %s", sec.name, status, body)
		}
	}
	status, body := c.MustDo(http.MethodGet, "/api/v1/projects/e2e/with-secret/secrets", nil, nil)
	if status != http.StatusOK || !strings.Contains(string(body), `"name":"NPM_TOKEN"`) || !strings.Contains(string(body), `"size":`) {
		t.Errorf("list of secrets: got %d %s", status, body)
	}
	status, body = c.MustDo(http.MethodGet, "/api/v1/projects/e2e/with-secret/secrets", proctest.NoAuth(), nil)
	if status != http.StatusUnauthorized {
		t.Errorf("list of secrets without a token: got %d %s, want 401", status, body)
	}

	granted := c.RequestBuild("e2e", "with-secret", "main")
	withheld := c.RequestBuild("e2e", "with-secret", "feature/x")
	final := c.WaitFinal(granted, withheld)
	if r := final[granted]; r.Status != "succeeded" {
		t.Fatalf("build with a secret: %s\n%s", r, c.BuildLog(granted))
	}
	log := c.BuildLog(granted)
	for _, want := range []string{"secrets dir: /", "the token is ***.", "\n***\n", "done"} {
		if !strings.Contains(log, want) {
			t.Errorf("the build's log lacks %q:\n%s", want, log)
		}
	}
	if strings.Contains(log, "FOUND") {
		t.Errorf("the build found another project's secret:\n%s", log)
	}
	if r := final[granted]; strings.Join(r.Secrets, ",") != "NPM_TOKEN" || r.SecretsWithheld != "not set for e2e/with-secret: UNSET_ONE" {
		t.Errorf("record of the build with a secret: secrets %q withheld %q, want [NPM_TOKEN] and UNSET_ONE not set", r.Secrets, r.SecretsWithheld)
	}
	if r := final[withheld]; r.Status != "succeeded" || len(r.Secrets) != 0 || !strings.Contains(r.SecretsWithheld, `does not match secretsRefRegex`) {
		t.Errorf("record of the build of a ref outside secretsRefRegex: %s secrets %q withheld %q", r.Status, r.Secrets, r.SecretsWithheld)
	}
	if l := c.BuildLog(withheld); !strings.Contains(l, "secrets dir: none") {
		t.Errorf("the build of a ref outside secretsRefRegex found secrets:\n%s", l)
	}
	files := tarFiles(t, c.Artifacts(granted))
	if files["result.txt"] != "built without leaking\n" {
		t.Errorf("artifacts: %v", mapKeys(files))
	}

	// Everywhere the test can look: the artifacts, every API answer, the
	// services' logs, the stored records and logs.
	secrets := []secret{token, other}
	var found []string
	for name, content := range files {
		found = append(found, leaks("artifact "+name, []byte(content), secrets)...)
	}
	found = append(found, leaks("console log", []byte(log), secrets)...)
	for _, path := range []string{"/api/v1/builds/" + granted, "/api/v1/projects/e2e/with-secret/builds", "/api/v1/projects", "/ui/builds/" + granted} {
		c.MustDo(http.MethodGet, path, nil, nil)
	}
	for _, a := range rec.recorded() {
		found = append(found, leaks("answer to "+a.request, a.body, secrets)...)
		h, _ := json.Marshal(a.header)
		found = append(found, leaks("headers of the answer to "+a.request, h, secrets)...)
	}
	for _, svc := range c.Services() {
		out, err := os.ReadFile(svc.LogPath)
		if err != nil {
			t.Errorf("log of %s: %v", svc.Name, err)
		}
		found = append(found, leaks("log of "+svc.Name, out, secrets)...)
	}
	// The embedded store keeps the values encrypted: no file of the data
	// directory but the build's own workspace holds one.
	filepath.WalkDir(c.DataDir(), func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || strings.Contains(p, string(filepath.Separator)+"workspace"+string(filepath.Separator)) {
			return nil
		}
		data, err := os.ReadFile(p)
		if err == nil {
			found = append(found, leaksUnpacked(p, data, secrets)...)
		}
		return nil
	})
	for _, f := range found {
		t.Error(f)
	}
}
