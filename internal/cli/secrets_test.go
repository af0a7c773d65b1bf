package cli_test

import (
	"bytes"
	"context"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/decap-ci/decap/internal/buildtest"
	"github.com/decap-ci/decap/internal/cli"
	"github.com/decap-ci/decap/internal/ingest"
)

// TestSecretCommands sets a secret from stdin and from a file, lists and
// deletes it through a real ingest: the value reaches the store exactly,
// and no output shows it; a value is never taken as an argument.
func TestSecretCommands(t *testing.T) {
	t.Parallel()
	store := buildtest.NewSecrets(nil)
	srv := httptest.NewServer(ingest.New(ingest.Config{WebhookSecret: []byte(secret), APIToken: token}, ingest.Deps{
		Catalog: buildtest.NewCatalog("c0ffee", map[string]string{"decap-ci/hello": `{"buildImage":"x"}`}),
		Secrets: store, Now: time.Now,
	}))
	t.Cleanup(srv.Close)
	env := map[string]string{"DECAP_URL": srv.URL, "DECAP_TOKEN": token, "HOME": t.TempDir()}
	run := func(stdin string, args ...string) (string, string, int) {
		var out, errOut bytes.Buffer
		err := cli.RunIO(context.Background(), args, func(k string) string { return env[k] }, strings.NewReader(stdin), &out, &errOut)
		if err != nil {
			errOut.WriteString(err.Error())
		}
		return out.String(), errOut.String(), cli.ExitCode(err)
	}
	value := "npm_cli-Secret-Value-91\n"
	file := filepath.Join(t.TempDir(), "key")
	os.WriteFile(file, []byte("file-Secret-Value-22"), 0o600)
	var outputs strings.Builder
	for _, st := range []struct {
		name     string
		stdin    string
		args     []string
		wantCode int
		wantOut  string
	}{
		{"set from stdin", value, []string{"secret", "set", "decap-ci/hello", "NPM_TOKEN"}, 0, "secret NPM_TOKEN of decap-ci/hello set (24 bytes)"},
		{"set from a file", "", []string{"secret", "set", "decap-ci/hello", "DEPLOY_KEY", "--from-file", file}, 0, "set (20 bytes)"},
		{"a value as an argument", "", []string{"secret", "set", "decap-ci/hello", "NPM_TOKEN", "npm_as_argument"}, 2, "never an argument"},
		{"no value on stdin", "", []string{"secret", "set", "decap-ci/hello", "NPM_TOKEN"}, 2, "no value on stdin"},
		{"a bad name", value, []string{"secret", "set", "decap-ci/hello", "npm"}, 2, "upper-case"},
		{"an unknown project", value, []string{"secret", "set", "decap-ci/nowhere", "X_TOKEN"}, 3, "not in the build-scripts repository"},
		{"list", "", []string{"secret", "list", "decap-ci/hello"}, 0, "NPM_TOKEN"},
		{"list as JSON", "", []string{"secret", "list", "decap-ci/hello", "-o", "json"}, 0, `"name": "DEPLOY_KEY"`},
		{"delete", "", []string{"secret", "delete", "decap-ci/hello", "NPM_TOKEN"}, 0, "secret NPM_TOKEN of decap-ci/hello deleted"},
		{"delete again", "", []string{"secret", "delete", "decap-ci/hello", "NPM_TOKEN"}, 3, "has no secret NPM_TOKEN"},
	} {
		out, errOut, code := run(st.stdin, st.args...)
		outputs.WriteString(out + errOut)
		if code != st.wantCode || !strings.Contains(out+errOut, st.wantOut) {
			t.Errorf("%s: exit %d, out %q, err %q; want exit %d with %q", st.name, code, out, errOut, st.wantCode, st.wantOut)
		}
	}
	env["DECAP_TOKEN"] = "not-the-token"
	if _, errOut, code := run(value, "secret", "set", "decap-ci/hello", "NPM_TOKEN"); code != 4 {
		t.Errorf("set with a wrong token: exit %d %q, want 4", code, errOut)
	}
	for _, v := range []string{"npm_cli-Secret-Value-91", "file-Secret-Value-22", "npm_as_argument"} {
		if strings.Contains(outputs.String(), v) {
			t.Errorf("decapctl printed a secret's value %q", v)
		}
	}
	got, _ := store.Reveal(t.Context(), "decap-ci", "hello", []string{"DEPLOY_KEY", "NPM_TOKEN"})
	if string(got["DEPLOY_KEY"]) != "file-Secret-Value-22" || len(got) != 1 {
		t.Errorf("stored = %q, want DEPLOY_KEY from the file alone", got)
	}
}
