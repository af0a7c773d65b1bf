package e2e_test

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/decap-ci/decap/internal/proctest"
)

// A request for a project whose project.json broke while the request waited
// is never built: it ends skipped (the README's status of a request that is
// never built), with the catalog's error said once, not errored, which is a
// build's own failure.
func TestRequestOfProjectBrokenMeanwhileIsSkipped(t *testing.T) {
	t.Parallel()
	s := newScripts(t)
	s.add("e2e", "breaks", validDescriptor, "#!/usr/bin/env bash\necho built\n")
	c := newCluster(t, proctest.Options{Scripts: s.dir, Env: []string{"DECAP_CATALOG_REFRESH=200ms"}})
	c.Start("reaper")
	dispatcher := c.Start("dispatcher")
	c.Start("ingest")
	if code, answer := c.MustDo(http.MethodPost, "/api/v1/dispatch/pause", nil, nil); code != http.StatusOK {
		t.Fatalf("pause: %d %s", code, answer)
	}
	id := c.RequestBuild("e2e", "breaks", "main")
	if err := os.WriteFile(filepath.Join(s.dir, "e2e", "breaks", "project.json"), []byte(`{"buildImage": "x", "bogus": 1}`), 0o644); err != nil {
		t.Fatal(err)
	}
	c.WaitFor(proctest.BuildTimeout, "the dispatcher to read the broken project.json", func() (bool, string) {
		log, err := os.ReadFile(dispatcher.LogPath)
		return err == nil && strings.Contains(string(log), "unbuildable=1"), "its log does not say unbuildable=1 yet"
	})
	if code, answer := c.MustDo(http.MethodPost, "/api/v1/dispatch/resume", nil, nil); code != http.StatusOK {
		t.Fatalf("resume: %d %s", code, answer)
	}
	got := c.WaitFinal(id)[id]
	if got.Status != "skipped" {
		t.Errorf("status = %s, want skipped", got.Status)
	}
	if !strings.Contains(got.Reason, `unknown field "bogus"`) || strings.Count(got.Reason, "not buildable") != 1 {
		t.Errorf("reason = %q, want the catalog's error, saying \"not buildable\" once", got.Reason)
	}
}
