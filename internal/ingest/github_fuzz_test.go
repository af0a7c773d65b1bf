package ingest_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/decap-ci/decap/internal/build"
	"github.com/decap-ci/decap/internal/ingest"
)

// FuzzGitHubHook sends an arbitrary body, correctly signed, with an
// arbitrary X-GitHub-Event through the real echo router (srv.ServeHTTP):
// the signature is right, so everything after verification is exposed.
// Whatever the body, the answer is a JSON object with a 2xx or 4xx status,
// never a 5xx (a panic would be one: echo's Recover middleware answers
// 500), and a request is queued only when the answer is 202 with "builds",
// which then names exactly the queued build. Each input gets a fresh
// fixture, so a failure reproduces from its input alone.
//
// The seeds (testdata/fuzz/FuzzGitHubHook) are GitHub's sample payloads in
// testdata/github-webhooks with their events, and hostile variants.
func FuzzGitHubHook(f *testing.F) {
	f.Fuzz(func(t *testing.T, event string, body []byte) {
		// No log: formatting it would cost more than the request.
		fx := newFixtureDeps(t, nil, func(d *ingest.Deps) { d.Logger = slog.New(slog.DiscardHandler) })
		r := httptest.NewRequest(http.MethodPost, "/hooks/github", bytes.NewReader(body))
		r.Header.Set("Content-Type", "application/json")
		r.Header.Set("X-GitHub-Event", event)
		r.Header.Set("X-GitHub-Delivery", "fuzz-delivery")
		r.Header.Set("X-Hub-Signature-256", ingest.Sign([]byte(secret), body))
		w := fx.do(r)

		if w.Code >= 500 || w.Code < 200 || w.Code >= 300 && w.Code < 400 {
			t.Fatalf("event %q, body %q: status %d (%s), want 2xx or 4xx", event, body, w.Code, w.Body)
		}
		if ct := w.Header().Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
			t.Fatalf("event %q, body %q: Content-Type %q, want application/json", event, body, ct)
		}
		var ans map[string]any
		if err := json.Unmarshal(w.Body.Bytes(), &ans); err != nil || ans == nil {
			t.Fatalf("event %q, body %q: answer %q is not a JSON object: %v", event, body, w.Body, err)
		}
		if strings.Contains(w.Body.String(), secret) {
			t.Fatalf("event %q, body %q: the answer contains the webhook secret", event, body)
		}

		stats, err := fx.queue.Stats(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		queued := stats.Visible + stats.InFlight
		builds, hasBuilds := ans["builds"]
		if w.Code != http.StatusAccepted || !hasBuilds {
			if queued != 0 {
				t.Fatalf("event %q, body %q: answer %d %s, but %d requests were queued", event, body, w.Code, w.Body, queued)
			}
			if recs, _, _ := fx.records.Waiting(context.Background(), 0, 0); len(recs) != 0 {
				t.Fatalf("event %q, body %q: answer %d %s, but %d records were saved", event, body, w.Code, w.Body, len(recs))
			}
			switch {
			case w.Code >= 400:
				if msg, _ := ans["error"].(string); msg == "" {
					t.Fatalf("event %q, body %q: error answer %d %s has no \"error\"", event, body, w.Code, w.Body)
				}
			case w.Code == http.StatusAccepted:
				if reason, _ := ans["ignored"].(string); reason == "" {
					t.Fatalf("event %q, body %q: 202 %s has neither builds nor a reason it was ignored", event, body, w.Body)
				}
			case w.Code == http.StatusOK && event != "ping":
				t.Fatalf("event %q, body %q: 200 %s for an event that is not ping", event, body, w.Body)
			}
			return
		}

		// 202 with builds: exactly the one build it names was queued.
		list, _ := builds.([]any)
		if len(list) != 1 || queued != 1 {
			t.Fatalf("event %q, body %q: answer %s names %d builds, %d queued; want one each", event, body, w.Body, len(list), queued)
		}
		msgs, err := fx.queue.Receive(context.Background(), 1, 0)
		if err != nil || len(msgs) != 1 {
			t.Fatalf("receive the queued request: %v, %d messages", err, len(msgs))
		}
		req, err := build.Decode(msgs[0].Body)
		if err != nil {
			t.Fatalf("event %q, body %q: queued body %s does not decode: %v", event, body, msgs[0].Body, err)
		}
		named, _ := list[0].(map[string]any)
		if named["id"] != string(req.BuildID) || named["lockKey"] != req.LockKey() {
			t.Fatalf("event %q, body %q: answer names %v, queued %s %s", event, body, named, req.BuildID, req.LockKey())
		}
		if event != "push" || req.Trigger != build.TriggerPush || req.DeliveryID != "fuzz-delivery" {
			t.Fatalf("event %q, body %q: queued %+v, want a push request of the delivery", event, body, req)
		}
		desc, _, err := fx.catalog.Lookup(req.Team, req.Project)
		if err != nil {
			t.Fatalf("event %q, body %q: queued %s, which the catalog cannot build: %v", event, body, req.LockKey(), err)
		}
		if !desc.Manages(req.Ref) {
			t.Fatalf("event %q, body %q: queued ref %q, which managedRefRegex %q does not match", event, body, req.Ref, desc.ManagedRefRegex)
		}
	})
}
