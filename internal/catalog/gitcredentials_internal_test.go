package catalog

import (
	"bytes"
	"encoding/base64"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
)

// TestGitCredentialsNotInCommandLines: a credential in the build scripts'
// URL never stands in a command line, which every local user (a build,
// above all) may read in /proc/<pid>/cmdline while git fetches; git is
// given it in its environment, which only its own user may read, and
// sends it all the same.
func TestGitCredentialsNotInCommandLines(t *testing.T) {
	t.Parallel()
	if runtime.GOOS != "linux" {
		t.Skip("reads the command lines in /proc")
	}
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("git is not installed")
	}
	const user, secret = "x-access-token", "ghs_0123456789abcdefSECRET"
	var mu sync.Mutex
	var seen []string
	var auth string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		if a := r.Header.Get("Authorization"); a != "" {
			auth = a
		}
		// git and its helper wait for this answer: their command lines
		// are there to read.
		seen = append(seen, commandLinesWith(secret)...)
		http.NotFound(w, r)
	}))
	defer srv.Close()
	url := strings.Replace(srv.URL, "http://", "http://"+user+":"+secret+"@", 1) + "/acme/build-scripts.git"
	dir := t.TempDir()
	g := newGitSource(url, "", dir, filepath.Join(dir, "repo.git"))
	_, err := g.fetch(t.Context())
	if err == nil {
		t.Fatal("fetch from a server without the repository: no error")
	}
	if strings.Contains(err.Error(), secret) {
		t.Errorf("the fetch error shows the credential: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, cmdline := range seen {
		t.Errorf("the credential is in a command line: %.120s", cmdline)
	}
	if want := "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+secret)); auth != want {
		t.Errorf("Authorization sent: %q, want %q", auth, want)
	}
}

// commandLinesWith returns the command lines of this machine's processes
// that contain s.
func commandLinesWith(s string) []string {
	var found []string
	paths, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err == nil && bytes.Contains(data, []byte(s)) {
			found = append(found, string(bytes.ReplaceAll(data, []byte{0}, []byte{' '})))
		}
	}
	return found
}
