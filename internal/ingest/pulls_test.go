package ingest_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/decap-ci/decap/internal/build"
	"github.com/decap-ci/decap/internal/buildtest"
	"github.com/decap-ci/decap/internal/ingest"
)

// The pull request tests start from GitHub's documented payloads
// (testdata/github-webhooks, octokit/webhooks' examples: a same-repository
// pull request #2 of Codertocat/Hello-World by its OWNER) and rewrite the
// fields that decide: the head repository (a fork), author_association,
// the head SHA, times, draft, the comment.

const (
	headA = "ec26c3e57ca3a959ca5aad62de7213c562f8c821" // the fixtures' head
	headB = "1111111111111111111111111111111111111111"
	headC = "2222222222222222222222222222222222222222"
	// prKey is the lock key of the fixtures' pull request.
	prKey = "Codertocat/Hello-World/pull/2"
)

// t0 is when the fixtures' pull request was opened (its updated_at).
var t0 = time.Date(2019, 5, 15, 15, 20, 33, 0, time.UTC)

type pullFixture struct {
	srv       *ingest.Server
	queue     *buildtest.FakeQueue
	records   *buildtest.FakeRecords
	pulls     *buildtest.FakePullRequests
	canceller *fakeCanceller
	notifier  *recordingNotifier
	catalog   *buildtest.Catalog
	clock     *buildtest.Clock
	logs      *syncBuffer
	delivery  atomic.Int64
}

