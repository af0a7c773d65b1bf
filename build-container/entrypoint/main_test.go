package main

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/decap-ci/decap/internal/build"
	"github.com/decap-ci/decap/internal/entrypoint"
	"github.com/decap-ci/decap/internal/localfs"
)

const testID = "0190b2a4-8d3e-7c1a-9f00-0123456789ab"

func noEnv(string) string { return "" }

func writeScript(t *testing.T, scriptsDir, script string) {
	t.Helper()
	p := filepath.Join(scriptsDir, "acme", "widget", "build.sh")
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(script), 0o644); err != nil {
		t.Fatal(err)
	}
}

func gunzip(t *testing.T, data []byte) string {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("not gzip: %v", err)
	}
	out, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

func TestRunLocal(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		script   string
		wantCode int // 0: run returns nil
		status   build.Status
	}{
		{"succeeded", `echo local build; echo "home=$HOME tmp=$TMPDIR"`, 0, build.StatusSucceeded},
		{"failed", `echo local build; echo "home=$HOME tmp=$TMPDIR"; exit 7`, 7, build.StatusFailed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			runDir, blobsDir := t.TempDir(), t.TempDir()
			// job.json as internal/localexec writes it.
			job := `{"request": {"v": 1, "buildId": "` + testID + `", "team": "acme", "project": "widget",
				"ref": "main", "refType": "branch", "trigger": "manual", "requestedAt": "2025-01-02T03:04:05Z"},
				"descriptor": {"buildImage": "debian"}, "catalogCommit": "abc", "timeout": "1m0s"}`
			if err := os.WriteFile(filepath.Join(runDir, "job.json"), []byte(job), 0o644); err != nil {
				t.Fatal(err)
			}
			writeScript(t, filepath.Join(runDir, "scripts"), tt.script)
			var stdout, stderr bytes.Buffer
			err := run(t.Context(), []string{"-run-dir", runDir, "-blobs", blobsDir}, noEnv, &stdout, &stderr)
			var ended buildEnded
			switch {
			case tt.wantCode == 0 && err != nil:
				t.Fatalf("run = %v, want nil; stderr:\n%s", err, stderr.String())
			case tt.wantCode != 0 && (!errors.As(err, &ended) || ended.code != tt.wantCode):
				t.Fatalf("run = %v, want exit status %d", err, tt.wantCode)
			}
			data, err := os.ReadFile(filepath.Join(runDir, "result.json"))
			if err != nil {
				t.Fatal(err)
			}
			var res entrypoint.Result
			if err := json.Unmarshal(data, &res); err != nil {
				t.Fatal(err)
			}
			if res.Status != tt.status || res.LogKey != build.LogKey(testID) {
				t.Errorf("result.json = %s, want status %s and a log", data, tt.status)
			}
			blobs, _ := localfs.NewBlobs(blobsDir)
			rc, err := blobs.Open(t.Context(), res.LogKey)
			if err != nil {
				t.Fatal(err)
			}
			defer rc.Close()
			stored, _ := io.ReadAll(rc)
			if log := gunzip(t, stored); !strings.Contains(log, "local build\n") {
				t.Errorf("stored log = %q", log)
			} else if want := "home=" + filepath.Join(runDir, "home") + " tmp=" + filepath.Join(runDir, "tmp") + "\n"; !strings.Contains(log, want) {
				t.Errorf("stored log = %q, want HOME and TMPDIR in the build's directory: %q", log, want)
			}
			if live, _ := os.ReadFile(filepath.Join(runDir, "console.log")); !strings.Contains(string(live), "local build\n") {
				t.Errorf("console.log = %q", live)
			}
			if stdout.Len() != 0 {
				t.Errorf("local mode wrote to stdout: %q", stdout.String())
			}
		})
	}
}

