package github_test

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/decap-ci/decap/internal/build"
	"github.com/decap-ci/decap/internal/buildtest"
	"github.com/decap-ci/decap/internal/events"
	"github.com/decap-ci/decap/internal/github"
)

// changes returns the events of a build's changes, one per record, its
// versions from 1, each a second after the last.
func changes(recs ...build.Record) []build.Event {
	var out []build.Event
	for i, r := range recs {
		e := build.NewEvent(r, i+1, r.QueuedAt.Add(time.Duration(i)*time.Second))
		e.Source = "https://decap.example.com"
		out = append(out, e)
	}
	return out
}

// lifeOf returns the records of a build's life: queued, its launch claim,
// running, a cancel request, and its end as final.
func lifeOf(id build.ID, project, sha string, at time.Time, final build.Status) []build.Record {
	r := build.Record{BuildID: id, Team: "ae6rt", Project: project, Ref: "main", RefType: build.Branch,
		SHA: sha, Trigger: build.TriggerPush, Status: build.StatusQueued, QueuedAt: at}
	claimed := r
	claimed.LaunchingAt = at.Add(time.Second)
	running := claimed
	running.Status, running.StartedAt = build.StatusRunning, at.Add(2*time.Second)
	cancelling := running
	cancelling.CancelRequestedAt = at.Add(3 * time.Second)
	ended := cancelling
	ended.Status, ended.FinishedAt = final, at.Add(44*time.Second)
	return []build.Record{r, claimed, running, cancelling, ended}
}

// TestStatusEventsThroughAnOutage: the consumer group posts each build's
// statuses from the stream — pending when queued and when running, the
// result when it ends, once each though events repeat a status — in the
// order of the events; GitHub down (502) for a while delays them, none is
// lost or reordered; a repository GitHub does not know (404) is dropped
// and holds nothing back.
func TestStatusEventsThroughAnOutage(t *testing.T) {
	t.Parallel()
	const shaA, shaC = "6113728f27ae82c7b1a177c8d03f9e96e0adf246", "a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9"
	at := time.Now().UTC()
	gh := newFakeGitHub(t)
	gh.repos["ae6rt/dynamodb-lab"] = fakeRepo{}
	gh.set(func(f *fakeGitHub) { f.fail5xx = 4 }) // down for four posts
	s, err := github.NewStatuses(github.Config{BaseURL: gh.srv.URL, Token: token, PublicURL: "https://decap.example.com"}, time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	stream := &seenStream{FakeStream: buildtest.NewStream(), seen: make(chan struct{})}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	h := github.NewStatusEvents(s, slog.New(slog.DiscardHandler), time.Now, 0)
	go func() {
		defer close(done)
		h.Run(ctx, stream)
	}()
	defer func() { cancel(); <-done }()

	idA, idB, idC := build.NewID(at), build.NewID(at.Add(time.Millisecond)), build.NewID(at.Add(2*time.Millisecond))
	a := changes(lifeOf(idA, "dynamodb-lab", shaA, at, build.StatusSucceeded)...)
	b := changes(lifeOf(idB, "unknown-repo", shaA, at, build.StatusFailed)[:1]...)
	c := changes(lifeOf(idC, "dynamodb-lab", shaC, at, build.StatusFailed)[:1]...)
	// A group starts at the end of the stream: publish events that post
	// nothing (no SHA) until the consumer gets one.
	waitFor(t, func() bool {
		probe := changes(lifeOf(build.NewID(at), "dynamodb-lab", "", at, build.StatusSucceeded)[:1]...)
		m, err := events.Message(probe[0])
		if err != nil {
			t.Fatal(err)
		}
		stream.Publish("build-events", m)
		select {
		case <-stream.seen:
			return true
		case <-time.After(50 * time.Millisecond):
			return false
		}
	}, "the consumer")
	for _, e := range append(append(append(a[:4:4], b...), c...), a[4]) {
		m, err := events.Message(e)
		if err != nil {
			t.Fatal(err)
		}
		if err := stream.Publish("build-events", m); err != nil {
			t.Fatal(err)
		}
	}
	target := func(id build.ID) string { return "https://decap.example.com/ui/builds/" + string(id) }
	want := []postedStatus{
		{Repo: "ae6rt/dynamodb-lab", SHA: shaA, State: "pending", Context: "decap/dynamodb-lab", Description: "build " + string(idA[:8]) + "… queued", TargetURL: target(idA)},
		{Repo: "ae6rt/dynamodb-lab", SHA: shaA, State: "pending", Context: "decap/dynamodb-lab", Description: "build " + string(idA[:8]) + "… running", TargetURL: target(idA)},
		{Repo: "ae6rt/dynamodb-lab", SHA: shaC, State: "pending", Context: "decap/dynamodb-lab", Description: "build " + string(idC[:8]) + "… queued", TargetURL: target(idC)},
		{Repo: "ae6rt/dynamodb-lab", SHA: shaA, State: "success", Context: "decap/dynamodb-lab", Description: "build " + string(idA[:8]) + "… succeeded in 42s", TargetURL: target(idA)},
	}
	waitFor(t, func() bool {
		gh.mu.Lock()
		defer gh.mu.Unlock()
		return len(gh.statuses) >= len(want)
	}, "every status")
	time.Sleep(200 * time.Millisecond) // a status posted twice would come now
	gh.mu.Lock()
	got := append([]postedStatus(nil), gh.statuses...)
	gh.mu.Unlock()
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("posted statuses (-want +got):\n%s", diff)
	}
	if n := gh.count("POST", "/repos/ae6rt/dynamodb-lab/statuses/"+shaA); n != 3+4 {
		t.Errorf("posts of A's statuses: got %d, want 3 and the 4 GitHub failed", n)
	}
}

