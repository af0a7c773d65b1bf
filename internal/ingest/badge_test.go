package ingest_test

import (
	"context"
	"encoding/xml"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/decap-ci/decap/internal/build"
	"github.com/decap-ci/decap/internal/buildtest"
	"github.com/decap-ci/decap/internal/ingest"
)

// saveBadgeHistory saves decap-ci/hello's builds, oldest first: main
// succeeded then failed, feature/x/y errored, then a superseded and a
// running build of main that a badge skips.
func saveBadgeHistory(t *testing.T, f *fixture) {
	t.Helper()
	base := f.clock.Now().Add(-time.Hour)
	for i, r := range []struct {
		ref    string
		status build.Status
	}{
		{"main", build.StatusSucceeded},
		{"main", build.StatusFailed},
		{"feature/x/y", build.StatusErrored},
		{"main", build.StatusSuperseded},
		{"main", build.StatusRunning},
	} {
		q := base.Add(time.Duration(i) * time.Minute)
		rec := build.Record{BuildID: build.NewID(q), Team: "decap-ci", Project: "hello", Ref: r.ref, RefType: build.Branch,
			Trigger: build.TriggerPush, Status: r.status, QueuedAt: q}
		if r.status.Final() {
			rec.StartedAt, rec.FinishedAt = q.Add(time.Second), q.Add(2*time.Second)
		}
		if err := f.records.Save(context.Background(), rec); err != nil {
			t.Fatal(err)
		}
	}
}

func TestBadges(t *testing.T) {
	t.Parallel()
	f := newFixture(t, func(c *ingest.Config) { c.PublicBadges = true })
	saveBadgeHistory(t, f)
	tests := []struct {
		name, path string
		code       int
		message    string
	}{
		{"project: last verdict, superseded and running skipped", "/badge/decap-ci/hello.svg", 200, "errored"},
		{"ref with slashes", "/badge/decap-ci/hello/feature/x/y.svg", 200, "errored"},
		{"ref", "/badge/decap-ci/hello/main.svg", 200, "failed"},
		{"ref never built", "/badge/decap-ci/hello/nope.svg", 200, "none"},
		{"known project without builds", "/badge/decap-ci/broken.svg", 200, "none"},
		{"unknown project", "/badge/decap-ci/nope.svg", 404, "unknown"},
		{"bad team", "/badge/..%2F..%2Fetc/hello.svg", 400, "invalid"},
		{"bad ref", "/badge/decap-ci/hello/a..b.svg", 400, "invalid"},
		{"no .svg", "/badge/decap-ci/hello", 400, "invalid"},
		{"no project", "/badge/decap-ci.svg", 400, "invalid"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			w := f.do(anon(tt.path))
			if w.Code != tt.code {
				t.Fatalf("GET %s: status %d (%s), want %d", tt.path, w.Code, w.Body, tt.code)
			}
			if ct := w.Header().Get("Content-Type"); !strings.HasPrefix(ct, "image/svg+xml") {
				t.Errorf("Content-Type %q, want image/svg+xml", ct)
			}
			if csp := w.Header().Get("Content-Security-Policy"); !strings.HasPrefix(csp, "default-src 'none';") {
				t.Errorf("Content-Security-Policy %q, want default-src 'none' (no script runs in a badge)", csp)
			}
			if cc := w.Header().Get("Cache-Control"); cc != "public, max-age=60" {
				t.Errorf("Cache-Control %q, want public, max-age=60", cc)
			}
			if got := badgeMessage(t, w.Body.String()); got != tt.message {
				t.Errorf("badge says %q, want %q", got, tt.message)
			}
		})
	}
}

// badgeMessage parses an SVG badge and returns its second text.
func badgeMessage(t *testing.T, svg string) string {
	t.Helper()
	var doc struct {
		XMLName xml.Name `xml:"svg"`
		G       struct {
			Text []string `xml:"text"`
		} `xml:"g"`
	}
	if err := xml.Unmarshal([]byte(svg), &doc); err != nil {
		t.Fatalf("badge is no well-formed SVG: %v\n%s", err, svg)
	}
	if len(doc.G.Text) != 2 {
		t.Fatalf("badge has %d texts, want 2: %s", len(doc.G.Text), svg)
	}
	return doc.G.Text[1]
}