func TestRunContainer(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	puts := map[string][]byte{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		puts[r.URL.Path] = body
		mu.Unlock()
	}))
	defer srv.Close()
	dir := t.TempDir()
	writeScript(t, filepath.Join(dir, "scripts"), `echo "in container $BUILD_ID $COMMIT_SHA"; env | grep -c '^DECAP_' || true; exit 3`)
	vars := map[string]string{
		"BUILD_ID":                   testID,
		"PROJECT_KEY":                "acme/widget",
		"BRANCH_TO_BUILD":            "main",
		"COMMIT_SHA":                 "abc1234",
		"DECAP_SCRIPTS_DIR":          filepath.Join(dir, "scripts"),
		"DECAP_ARTIFACTS_DIR":        filepath.Join(dir, "artifacts"),
		"DECAP_WORKSPACE":            filepath.Join(dir, "workspace"),
		"DECAP_RESULT_FILE":          filepath.Join(dir, "termination-log"),
		"DECAP_BUILD_TIMEOUT":        "1m",
		"DECAP_LOG_UPLOAD_URL":       srv.URL + "/log?X-Amz-Signature=s",
		"DECAP_ARTIFACTS_UPLOAD_URL": srv.URL + "/artifacts?X-Amz-Signature=s",
		"DECAP_LOG_TIMES_UPLOAD_URL": srv.URL + "/times?X-Amz-Signature=s",
	}
	var stdout, stderr bytes.Buffer
	err := run(t.Context(), nil, func(k string) string { return vars[k] }, &stdout, &stderr)
	var ended buildEnded
	if !errors.As(err, &ended) || ended.code != 3 || ended.status != build.StatusFailed {
		t.Fatalf("run = %v, want failed with exit status 3; stderr:\n%s", err, stderr.String())
	}
	want := "in container " + testID + " abc1234\n0\n"
	if !strings.Contains(stdout.String(), want) {
		t.Errorf("stdout = %q, want the console log with %q", stdout.String(), want)
	}
	if log := gunzip(t, puts["/log"]); log != stdout.String() {
		t.Errorf("uploaded log %q differs from stdout %q", log, stdout.String())
	}
	if len(puts["/artifacts"]) == 0 {
		t.Error("no artifacts uploaded")
	}
	var times build.LogTimes
	if err := json.Unmarshal([]byte(gunzip(t, puts["/times"])), &times); err != nil || times.Validate() != nil ||
		times.Lines != int64(strings.Count(stdout.String(), "\n")) {
		t.Errorf("uploaded line times %+v (%v), want an index of the log's %d lines", times, err, strings.Count(stdout.String(), "\n"))
	}
	data, err := os.ReadFile(vars["DECAP_RESULT_FILE"])
	if err != nil {
		t.Fatal(err)
	}
	var res entrypoint.Result
	if err := json.Unmarshal(data, &res); err != nil || res.Status != build.StatusFailed || res.Reason != "exit code 3" {
		t.Errorf("result file = %s (%v), want failed with exit code 3", data, err)
	}
}

func TestRunSetupErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"unknown flag", []string{"-nope"}, nil, "flag provided but not defined"},
		{"stray argument", []string{"x"}, nil, "unexpected arguments"},
		{"local without job, blobs or uploads", []string{"-run-dir", "/nonexistent"}, nil, "read job"},
		{"local without job", []string{"-run-dir", "/nonexistent", "-blobs", "/nonexistent"}, nil, "read job"},
		{"handshake without run-dir", []string{"-handshake"}, nil, "-handshake needs -run-dir"},
		{"build uid without handshake", []string{"-run-dir", "/nonexistent", "-build-uid", "1900000000"}, nil, "-build-uid needs -handshake"},
		{"stop-uid with another flag", []string{"-stop-uid", "1900000000", "-run-dir", "/nonexistent"}, nil, "-stop-uid takes no other flag"},
		{"stop-uid of root", []string{"-stop-uid", "0"}, nil, "not a build uid"},
		{"container without env", nil, nil, "BUILD_ID, PROJECT_KEY"},
		{"container without URLs", nil, map[string]string{"BUILD_ID": testID, "PROJECT_KEY": "a/b", "BRANCH_TO_BUILD": "main"}, "DECAP_LOG_UPLOAD_URL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := run(t.Context(), tt.args, func(k string) string { return tt.env[k] }, io.Discard, io.Discard)
			var ended buildEnded
			if err == nil || errors.As(err, &ended) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("run = %v, want a setup error containing %q", err, tt.want)
			}
		})
	}
}