// seenStream closes seen when its consumer gets its first event.
type seenStream struct {
	*buildtest.FakeStream
	seen chan struct{}
	once sync.Once
}

func (s *seenStream) Consume(ctx context.Context, group string, handle build.EventHandler) error {
	return s.FakeStream.Consume(ctx, group, func(ctx context.Context, e build.Event) error {
		s.once.Do(func() { close(s.seen) })
		return handle(ctx, e)
	})
}

// waitFor polls cond for up to 20 s.
func waitFor(t *testing.T, cond func() bool, what string) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

// TestStatusEventsHandle: a failure GitHub may get over is returned (the
// stream delivers the event again) unless the event is older than the
// handler's max age; any other failure is dropped; events that post
// nothing make no request.
func TestStatusEventsHandle(t *testing.T) {
	t.Parallel()
	const sha = "6113728f27ae82c7b1a177c8d03f9e96e0adf246"
	now := time.Date(2026, 11, 27, 3, 0, 0, 0, time.UTC)
	id := build.NewID(now)
	life := changes(lifeOf(id, "dynamodb-lab", sha, now, build.StatusSkipped)...)
	old := life[0]
	old.Time = now.Add(-2 * time.Hour)
	deferred := life[0]
	deferred.Record.Status, deferred.Type, deferred.Version = build.StatusDeferred, build.EventDeferred, 2
	deferred.ID = build.EventID(id, 2)
	tests := []struct {
		name    string
		setup   func(*fakeGitHub)
		event   build.Event
		wantErr error // nil: acknowledged
		posts   int
	}{
		{"posted", nil, life[0], nil, 1},
		{"github down", func(f *fakeGitHub) { f.fail5xx = 1 }, life[0], build.ErrUnavailable, 1},
		{"rate limited", func(f *fakeGitHub) { f.rateLimitedUntil = now.Add(time.Hour) }, life[0], build.ErrUnavailable, 1},
		{"github down for an old event", func(f *fakeGitHub) { f.fail5xx = 1 }, old, nil, 1},
		{"unknown repository", func(f *fakeGitHub) { delete(f.repos, "ae6rt/dynamodb-lab") }, life[0], nil, 1},
		{"launch claim", nil, life[1], nil, 0},
		{"deferred", nil, deferred, nil, 0},
		{"skipped", nil, life[4], nil, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			gh := newFakeGitHub(t)
			gh.repos["ae6rt/dynamodb-lab"] = fakeRepo{}
			if tt.setup != nil {
				gh.set(tt.setup)
			}
			s, err := github.NewStatuses(github.Config{BaseURL: gh.srv.URL, Token: token}, time.Millisecond)
			if err != nil {
				t.Fatal(err)
			}
			h := github.NewStatusEvents(s, slog.New(slog.DiscardHandler), func() time.Time { return now.Add(time.Minute) }, 0)
			err = h.Handle(t.Context(), tt.event)
			if tt.wantErr == nil && err != nil || tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Errorf("got %v, want %v", err, tt.wantErr)
			}
			if got := gh.count("POST", "/repos/ae6rt/dynamodb-lab/statuses/"+sha); got != tt.posts {
				t.Errorf("posts: got %d, want %d (no retry in place: the stream retries)", got, tt.posts)
			}
		})
	}
}