// newPullFixture serves Codertocat/Hello-World with pullRequests as
// given (a JSON object; "" for none).
func newPullFixture(t *testing.T, pullRequests string) *pullFixture {
	t.Helper()
	clock := buildtest.NewClock(time.Date(2026, 11, 27, 3, 0, 0, 0, time.UTC))
	desc := `{"buildImage":"debian:bookworm-slim"}`
	if pullRequests != "" {
		desc = `{"buildImage":"debian:bookworm-slim","pullRequests":` + pullRequests + `}`
	}
	f := &pullFixture{
		queue:     buildtest.NewQueue(clock.Now, buildtest.QueueOptions{}),
		records:   buildtest.NewRecords(),
		pulls:     buildtest.NewPullRequests(),
		canceller: &fakeCanceller{running: map[build.ID]bool{}},
		notifier:  &recordingNotifier{},
		catalog:   buildtest.NewCatalog("c0ffee", map[string]string{"Codertocat/Hello-World": desc}),
		clock:     clock,
		logs:      &syncBuffer{},
	}
	f.srv = ingest.New(ingest.Config{WebhookSecret: []byte(secret), APIToken: token, PublicURL: "http://example.com"}, ingest.Deps{
		Publisher: f.queue, Idempotency: buildtest.NewIdempotency(clock.Now), Catalog: f.catalog, Records: f.records,
		Blobs: buildtest.NewBlobs(), Canceller: f.canceller, Notifier: f.notifier, Pulls: f.pulls,
		Logger: slog.New(slog.NewTextHandler(f.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Now:    clock.Now,
	})
	return f
}

// send delivers a signed event under a new delivery ID and returns the
// answer's status and JSON.
func (f *pullFixture) send(t *testing.T, event string, body []byte) (int, map[string]any) {
	t.Helper()
	return f.sendAs(t, event, fmt.Sprintf("delivery-%d", f.delivery.Add(1)), body)
}

func (f *pullFixture) sendAs(t *testing.T, event, delivery string, body []byte) (int, map[string]any) {
	t.Helper()
	f.clock.Advance(time.Second) // each event a moment after the last
	w := httptest.NewRecorder()
	f.srv.ServeHTTP(w, hook(event, delivery, body))
	var m map[string]any
	if err := json.Unmarshal(w.Body.Bytes(), &m); err != nil {
		t.Fatalf("answer %q is not JSON: %v", w.Body, err)
	}
	return w.Code, m
}

// published returns every request published so far.
func (f *pullFixture) published(t *testing.T) []build.Request {
	t.Helper()
	var out []build.Request
	for {
		msgs, err := f.queue.Receive(t.Context(), 10, 0)
		if err != nil {
			t.Fatal(err)
		}
		if len(msgs) == 0 {
			return out
		}
		for _, m := range msgs {
			r, err := build.Decode(m.Body)
			if err != nil {
				t.Fatalf("published body does not decode: %v", err)
			}
			out = append(out, r)
			if err := f.queue.Delete(t.Context(), m.Receipt); err != nil {
				t.Fatal(err)
			}
		}
	}
}

func (f *pullFixture) state(t *testing.T) build.PullRequestState {
	t.Helper()
	p, err := f.pulls.Get(t.Context(), "Codertocat", "Hello-World", 2)
	if err != nil {
		t.Fatalf("stored pull request: %v", err)
	}
	return p
}

// waitingStatuses waits a little for the background notifier and returns
// the heads it was told wait for approval.
func (f *pullFixture) waitingStatuses(want int) []string {
	deadline := time.Now().Add(5 * time.Second)
	for {
		f.notifier.mu.Lock()
		var shas []string
		for _, p := range f.notifier.waiting {
			shas = append(shas, p.HeadSHA)
		}
		f.notifier.mu.Unlock()
		if len(shas) >= want || time.Now().After(deadline) {
			return shas
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// event returns the fixture file's payload with edit applied to it as a
// JSON object.
func event(t *testing.T, file string, edit func(m map[string]any)) []byte {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(payload(t, file), &m); err != nil {
		t.Fatal(err)
	}
	if edit != nil {
		edit(m)
	}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// set sets the value at a dotted path of m.
func set(m map[string]any, path string, v any) {
	parts := strings.Split(path, ".")
	for _, p := range parts[:len(parts)-1] {
		m = m[p].(map[string]any)
	}
	m[parts[len(parts)-1]] = v
}

// Edits of a pull_request payload.
func fork(m map[string]any) {
	repo := m["pull_request"].(map[string]any)["head"].(map[string]any)["repo"].(map[string]any)
	repo["id"], repo["full_name"], repo["name"] = 999, "octocat-fork/Hello-World", "Hello-World"
	repo["owner"].(map[string]any)["login"] = "octocat-fork"
}
func deletedFork(m map[string]any) { set(m, "pull_request.head.repo", nil) }
func association(a string) func(map[string]any) {
	return func(m map[string]any) { set(m, "pull_request.author_association", a) }
}
func head(sha string) func(map[string]any) {
	return func(m map[string]any) { set(m, "pull_request.head.sha", sha) }
}
func updated(at time.Time) func(map[string]any) {
	return func(m map[string]any) { set(m, "pull_request.updated_at", at.Format(time.RFC3339)) }
}
func draft(m map[string]any) { set(m, "pull_request.draft", true) }
func label(name string) func(map[string]any) {
	return func(m map[string]any) { set(m, "label.name", name) }
}
func all(edits ...func(map[string]any)) func(map[string]any) {
	return func(m map[string]any) {
		for _, e := range edits {
			e(m)
		}
	}
}

// prComment returns issue_comment-created.json made a comment on pull
// request #2 (an issue_comment of a pull request has
// issue.pull_request), written at at by login with the association.
func prComment(t *testing.T, body, login, assoc string, at time.Time) []byte {
	t.Helper()
	return event(t, "issue_comment-created.json", func(m map[string]any) {
		set(m, "issue.number", 2)
		set(m, "issue.pull_request", map[string]any{"url": "https://api.github.com/repos/Codertocat/Hello-World/pulls/2"})
		set(m, "comment.body", body)
		set(m, "comment.user.login", login)
		set(m, "comment.author_association", assoc)
		set(m, "comment.created_at", at.Format(time.RFC3339))
		set(m, "comment.id", float64(at.Unix())+float64(len(body)))
	})
}

var associations = []string{"OWNER", "MEMBER", "COLLABORATOR", "CONTRIBUTOR", "FIRST_TIME_CONTRIBUTOR", "FIRST_TIMER", "MANNEQUIN", "NONE"}

// TestPullRequestTrust checks who is trusted, for every author
// association and head repository: only a pull request from the base
// repository by an OWNER, MEMBER or COLLABORATOR builds at once, as a
// trusted build; every other one waits for approval, with a commit
// status saying so, and has no build request at all.
func TestPullRequestTrust(t *testing.T) {
	t.Parallel()
	heads := map[string]func(map[string]any){"same repository": func(map[string]any) {}, "fork": fork, "deleted fork": deletedFork}
	for headName, headEdit := range heads {
		for _, assoc := range associations {
			t.Run(headName+"/"+assoc, func(t *testing.T) {
				t.Parallel()
				f := newPullFixture(t, `{}`)
				code, ans := f.send(t, "pull_request", event(t, "pull_request-opened.json", all(headEdit, association(assoc))))
				trusted := headName == "same repository" && build.TrustedAssociation(assoc)
				reqs := f.published(t)
				if code != http.StatusAccepted {
					t.Fatalf("status = %d, want 202", code)
				}
				if !trusted {
					if len(reqs) != 0 || ans["waiting"] == nil {
						t.Fatalf("answer %v, published %d; want it waiting and nothing published", ans, len(reqs))
					}
					if !strings.Contains(ans["waiting"].(string), build.ReasonWaitingForApproval) {
						t.Errorf("waiting = %q, want it to say %q", ans["waiting"], build.ReasonWaitingForApproval)
					}
					if p := f.state(t); p.State != build.PullWaiting || p.Trusted {
						t.Errorf("stored state %s trusted %v, want waiting, untrusted", p.State, p.Trusted)
					}
					if got := f.waitingStatuses(1); !slices.Equal(got, []string{headA}) {
						t.Errorf("waiting statuses for %v, want one for %s", got, headA)
					}
					if recs, _ := f.records.Unfinished(t.Context(), prKey); len(recs) != 0 {
						t.Errorf("a waiting pull request has %d records, want none", len(recs))
					}
					return
				}
				if len(reqs) != 1 {
					t.Fatalf("published %d requests, want 1 (answer %v)", len(reqs), ans)
				}
				want := build.Request{
					V: 1, BuildID: reqs[0].BuildID, Team: "Codertocat", Project: "Hello-World", Ref: "pull/2", RefType: build.Pull,
					SHA: headA, Trigger: build.TriggerPullRequest, RequestedBy: "Codertocat", RequestedAt: f.clock.Now(),
					DeliveryID: reqs[0].DeliveryID,
					PullRequest: &build.PullRequest{Number: 2, BaseRef: "master", HeadRef: "changes", HeadRepo: "Codertocat/Hello-World",
						HeadSHA: headA, Trusted: true},
				}
				if diff := cmp.Diff(want, reqs[0]); diff != "" {
					t.Errorf("published request (-want +got):\n%s", diff)
				}
				if reqs[0].Untrusted() {
					t.Error("the trusted pull request's build is untrusted")
				}
				builds := ans["builds"].([]any)
				if got := builds[0].(map[string]any)["lockKey"]; got != prKey {
					t.Errorf("answer lockKey = %v, want %s", got, prKey)
				}
				if p := f.state(t); p.State != build.PullBuilding || p.Build != reqs[0].BuildID {
					t.Errorf("stored state %s build %s, want building %s", p.State, p.Build, reqs[0].BuildID)
				}
			})
		}
	}
}

// TestPullRequestForksPolicy checks pullRequests.forks for a fork: never
// builds nothing and waits for nothing, always builds at once, untrusted,
// approval (the default) waits.
func TestPullRequestForksPolicy(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		policy   string
		wantKey  string // answer key: builds, waiting or ignored
		approved bool   // whether /ok-to-test then builds
	}{
		{`{"forks":"never"}`, "ignored", false},
		{`{"forks":"always"}`, "builds", false},
		{`{"forks":"approval"}`, "waiting", true},
		{`{}`, "waiting", true},
	} {
		t.Run(tt.policy, func(t *testing.T) {
			t.Parallel()
			f := newPullFixture(t, tt.policy)
			_, ans := f.send(t, "pull_request", event(t, "pull_request-opened.json", all(fork, association("CONTRIBUTOR"))))
			if ans[tt.wantKey] == nil {
				t.Fatalf("answer %v, want %q", ans, tt.wantKey)
			}
			reqs := f.published(t)
			if tt.wantKey == "builds" {
				if len(reqs) != 1 || !reqs[0].Untrusted() || reqs[0].PullRequest.ApprovedBy != "" {
					t.Fatalf("published %+v, want one untrusted, unapproved build", reqs)
				}
			} else if len(reqs) != 0 {
				t.Fatalf("published %d requests, want none", len(reqs))
			}
			_, ans = f.send(t, "issue_comment", prComment(t, "/ok-to-test", "Codertocat", "OWNER", t0.Add(time.Minute)))
			reqs = f.published(t)
			if got := len(reqs) == 1; got != tt.approved {
				t.Errorf("/ok-to-test: published %d requests (answer %v), want a build: %v", len(reqs), ans, tt.approved)
			}
		})
	}
}

// TestPullRequestApproval checks approval: only a trusted person's
// /ok-to-test or ok-to-test label approves, for the head it was written
// for; the approved head builds untrusted (no secrets), and a new push
// waits again.
func TestPullRequestApproval(t *testing.T) {
	t.Parallel()
	open := func(t *testing.T) *pullFixture {
		f := newPullFixture(t, `{"baseRefRegex":"master|main"}`)
		if _, ans := f.send(t, "pull_request", event(t, "pull_request-opened.json", all(fork, association("FIRST_TIME_CONTRIBUTOR")))); ans["waiting"] == nil {
			t.Fatalf("opened: answer %v, want waiting", ans)
		}
		return f
	}
	for _, assoc := range associations {
		t.Run("comment by "+assoc, func(t *testing.T) {
			t.Parallel()
			f := open(t)
			_, ans := f.send(t, "issue_comment", prComment(t, "LGTM\n/ok-to-test\n", "someone", assoc, t0.Add(time.Minute)))
			reqs := f.published(t)
			if !build.TrustedAssociation(assoc) {
				if len(reqs) != 0 || ans["ignored"] == nil || !strings.Contains(ans["ignored"].(string), "only an OWNER, MEMBER or COLLABORATOR") {
					t.Fatalf("answer %v, published %d; want the approval ignored with its reason", ans, len(reqs))
				}
				if !strings.Contains(f.logs.String(), "pull request command from an untrusted person ignored") {
					t.Error("the ignored approval is not logged")
				}
				if p := f.state(t); p.State != build.PullWaiting || p.ApprovedSHA != "" {
					t.Errorf("stored state %s approved %q, want still waiting", p.State, p.ApprovedSHA)
				}
				return
			}
			if len(reqs) != 1 {
				t.Fatalf("answer %v, published %d requests; want one build", ans, len(reqs))
			}
			r := reqs[0]
			if !r.Untrusted() || r.PullRequest.Trusted || r.PullRequest.ApprovedBy != "someone" || r.SHA != headA || r.RequestedBy != "someone" {
				t.Errorf("approved build %+v %+v: want untrusted, approved by someone, of %s", r, *r.PullRequest, headA)
			}
			rec, err := f.records.Get(t.Context(), r.BuildID)
			if err != nil || rec.PullRequest == nil || !rec.Untrusted() {
				t.Errorf("record %+v, %v: want the untrusted pull request kept", rec, err)
			}
			if p := f.state(t); p.State != build.PullBuilding || p.ApprovedSHA != headA || p.ApprovedBy != "someone" {
				t.Errorf("stored %+v: want building, %s approved by someone", p, headA)
			}
			// Approving again builds nothing more.
			if _, ans := f.send(t, "issue_comment", prComment(t, "/ok-to-test", "other", assoc, t0.Add(2*time.Minute))); ans["ignored"] == nil {
				t.Errorf("second approval: answer %v, want ignored", ans)
			}
			if n := len(f.published(t)); n != 0 {
				t.Errorf("second approval published %d requests", n)
			}
			// A new push waits again: the approval was for headA only.
			_, ans = f.send(t, "pull_request", event(t, "pull_request-synchronize.json",
				all(fork, association("FIRST_TIME_CONTRIBUTOR"), head(headB), updated(t0.Add(3*time.Minute)))))
			if ans["waiting"] == nil || len(f.published(t)) != 0 {
				t.Fatalf("synchronize after approval: answer %v, want waiting and nothing published", ans)
			}
			// Posted in the background: in any order.
			if got := f.waitingStatuses(2); !slices.Equal(slices.Sorted(slices.Values(got)), []string{headB, headA}) {
				t.Errorf("waiting statuses %v, want one each for %s and %s", got, headA, headB)
			}
			// The new head's approval must be written after its push.
			if _, ans := f.send(t, "issue_comment", prComment(t, "/ok-to-test", "late", assoc, t0.Add(2*time.Minute+30*time.Second))); ans["ignored"] == nil ||
				!strings.Contains(ans["ignored"].(string), "approves an older head") {
				t.Errorf("approval written before the push: answer %v, want ignored as an older head's", ans)
			}
			if n := len(f.published(t)); n != 0 {
				t.Fatalf("an older head's approval published %d requests", n)
			}
			_, ans = f.send(t, "issue_comment", prComment(t, "/ok-to-test", "someone", assoc, t0.Add(4*time.Minute)))
			reqs = f.published(t)
			if len(reqs) != 1 || reqs[0].SHA != headB {
				t.Fatalf("approval of the new head: answer %v, published %+v; want a build of %s", ans, reqs, headB)
			}
		})
	}
	t.Run("label", func(t *testing.T) {
		t.Parallel()
		f := open(t)
		labeled := event(t, "pull_request-labeled.json", all(fork, association("FIRST_TIME_CONTRIBUTOR"), label("ok-to-test")))
		_, ans := f.send(t, "pull_request", labeled)
		reqs := f.published(t)
		if len(reqs) != 1 || !reqs[0].Untrusted() || reqs[0].PullRequest.ApprovedBy != "Codertocat" {
			t.Fatalf("ok-to-test label: answer %v, published %+v; want one untrusted build approved by the labeler", ans, reqs)
		}
	})
	t.Run("other label", func(t *testing.T) {
		t.Parallel()
		f := open(t)
		_, ans := f.send(t, "pull_request", event(t, "pull_request-labeled.json", all(fork, association("FIRST_TIME_CONTRIBUTOR"))))
		if ans["ignored"] == nil || len(f.published(t)) != 0 || f.state(t).State != build.PullWaiting {
			t.Fatalf("label bug: answer %v, want ignored and still waiting", ans)
		}
	})
	t.Run("label of an older head", func(t *testing.T) {
		t.Parallel()
		f := open(t)
		f.send(t, "pull_request", event(t, "pull_request-synchronize.json",
			all(fork, association("FIRST_TIME_CONTRIBUTOR"), head(headB), updated(t0.Add(time.Hour)))))
		// The label event was sent before the push, delivered after.
		_, ans := f.send(t, "pull_request", event(t, "pull_request-labeled.json",
			all(fork, association("FIRST_TIME_CONTRIBUTOR"), label("ok-to-test"))))
		if ans["ignored"] == nil || len(f.published(t)) != 0 || f.state(t).ApprovedSHA != "" {
			t.Fatalf("label of an older head: answer %v, want ignored, nothing approved", ans)
		}
	})
	t.Run("comment on an unknown pull request", func(t *testing.T) {
		t.Parallel()
		f := newPullFixture(t, `{}`)
		_, ans := f.send(t, "issue_comment", prComment(t, "/ok-to-test", "Codertocat", "OWNER", t0))
		if ans["ignored"] == nil || !strings.Contains(ans["ignored"].(string), "no pull_request event") {
			t.Fatalf("answer %v, want ignored: no pull_request event", ans)
		}
	})
	t.Run("comment on an issue, edited, without a command", func(t *testing.T) {
		t.Parallel()
		f := open(t)
		for name, body := range map[string][]byte{
			"issue":  event(t, "issue_comment-created.json", func(m map[string]any) { set(m, "comment.body", "/ok-to-test") }),
			"edited": event(t, "issue_comment-created.json", func(m map[string]any) { set(m, "action", "edited") }),
			"words":  prComment(t, "please /ok-to-test this", "Codertocat", "OWNER", t0.Add(time.Minute)),
		} {
			if _, ans := f.send(t, "issue_comment", body); ans["ignored"] == nil {
				t.Errorf("%s: answer %v, want ignored", name, ans)
			}
		}
		if n := len(f.published(t)); n != 0 {
			t.Errorf("published %d requests", n)
		}
	})
}

// TestPullRequestActions checks each pull_request action on a trusted
// pull request.
func TestPullRequestActions(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		file   string
		action string // rewrites the file's action when set
		edit   func(map[string]any)
		builds bool
	}{
		{file: "pull_request-opened.json", builds: true},
		{file: "pull_request-reopened.json", builds: true},
		{file: "pull_request-synchronize.json", builds: true},
		{file: "pull_request-ready_for_review.json", builds: true},
		{file: "pull_request-labeled.json"},
		{file: "pull_request-converted_to_draft.json"},
		{file: "pull_request-opened.json", action: "edited"},
		{file: "pull_request-opened.json", action: "assigned"},
		{file: "pull_request-opened.json", edit: draft},
		{file: "pull_request-closed.json"},
	} {
		name := strings.TrimSuffix(tt.file, ".json") + tt.action
		if tt.edit != nil {
			name += "-draft"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			f := newPullFixture(t, `{}`)
			body := event(t, tt.file, func(m map[string]any) {
				if tt.action != "" {
					m["action"] = tt.action
				}
				if tt.edit != nil {
					tt.edit(m)
				}
			})
			code, ans := f.send(t, "pull_request", body)
			reqs := f.published(t)
			if code != http.StatusAccepted || (len(reqs) == 1) != tt.builds || len(reqs) > 1 {
				t.Fatalf("status %d, answer %v, published %d; want 202 and a build: %v", code, ans, len(reqs), tt.builds)
			}
			if !tt.builds && ans["ignored"] == nil && ans["cancelled"] == nil {
				t.Errorf("answer %v, want the reason nothing was built", ans)
			}
		})
	}
}

// TestPullRequestDraft checks that a draft waits for ready_for_review.
func TestPullRequestDraft(t *testing.T) {
	t.Parallel()
	f := newPullFixture(t, `{}`)
	_, ans := f.send(t, "pull_request", event(t, "pull_request-opened.json", draft))
	if ans["ignored"] == nil || !strings.Contains(ans["ignored"].(string), "draft") || len(f.published(t)) != 0 {
		t.Fatalf("draft opened: answer %v, want ignored as a draft", ans)
	}
	if p := f.state(t); p.State != build.PullDraft {
		t.Errorf("stored state %s, want draft", p.State)
	}
	// A /retest of a draft builds nothing either.
	if _, ans := f.send(t, "issue_comment", prComment(t, "/retest", "Codertocat", "OWNER", t0.Add(time.Second))); ans["ignored"] == nil {
		t.Errorf("/retest of a draft: answer %v, want ignored", ans)
	}
	_, ans = f.send(t, "pull_request", event(t, "pull_request-ready_for_review.json", nil))
	if reqs := f.published(t); len(reqs) != 1 || reqs[0].SHA != headA {
		t.Fatalf("ready_for_review: answer %v, published %v; want a build of %s", ans, reqs, headA)
	}
	// Back to draft: its builds go on, nothing new is built.
	_, ans = f.send(t, "pull_request", event(t, "pull_request-converted_to_draft.json", updated(t0.Add(time.Hour))))
	if ans["ignored"] == nil || len(f.published(t)) != 0 || f.state(t).State != build.PullDraft {
		t.Fatalf("converted_to_draft: answer %v, want ignored and a draft", ans)
	}
}

// TestPullRequestRetest checks /retest: a trusted person's rebuilds the
// head of a trusted or approved pull request, never an unapproved one.
func TestPullRequestRetest(t *testing.T) {
	t.Parallel()
	f := newPullFixture(t, `{}`)
	f.send(t, "pull_request", event(t, "pull_request-opened.json", nil))
	first := f.published(t)
	_, ans := f.send(t, "issue_comment", prComment(t, "/retest", "a-member", "MEMBER", t0.Add(time.Minute)))
	again := f.published(t)
	if len(first) != 1 || len(again) != 1 || again[0].SHA != headA || again[0].BuildID == first[0].BuildID || again[0].RequestedBy != "a-member" {
		t.Fatalf("/retest: answer %v, published %+v after %+v; want a new build of %s by a-member", ans, again, first, headA)
	}
	if _, ans := f.send(t, "issue_comment", prComment(t, "/retest", "drive-by", "NONE", t0.Add(2*time.Minute))); ans["ignored"] == nil || len(f.published(t)) != 0 {
		t.Errorf("/retest by NONE: answer %v, want ignored", ans)
	}

	g := newPullFixture(t, `{}`)
	g.send(t, "pull_request", event(t, "pull_request-opened.json", all(fork, association("NONE"))))
	if _, ans := g.send(t, "issue_comment", prComment(t, "/retest", "Codertocat", "OWNER", t0.Add(time.Minute))); ans["ignored"] == nil ||
		!strings.Contains(ans["ignored"].(string), "waits for approval") || len(g.published(t)) != 0 {
		t.Fatalf("/retest of an unapproved fork: answer %v, want ignored, waiting for approval", ans)
	}
	g.send(t, "issue_comment", prComment(t, "/ok-to-test", "Codertocat", "OWNER", t0.Add(2*time.Minute)))
	g.published(t)
	_, ans = g.send(t, "issue_comment", prComment(t, "/retest", "Codertocat", "OWNER", t0.Add(3*time.Minute)))
	if reqs := g.published(t); len(reqs) != 1 || !reqs[0].Untrusted() || reqs[0].PullRequest.ApprovedBy != "Codertocat" {
		t.Fatalf("/retest of an approved fork: answer %v, published %+v; want an untrusted build", ans, reqs)
	}
}

// TestPullRequestPushSupersedes checks that a new push to a pull request
// supersedes its older build, waiting or running, whatever the project's
// supersede says.
func TestPullRequestPushSupersedes(t *testing.T) {
	t.Parallel()
	f := newPullFixture(t, `{}`)
	f.catalog.Set("Codertocat/Hello-World", `{"buildImage":"x","pullRequests":{},"supersede":{"queued":false}}`)
	f.send(t, "pull_request", event(t, "pull_request-opened.json", nil))
	f.send(t, "pull_request", event(t, "pull_request-synchronize.json", all(head(headB), updated(t0.Add(time.Minute)))))
	reqs := f.published(t)
	if len(reqs) != 2 {
		t.Fatalf("published %d requests, want 2", len(reqs))
	}
	older, err := f.records.Get(t.Context(), reqs[0].BuildID)
	if err != nil {
		t.Fatal(err)
	}
	if older.Status != build.StatusSuperseded || older.SupersededBy != reqs[1].BuildID {
		t.Errorf("older build %s %s by %s, want superseded by %s", older.BuildID, older.Status, older.SupersededBy, reqs[1].BuildID)
	}
	// A running build is asked to stop too.
	newer, _ := f.records.Get(t.Context(), reqs[1].BuildID)
	if err := newer.Start(f.clock.Now(), "pod", "c0ffee"); err != nil {
		t.Fatal(err)
	}
	if err := f.records.Save(t.Context(), newer); err != nil {
		t.Fatal(err)
	}
	f.send(t, "pull_request", event(t, "pull_request-synchronize.json", all(head(headC), updated(t0.Add(2*time.Minute)))))
	running, _ := f.records.Get(t.Context(), reqs[1].BuildID)
	if running.CancelRequestedAt.IsZero() || running.SupersededBy == "" {
		t.Errorf("running build of the older head: %+v, want it asked to stop, superseded", running)
	}
}

// TestPullRequestClose checks that closing a pull request cancels its
// queued and running builds, and that it then builds nothing until it is
// reopened.
func TestPullRequestClose(t *testing.T) {
	t.Parallel()
	f := newPullFixture(t, `{}`)
	f.send(t, "pull_request", event(t, "pull_request-opened.json", nil))
	queued := f.published(t)[0].BuildID
	// Another build of it runs (a /retest whose record started).
	f.send(t, "issue_comment", prComment(t, "/retest", "Codertocat", "OWNER", t0.Add(time.Second)))
	running := f.published(t)[0].BuildID
	rec, _ := f.records.Get(t.Context(), running)
	if err := rec.Start(f.clock.Now(), "pod", "c0ffee"); err != nil {
		t.Fatal(err)
	}
	if err := f.records.Save(t.Context(), rec); err != nil {
		t.Fatal(err)
	}
	f.canceller.start(running)
	// The retest superseded the queued one; queue one more that waits.
	if q, _ := f.records.Get(t.Context(), queued); q.Status != build.StatusSuperseded {
		t.Fatalf("first build %s, want superseded by the retest", q.Status)
	}
	code, ans := f.send(t, "pull_request", event(t, "pull_request-closed.json", updated(t0.Add(time.Minute))))
	if code != http.StatusAccepted || ans["cancelled"] == nil {
		t.Fatalf("closed: %d %v, want 202 with the cancelled builds", code, ans)
	}
	if got := ans["cancelled"].([]any); len(got) != 1 || got[0] != string(running) {
		t.Errorf("cancelled %v, want [%s]", got, running)
	}
	if got := f.canceller.stoppedIDs(); !slices.Equal(got, []build.ID{running}) {
		t.Errorf("canceller stopped %v, want %s", got, running)
	}
	if p := f.state(t); !p.Closed || p.State != build.PullClosed {
		t.Errorf("stored %+v, want closed", p)
	}
	if _, ans := f.send(t, "issue_comment", prComment(t, "/retest", "Codertocat", "OWNER", t0.Add(2*time.Minute))); ans["ignored"] == nil {
		t.Errorf("/retest of a closed pull request: answer %v, want ignored", ans)
	}
	// An event sent before the close but delivered after changes nothing.
	if _, ans := f.send(t, "pull_request", event(t, "pull_request-synchronize.json", all(head(headB), updated(t0.Add(30*time.Second))))); ans["ignored"] == nil {
		t.Errorf("late synchronize: answer %v, want ignored", ans)
	}
	if n := len(f.published(t)); n != 0 {
		t.Fatalf("published %d requests after the close", n)
	}
	_, ans = f.send(t, "pull_request", event(t, "pull_request-reopened.json", updated(t0.Add(time.Hour))))
	if reqs := f.published(t); len(reqs) != 1 {
		t.Fatalf("reopened: answer %v, published %d, want a build", ans, len(reqs))
	}
}

// TestPullRequestCloseCancelsWaiting checks the cancel of a build that
// had not started when its pull request was closed.
func TestPullRequestCloseCancelsWaiting(t *testing.T) {
	t.Parallel()
	f := newPullFixture(t, `{}`)
	f.send(t, "pull_request", event(t, "pull_request-opened.json", nil))
	id := f.published(t)[0].BuildID
	_, ans := f.send(t, "pull_request", event(t, "pull_request-closed.json", nil))
	if got := ans["cancelled"].([]any); len(got) != 1 || got[0] != string(id) {
		t.Fatalf("cancelled %v, want [%s]", got, id)
	}
	rec, _ := f.records.Get(t.Context(), id)
	if rec.Status != build.StatusCancelled || !strings.Contains(rec.Reason, "closed pull request #2") {
		t.Errorf("record %s %q, want cancelled by the close", rec.Status, rec.Reason)
	}
}

// TestPullRequestOutOfOrder checks that an event older than what Decap
// knows changes nothing: GitHub may deliver events out of order.
func TestPullRequestOutOfOrder(t *testing.T) {
	t.Parallel()
	f := newPullFixture(t, `{}`)
	f.send(t, "pull_request", event(t, "pull_request-synchronize.json", all(head(headB), updated(t0.Add(time.Minute)))))
	_, ans := f.send(t, "pull_request", event(t, "pull_request-opened.json", nil))
	if ans["ignored"] == nil || !strings.Contains(ans["ignored"].(string), "older than") {
		t.Errorf("late opened: answer %v, want ignored as older", ans)
	}
	if reqs := f.published(t); len(reqs) != 1 || reqs[0].SHA != headB {
		t.Errorf("published %+v, want the one build of %s", reqs, headB)
	}
	if p := f.state(t); p.HeadSHA != headB {
		t.Errorf("stored head %s, want %s", p.HeadSHA, headB)
	}
}

// TestPullRequestRedeliveryAndReplay checks that a redelivered event, and
// the same signed body under another delivery ID, build once.
func TestPullRequestRedeliveryAndReplay(t *testing.T) {
	t.Parallel()
	f := newPullFixture(t, `{}`)
	body := event(t, "pull_request-opened.json", nil)
	_, first := f.sendAs(t, "pull_request", "d-1", body)
	_, again := f.sendAs(t, "pull_request", "d-1", body)
	_, replay := f.sendAs(t, "pull_request", "d-2", body)
	id := first["builds"].([]any)[0].(map[string]any)["id"]
	for name, ans := range map[string]map[string]any{"redelivery": again, "replay": replay} {
		if ans["builds"] == nil || ans["builds"].([]any)[0].(map[string]any)["id"] != id {
			t.Errorf("%s: answer %v, want the first build %v", name, ans, id)
		}
	}
	if reqs := f.published(t); len(reqs) != 1 {
		t.Errorf("published %d requests, want 1", len(reqs))
	}
	// The same for an approval.
	g := newPullFixture(t, `{}`)
	g.send(t, "pull_request", event(t, "pull_request-opened.json", all(fork, association("NONE"))))
	ok := prComment(t, "/ok-to-test", "Codertocat", "OWNER", t0.Add(time.Minute))
	g.sendAs(t, "issue_comment", "c-1", ok)
	g.sendAs(t, "issue_comment", "c-1", ok)
	g.sendAs(t, "issue_comment", "c-2", ok)
	if reqs := g.published(t); len(reqs) != 1 {
		t.Errorf("approval: published %d requests, want 1", len(reqs))
	}
}

// TestPullRequestBaseBranch checks pullRequests.baseRefRegex.
func TestPullRequestBaseBranch(t *testing.T) {
	t.Parallel()
	f := newPullFixture(t, `{"baseRefRegex":"main"}`)
	_, ans := f.send(t, "pull_request", event(t, "pull_request-opened.json", nil))
	if ans["ignored"] == nil || !strings.Contains(ans["ignored"].(string), `base branch "master" does not match pullRequests.baseRefRegex "main"`) {
		t.Fatalf("answer %v, want ignored for its base branch", ans)
	}
	if p := f.state(t); p.State != build.PullIgnored || len(f.published(t)) != 0 {
		t.Errorf("stored %s, want ignored and nothing published", p.State)
	}
}

// TestPullRequestBadInput checks that a hostile or malformed pull request
// event is refused with a clear error and stores nothing.
func TestPullRequestBadInput(t *testing.T) {
	t.Parallel()
	for name, body := range map[string]func(t *testing.T) []byte{
		"head branch with a newline": func(t *testing.T) []byte {
			return event(t, "pull_request-opened.json", func(m map[string]any) { set(m, "pull_request.head.ref", "x\n$(id)") })
		},
		"head sha not hex": func(t *testing.T) []byte { return event(t, "pull_request-opened.json", head("$(reboot)")) },
		"hostile head repository": func(t *testing.T) []byte {
			return event(t, "pull_request-opened.json", func(m map[string]any) { set(m, "pull_request.head.repo.full_name", "../../x") })
		},
		"hostile owner": func(t *testing.T) []byte {
			return event(t, "pull_request-opened.json", func(m map[string]any) { set(m, "repository.owner.login", "../..") })
		},
		"no number": func(t *testing.T) []byte {
			return event(t, "pull_request-opened.json", func(m map[string]any) { set(m, "pull_request.number", 0) })
		},
		"not json": func(*testing.T) []byte { return []byte(`{"action":`) },
		"no update": func(t *testing.T) []byte {
			return event(t, "pull_request-opened.json", func(m map[string]any) { set(m, "pull_request.updated_at", nil) })
		},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			f := newPullFixture(t, `{}`)
			code, ans := f.send(t, "pull_request", body(t))
			if code != http.StatusBadRequest || ans["error"] == nil {
				t.Errorf("status %d answer %v, want 400 with the error", code, ans)
			}
			if _, err := f.pulls.Get(t.Context(), "Codertocat", "Hello-World", 2); !errors.Is(err, build.ErrNotFound) {
				t.Errorf("a refused event stored the pull request: %v", err)
			}
		})
	}
}

// TestPullRequestNotOptedIn checks that a project without pullRequests
// stores and builds nothing.
func TestPullRequestNotOptedIn(t *testing.T) {
	t.Parallel()
	f := newPullFixture(t, "")
	_, ans := f.send(t, "pull_request", event(t, "pull_request-opened.json", nil))
	if ans["ignored"] == nil || len(f.published(t)) != 0 {
		t.Fatalf("answer %v, want ignored", ans)
	}
	if _, err := f.pulls.Get(t.Context(), "Codertocat", "Hello-World", 2); !errors.Is(err, build.ErrNotFound) {
		t.Errorf("stored the pull request of a project that builds none: %v", err)
	}
}

// TestProjectPullsAPI checks GET /api/v1/projects/{team}/{project}/pulls:
// the open pull requests, a waiting one with its reason, behind the read
// guard.
func TestProjectPullsAPI(t *testing.T) {
	t.Parallel()
	f := newPullFixture(t, `{}`)
	f.send(t, "pull_request", event(t, "pull_request-opened.json", all(fork, association("NONE"))))
	get := func(tok string) *httptest.ResponseRecorder {
		w := httptest.NewRecorder()
		f.srv.ServeHTTP(w, apiRequest(http.MethodGet, "/api/v1/projects/Codertocat/Hello-World/pulls", tok, ""))
		return w
	}
	if w := get(""); w.Code != http.StatusUnauthorized {
		t.Errorf("without a token: status %d, want 401", w.Code)
	}
	w := get(token)
	if w.Code != http.StatusOK {
		t.Fatalf("status %d: %s", w.Code, w.Body)
	}
	var got struct {
		Pulls []build.PullRequestState `json:"pulls"`
	}
	if err := json.Unmarshal(w.Body.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	if len(got.Pulls) != 1 || got.Pulls[0].Number != 2 || got.Pulls[0].State != build.PullWaiting ||
		!strings.HasPrefix(got.Pulls[0].Reason, build.ReasonWaitingForApproval) {
		t.Errorf("pulls %+v, want #2 waiting for approval", got.Pulls)
	}
	w = httptest.NewRecorder()
	f.srv.ServeHTTP(w, apiRequest(http.MethodGet, "/api/v1/projects/Codertocat/..%2Fx/pulls", token, ""))
	if w.Code != http.StatusBadRequest {
		t.Errorf("hostile project: status %d, want 400", w.Code)
	}
}

// TestPushOfAPullRef checks that a push of a branch named like a pull
// request's builds (pull/7) is ignored with the reason, and that the API
// refuses such a ref: one lock key is never a branch's and a pull
// request's.
func TestPushOfAPullRef(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil)
	w := f.do(hook("push", "d-pull-ref", pushBody("decap-ci", "hello", "refs/heads/pull/7")))
	if got := decodeJSON(t, w)["ignored"]; w.Code != http.StatusAccepted || got == nil || !strings.Contains(got.(string), "named like pull request 7's builds") {
		t.Errorf("push of branch pull/7: %d %v, want 202 ignored", w.Code, got)
	}
	if reqs := f.queued(t); len(reqs) != 0 {
		t.Errorf("queued %d requests", len(reqs))
	}
	w = f.do(apiRequest(http.MethodPost, "/api/v1/projects/decap-ci/hello/builds", token, `{"ref":"pull/7"}`))
	if w.Code != http.StatusBadRequest || !strings.Contains(w.Body.String(), "pull request 7") {
		t.Errorf("API build of pull/7: %d %s, want 400", w.Code, w.Body)
	}
	// pull/x is an ordinary branch.
	w = f.do(hook("push", "d-pull-x", pushBody("decap-ci", "hello", "refs/heads/pull/x")))
	if got := decodeJSON(t, w)["builds"]; w.Code != http.StatusAccepted || got == nil {
		t.Errorf("push of branch pull/x: %d %s, want a build", w.Code, w.Body)
	}
}

// TestRebuildOfAPullRequestBuild checks that a rebuild of an untrusted
// pull request's build is the same pull request's, as untrusted.
func TestRebuildOfAPullRequestBuild(t *testing.T) {
	t.Parallel()
	f := newPullFixture(t, `{}`)
	f.send(t, "pull_request", event(t, "pull_request-opened.json", all(fork, association("NONE"))))
	f.send(t, "issue_comment", prComment(t, "/ok-to-test", "Codertocat", "OWNER", t0.Add(time.Minute)))
	first := f.published(t)[0]
	rec, _ := f.records.Get(t.Context(), first.BuildID)
	if err := rec.Start(f.clock.Now(), "pod", "c0ffee"); err != nil {
		t.Fatal(err)
	}
	exit := 1
	if err := rec.End(build.Outcome{BuildID: rec.BuildID, Status: build.StatusFailed, ExitCode: &exit, FinishedAt: f.clock.Now()}, f.clock.Now()); err != nil {
		t.Fatal(err)
	}
	if err := f.records.Save(t.Context(), rec); err != nil {
		t.Fatal(err)
	}
	w := httptest.NewRecorder()
	f.srv.ServeHTTP(w, apiRequest(http.MethodPost, "/api/v1/builds/"+string(first.BuildID)+"/rebuild", token, ""))
	if w.Code != http.StatusAccepted {
		t.Fatalf("rebuild: %d %s, want 202", w.Code, w.Body)
	}
	reqs := f.published(t)
	if len(reqs) != 1 || reqs[0].PullRequest == nil || !reqs[0].Untrusted() || reqs[0].Ref != "pull/2" || reqs[0].RebuildOf != first.BuildID {
		t.Fatalf("rebuild published %+v, want pull/2 again, untrusted", reqs)
	}
	if diff := cmp.Diff(first.PullRequest, reqs[0].PullRequest); diff != "" {
		t.Errorf("rebuild's pull request (-first +rebuild):\n%s", diff)
	}
}