func TestBadgeAuth(t *testing.T) {
	t.Parallel()
	t.Run("badges auth, reads token: a credential is needed", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t, nil)
		saveBadgeHistory(t, f)
		if w := f.do(anon("/badge/decap-ci/hello.svg")); w.Code != http.StatusUnauthorized {
			t.Fatalf("anonymous badge: status %d, want 401", w.Code)
		}
		w := f.do(withSession("/badge/decap-ci/hello.svg", f.signIn(t).Value))
		if w.Code != http.StatusOK {
			t.Fatalf("badge with a session: status %d (%s), want 200", w.Code, w.Body)
		}
		if cc := w.Header().Get("Cache-Control"); cc != "private, max-age=60" {
			t.Errorf("Cache-Control %q, want private, max-age=60", cc)
		}
		w = f.do(apiRequest(http.MethodGet, "/badge/decap-ci/hello.svg", token, ""))
		if w.Code != http.StatusOK {
			t.Fatalf("badge with the token: status %d, want 200", w.Code)
		}
	})
	t.Run("badges public, reads token: anyone reads a badge, not the API", func(t *testing.T) {
		t.Parallel()
		f := newFixture(t, func(c *ingest.Config) { c.PublicBadges = true })
		saveBadgeHistory(t, f)
		w := f.do(anon("/badge/decap-ci/hello.svg"))
		if w.Code != http.StatusOK {
			t.Fatalf("anonymous badge: status %d, want 200", w.Code)
		}
		if got := w.Header().Get("Cross-Origin-Resource-Policy"); got != "cross-origin" {
			t.Errorf("Cross-Origin-Resource-Policy %q, want cross-origin (READMEs embed it)", got)
		}
		if w := f.do(anon("/api/v1/projects/decap-ci/hello/builds")); w.Code != http.StatusUnauthorized {
			t.Errorf("anonymous API read: status %d, want 401", w.Code)
		}
	})
}

// countingRecords counts the store's list calls.
type countingRecords struct {
	*buildtest.FakeRecords
	lists atomic.Int64
}

func (c *countingRecords) ListProject(ctx context.Context, team, project string, limit int, cursor string) ([]build.Record, string, error) {
	c.lists.Add(1)
	return c.FakeRecords.ListProject(ctx, team, project, limit, cursor)
}

// Badges are public where READMEs show them: a flood of them, for any
// ref of a project, reads the project's history once in a while, not once
// a badge; a verdict shows within that while.
func TestBadgeFloodReadsTheStoreOnce(t *testing.T) {
	t.Parallel()
	var counting *countingRecords
	f := newFixtureDeps(t, func(c *ingest.Config) { c.PublicBadges = true }, func(d *ingest.Deps) {
		counting = &countingRecords{FakeRecords: d.Records.(*buildtest.FakeRecords)}
		d.Records = counting
	})
	saveBadgeHistory(t, f)
	for i := range 200 {
		w := f.do(anon(fmt.Sprintf("/badge/decap-ci/hello/ref-%d.svg", i)))
		if w.Code != http.StatusOK || badgeMessage(t, w.Body.String()) != "none" {
			t.Fatalf("badge of an unbuilt ref: %d %s", w.Code, w.Body)
		}
	}
	if n := counting.lists.Load(); n != 1 {
		t.Errorf("200 badges listed the project's builds %d times, want once", n)
	}
	q := f.clock.Now()
	if err := f.records.Save(context.Background(), build.Record{BuildID: build.NewID(q), Team: "decap-ci", Project: "hello", Ref: "main",
		RefType: build.Branch, Trigger: build.TriggerPush, Status: build.StatusSucceeded, QueuedAt: q, StartedAt: q, FinishedAt: q}); err != nil {
		t.Fatal(err)
	}
	f.clock.Advance(11 * time.Second)
	if got := badgeMessage(t, f.do(anon("/badge/decap-ci/hello/main.svg")).Body.String()); got != "succeeded" {
		t.Errorf("badge after 11s says %q, want the new build's succeeded", got)
	}
}
