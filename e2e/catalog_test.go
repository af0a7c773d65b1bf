package e2e_test

import (
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"github.com/decap-ci/decap/internal/proctest"
)

// refreshCatalog sends POST /hooks/buildscripts, signed, and wants 202.
func refreshCatalog(t *testing.T, c *proctest.Cluster) {
	t.Helper()
	body := []byte(`{}`)
	h := http.Header{
		"Content-Type":        {"application/json"},
		"X-GitHub-Event":      {"push"},
		"X-GitHub-Delivery":   {proctest.NewDelivery()},
		"X-Hub-Signature-256": {proctest.Sign(webhookSecret, body)},
	}
	if code, answer := c.MustDo(http.MethodPost, "/hooks/buildscripts", h, body); code != http.StatusAccepted {
		t.Fatalf("POST /hooks/buildscripts: %d %s, want 202", code, answer)
	}
}

// A project fixed in the build-scripts repository builds at once after POST
// /hooks/buildscripts: the hook refreshes ingest's catalog, and the
// dispatcher, a process of its own whose copy is older than the request,
// reads the repository again before it drops the request as unbuildable. It
// used to keep its copy until its next periodic refresh (30 s by default,
// an hour here) and end the build errored with the old error.
func TestFixedProjectBuildsAtOnceAfterRefresh(t *testing.T) {
	t.Parallel()
	s := newScripts(t)
	s.add("e2e", "fixme", `{"buildImage": "debian:bookworm-slim", "bogus": 1}`, "#!/usr/bin/env bash\necho fixed\n")
	c := newCluster(t, proctest.Options{Scripts: s.dir, Env: []string{"DECAP_CATALOG_REFRESH=1h"}})
	for _, kind := range []string{"reaper", "dispatcher", "ingest"} {
		c.Start(kind)
	}
	if code, _, _ := c.RequestBuildRaw("e2e", "fixme", "main", apiToken); code != http.StatusUnprocessableEntity {
		t.Fatalf("build of the broken project: %d, want 422", code)
	}

	if err := os.WriteFile(filepath.Join(s.dir, "e2e", "fixme", "project.json"), []byte(validDescriptor), 0o644); err != nil {
		t.Fatal(err)
	}
	refreshCatalog(t, c)
	id := c.RequestBuild("e2e", "fixme", "main")
	got := c.WaitFinal(id)[id]
	if got.Status != "succeeded" {
		t.Fatalf("build after the fix and the refresh: %s, want succeeded", got)
	}
}
