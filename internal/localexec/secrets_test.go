package localexec_test

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/decap-ci/decap/internal/build"
)

// TestSecretsDelivered: a build's secrets are files in its own directory,
// BUILD_SECRETS, readable by the build's user alone (the directory 0700,
// the files 0400, owned by the build's uid when builds run under uids of
// their own); job.json holds no value; the log shows them masked; the
// files are gone once the script ends.
func TestSecretsDelivered(t *testing.T) {
	t.Parallel()
	scripts := fakeScripts{"secret": `echo "token: $(cat "$BUILD_SECRETS/NPM_TOKEN")"
echo ready
while [ ! -e "$HOME/../go" ]; do sleep 0.02; done
echo done`}
	e := newEnv(t, scripts, time.Minute)
	c := e.watch(t)
	job := newJob("secret", time.Minute)
	value := "npm_Zx81-local-delivery-secret"
	job.Secrets = []build.Secret{{Name: "NPM_TOKEN", Value: []byte(value)}, {Name: "OTHER", Value: []byte("other-value")}}
	id := job.Request.BuildID
	if err := e.ex.Launch(t.Context(), job); err != nil {
		t.Fatalf("Launch: %v", err)
	}
	e.waitLog(t, id, "ready")
	dir := e.dir(id)
	jobJSON, err := os.ReadFile(filepath.Join(dir, "job.json"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(jobJSON), value) || strings.Contains(string(jobJSON), "other-value") {
		t.Errorf("job.json holds a secret's value:\n%s", jobJSON)
	}
	info, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	buildGID := info.Sys().(*syscall.Stat_t).Gid
	wantOwner := uint32(os.Getuid())
	if os.Getuid() == 0 {
		wantOwner = buildGID // the build's uid, whose group owns the directory
	}
	for _, f := range []struct {
		name string
		mode os.FileMode
	}{{"secrets", os.ModeDir | 0o700}, {"secrets/NPM_TOKEN", 0o400}, {"secrets/OTHER", 0o400}} {
		info, err := os.Lstat(filepath.Join(dir, f.name))
		if err != nil {
			t.Errorf("%s: %v", f.name, err)
			continue
		}
		if info.Mode() != f.mode || info.Sys().(*syscall.Stat_t).Uid != wantOwner {
			t.Errorf("%s: mode %v owner %d, want %v owner %d", f.name, info.Mode(), info.Sys().(*syscall.Stat_t).Uid, f.mode, wantOwner)
		}
	}
	if got, _ := os.ReadFile(filepath.Join(dir, "secrets", "NPM_TOKEN")); string(got) != value {
		t.Errorf("secrets/NPM_TOKEN = %q, want the value", got)
	}
	if err := os.WriteFile(filepath.Join(dir, "go"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	o := c.outcome(t, id)
	if o.Status != build.StatusSucceeded {
		t.Fatalf("outcome = %+v", o)
	}
	if _, err := os.Lstat(filepath.Join(dir, "secrets")); !os.IsNotExist(err) {
		t.Errorf("the secrets are still there after the build: %v", err)
	}
	log := string(e.readBlob(t, build.LogKey(id)))
	if strings.Contains(log, value) || !strings.Contains(log, "token: ***") {
		t.Errorf("console log = %q, want the token masked", log)
	}
}
