package entrypoint_test

import (
	"bytes"
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/decap-ci/decap/internal/build"
	"github.com/decap-ci/decap/internal/entrypoint"
)

// TestRunMasksSecrets: a build whose secrets directory holds secrets finds
// them through BUILD_SECRETS, and whatever it prints of them, as they are,
// trimmed, in base64 or in many small writes, is *** in the console log
// (the uploaded log, the live log and the tee to stdout alike).
func TestRunMasksSecrets(t *testing.T) {
	t.Parallel()
	script := `#!/usr/bin/env bash
set -eu
echo "dir=$BUILD_SECRETS"
ls "$BUILD_SECRETS"
echo "token is $(cat "$BUILD_SECRETS/NPM_TOKEN") here"
cat "$BUILD_SECRETS/NPM_TOKEN"
base64 < "$BUILD_SECRETS/NPM_TOKEN"
printf '%s' "$(cat "$BUILD_SECRETS/NPM_TOKEN")" | base64
v=$(cat "$BUILD_SECRETS/NPM_TOKEN")
for ((i = 0; i < ${#v}; i++)); do printf '%s' "${v:i:1}"; sleep 0.001; done; echo
cat "$BUILD_SECRETS/DEPLOY_KEY"
echo "end"
`
	cfg, up := setup(t, script)
	var stdout bytes.Buffer
	cfg.Stdout = &stdout
	cfg.SecretsDir = filepath.Join(t.TempDir(), "secrets")
	token, key := "npm_Q7xZ1secretTOKEN\n", "-----BEGIN KEY-----\nkey-body-line-Zq81\n-----END KEY-----\n"
	os.MkdirAll(cfg.SecretsDir, 0o700)
	os.WriteFile(filepath.Join(cfg.SecretsDir, "NPM_TOKEN"), []byte(token), 0o400)
	os.WriteFile(filepath.Join(cfg.SecretsDir, "DEPLOY_KEY"), []byte(key), 0o400)
	os.WriteFile(filepath.Join(cfg.SecretsDir, ".hidden"), []byte("not a secret"), 0o400)

	res := entrypoint.Run(t.Context(), cfg)
	if res.Status != build.StatusSucceeded {
		t.Fatalf("Run() = %+v", res)
	}
	live, _ := os.ReadFile(cfg.LiveLog)
	for where, log := range map[string]string{"uploaded log": up.gunzip(t, build.LogKey(testID)), "live log": string(live), "stdout": stdout.String()} {
		for _, form := range []string{"npm_Q7xZ1secretTOKEN", base64.StdEncoding.EncodeToString([]byte(token))[:20],
			base64.StdEncoding.EncodeToString([]byte("npm_Q7xZ1secretTOKEN"))[:20], "key-body-line-Zq81"} {
			if strings.Contains(log, form) {
				t.Errorf("%s holds %q:\n%s", where, form, log)
			}
		}
		for _, want := range []string{"dir=" + cfg.SecretsDir, "DEPLOY_KEY\nNPM_TOKEN\n", "token is *** here", "\n***\n", "end\n"} {
			if !strings.Contains(log, want) {
				t.Errorf("%s lacks %q:\n%s", where, want, log)
			}
		}
	}
}

// TestRunWithoutSecrets: no secrets directory, no BUILD_SECRETS.
func TestRunWithoutSecrets(t *testing.T) {
	t.Parallel()
	cfg, up := setup(t, "#!/usr/bin/env bash\necho \"secrets=${BUILD_SECRETS-unset}\"\n")
	cfg.SecretsDir = filepath.Join(t.TempDir(), "none")
	cfg.Env = append(cfg.Env, "BUILD_SECRETS=/from/outside")
	if res := entrypoint.Run(t.Context(), cfg); res.Status != build.StatusSucceeded {
		t.Fatalf("Run() = %+v", res)
	}
	if log := up.gunzip(t, build.LogKey(testID)); !strings.Contains(log, "secrets=unset") {
		t.Errorf("log = %q, want BUILD_SECRETS unset", log)
	}
}
