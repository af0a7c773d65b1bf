package buildtest

import (
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/decap-ci/decap/internal/build"
)

// NewPullRequestsFunc returns a new, empty build.PullRequests.
type NewPullRequestsFunc func(t *testing.T) build.PullRequests

// TestPullRequests runs the PullRequests contract. Subtests run in
// parallel.
func TestPullRequests(t *testing.T, newPulls NewPullRequestsFunc) {
	for _, tc := range []struct {
		name string
		test func(*testing.T, NewPullRequestsFunc)
	}{
		{"put and get", testPullsPutGet},
		{"compare and swap", testPullsCompareAndSwap},
		{"list open", testPullsListOpen},
		{"invalid entries", testPullsInvalid},
		{"concurrent puts of one version", testPullsConcurrentPuts},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.test(t, newPulls)
		})
	}
}

// SamplePull returns a valid version-1 entry of team/project's pull
// request number, waiting for approval.
func SamplePull(team, project string, number int) build.PullRequestState {
	at := time.Date(2026, 11, 27, 3, 4, 5, 123456789, time.UTC)
	return build.PullRequestState{
		Team: team, Project: project, Number: number, Title: "Update the README — ünïcode",
		Author: "octocat", AuthorAssociation: "CONTRIBUTOR",
		BaseRef: "master", HeadRef: "feature/x", HeadRepo: "octocat-fork/" + project,
		HeadSHA: "ec26c3e57ca3a959ca5aad62de7213c562f8c821", HeadAt: at,
		State: build.PullWaiting, Reason: build.ReasonWaitingForApproval, EventAt: at, Version: 1,
	}
}

func testPullsPutGet(t *testing.T, newPulls NewPullRequestsFunc) {
	s := newPulls(t)
	ctx := t.Context()
	if _, err := s.Get(ctx, "Codertocat", "Hello-World", 2); !errors.Is(err, build.ErrNotFound) {
		t.Fatalf("Get() of an unknown pull request error = %v, want ErrNotFound", err)
	}
	p := SamplePull("Codertocat", "Hello-World", 2)
	if err := s.Put(ctx, p); err != nil {
		t.Fatalf("Put() error = %v", err)
	}
	got, err := s.Get(ctx, "Codertocat", "Hello-World", 2)
	if err != nil {
		t.Fatalf("Get() error = %v", err)
	}
	if diff := cmp.Diff(p, got); diff != "" {
		t.Errorf("Get() (-want +got):\n%s", diff)
	}
	// Every field survives the store, nanoseconds too.
	p.Version, p.State, p.Reason, p.Build = 2, build.PullBuilding, "", "01936f4e-7a3b-7c1d-9e2f-0a1b2c3d4e5f"
	p.ApprovedSHA, p.ApprovedBy, p.ApprovedAt = p.HeadSHA, "Codertocat", p.HeadAt.Add(time.Nanosecond)
	p.Draft, p.Trusted = true, true
	if err := s.Put(ctx, p); err != nil {
		t.Fatalf("Put() of version 2 error = %v", err)
	}
	if got, err = s.Get(ctx, "Codertocat", "Hello-World", 2); err != nil {
		t.Fatal(err)
	} else if diff := cmp.Diff(p, got); diff != "" {
		t.Errorf("Get() of version 2 (-want +got):\n%s", diff)
	}
	// Another number, project or team is another pull request.
	for _, other := range [][3]any{{"Codertocat", "Hello-World", 3}, {"Codertocat", "Other", 2}, {"Other", "Hello-World", 2}} {
		if _, err := s.Get(ctx, other[0].(string), other[1].(string), other[2].(int)); !errors.Is(err, build.ErrNotFound) {
			t.Errorf("Get(%v) error = %v, want ErrNotFound", other, err)
		}
	}
}

func testPullsCompareAndSwap(t *testing.T, newPulls NewPullRequestsFunc) {
	s := newPulls(t)
	ctx := t.Context()
	p := SamplePull("team", "project", 7)
	p.Version = 2
	if err := s.Put(ctx, p); !errors.Is(err, build.ErrConflict) {
		t.Fatalf("Put() of version 2 with none stored error = %v, want ErrConflict", err)
	}
	p.Version = 1
	if err := s.Put(ctx, p); err != nil {
		t.Fatal(err)
	}
	stale := p
	stale.Title = "stale"
	if err := s.Put(ctx, stale); !errors.Is(err, build.ErrConflict) {
		t.Errorf("Put() of version 1 over version 1 error = %v, want ErrConflict", err)
	}
	p.Version = 3
	if err := s.Put(ctx, p); !errors.Is(err, build.ErrConflict) {
		t.Errorf("Put() of version 3 over version 1 error = %v, want ErrConflict", err)
	}
	p.Version, p.Title = 2, "second"
	if err := s.Put(ctx, p); err != nil {
		t.Fatalf("Put() of version 2 over version 1 error = %v", err)
	}
	stale.Version = 2
	if err := s.Put(ctx, stale); !errors.Is(err, build.ErrConflict) {
		t.Errorf("Put() of another version 2 error = %v, want ErrConflict", err)
	}
	got, err := s.Get(ctx, "team", "project", 7)
	if err != nil {
		t.Fatal(err)
	}
	if got.Title != "second" || got.Version != 2 {
		t.Errorf("Get() = version %d %q, want version 2 \"second\": a refused Put changed the entry", got.Version, got.Title)
	}
}

func testPullsListOpen(t *testing.T, newPulls NewPullRequestsFunc) {
	s := newPulls(t)
	ctx := t.Context()
	if got, err := s.ListOpen(ctx, "team", "project"); err != nil || len(got) != 0 {
		t.Fatalf("ListOpen() of no pull requests = %v, %v; want none", got, err)
	}
	// By number, not as text: 2 before 10.
	for _, n := range []int{10, 2, 1, 30} {
		if err := s.Put(ctx, SamplePull("team", "project", n)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Put(ctx, SamplePull("team", "other", 5)); err != nil {
		t.Fatal(err)
	}
	if err := s.Put(ctx, SamplePull("team2", "project", 6)); err != nil {
		t.Fatal(err)
	}
	closed := SamplePull("team", "project", 1)
	closed.Version, closed.Closed, closed.State = 2, true, build.PullClosed
	if err := s.Put(ctx, closed); err != nil {
		t.Fatal(err)
	}
	numbers := func() []int {
		t.Helper()
		list, err := s.ListOpen(ctx, "team", "project")
		if err != nil {
			t.Fatalf("ListOpen() error = %v", err)
		}
		var out []int
		for _, p := range list {
			if p.Team != "team" || p.Project != "project" {
				t.Errorf("ListOpen(team, project) listed %s#%d", p.LockKey(), p.Number)
			}
			out = append(out, p.Number)
		}
		return out
	}
	if diff := cmp.Diff([]int{2, 10, 30}, numbers()); diff != "" {
		t.Errorf("ListOpen() numbers (-want +got):\n%s", diff)
	}
	// Reopened, it is listed again.
	closed.Version, closed.Closed, closed.State = 3, false, build.PullWaiting
	if err := s.Put(ctx, closed); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]int{1, 2, 10, 30}, numbers()); diff != "" {
		t.Errorf("ListOpen() numbers after a reopen (-want +got):\n%s", diff)
	}
}

func testPullsInvalid(t *testing.T, newPulls NewPullRequestsFunc) {
	s := newPulls(t)
	ctx := t.Context()
	for name, edit := range map[string]func(*build.PullRequestState){
		"hostile team":  func(p *build.PullRequestState) { p.Team = "../x" },
		"no number":     func(p *build.PullRequestState) { p.Number = 0 },
		"version 0":     func(p *build.PullRequestState) { p.Version = 0 },
		"unknown state": func(p *build.PullRequestState) { p.State = "merged" },
		"bad head sha":  func(p *build.PullRequestState) { p.HeadSHA = "not hex" },
	} {
		p := SamplePull("team", "project", 9)
		edit(&p)
		if err := s.Put(ctx, p); !errors.Is(err, build.ErrInvalid) {
			t.Errorf("%s: Put() error = %v, want ErrInvalid", name, err)
		}
	}
	if _, err := s.Get(ctx, "team", "project", 9); !errors.Is(err, build.ErrNotFound) {
		t.Errorf("Get() after refused Puts error = %v, want ErrNotFound", err)
	}
}

func testPullsConcurrentPuts(t *testing.T, newPulls NewPullRequestsFunc) {
	s := newPulls(t)
	ctx := t.Context()
	if err := s.Put(ctx, SamplePull("team", "project", 4)); err != nil {
		t.Fatal(err)
	}
	const writers = 8
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for i := range writers {
		wg.Go(func() {
			p := SamplePull("team", "project", 4)
			p.Version, p.Title = 2, string(rune('a'+i))
			errs <- s.Put(ctx, p)
		})
	}
	wg.Wait()
	close(errs)
	won := 0
	for err := range errs {
		switch {
		case err == nil:
			won++
		case !errors.Is(err, build.ErrConflict):
			t.Errorf("Put() error = %v, want nil or ErrConflict", err)
		}
	}
	if won != 1 {
		t.Errorf("%d of %d concurrent Puts of version 2 won, want exactly 1", won, writers)
	}
}

// TestRecordsPullRequest checks that a pull request build's record keeps
// its pull request through the store, and that its lock key's
// Unfinished lists it: a new push supersedes it, closing the pull request
// cancels it.
func TestRecordsPullRequest(t *testing.T, newRecords func(t *testing.T) Records) {
	s := newRecords(t)
	base := time.Date(2025, time.March, 1, 12, 0, 0, 0, time.UTC)
	req := build.Request{
		V: build.MessageVersion, BuildID: build.NewID(base), Team: "ae6rt", Project: "p", Ref: "pull/7", RefType: build.Pull,
		SHA: "0123456789abcdef0123456789abcdef01234567", Trigger: build.TriggerPullRequest, RequestedBy: "octocat", RequestedAt: base,
		PullRequest: &build.PullRequest{Number: 7, BaseRef: "main", HeadRef: "feature/ü", HeadRepo: "octocat/p",
			HeadSHA: "0123456789abcdef0123456789abcdef01234567", ApprovedBy: "ae6rt"},
	}
	if err := req.Validate(); err != nil {
		t.Fatal(err)
	}
	rec := build.RecordFor(req)
	saveRecord(t, s, rec)
	got, err := s.Get(t.Context(), rec.BuildID)
	if err != nil {
		t.Fatalf("Get() error = %v", err)
	}
	if diff := cmp.Diff(rec, got, ignoreNumber); diff != "" {
		t.Errorf("Get() (-want +got):\n%s", diff)
	}
	if !got.Untrusted() {
		t.Error("the stored record of an approved fork's build is trusted")
	}
	list, err := s.Unfinished(t.Context(), "ae6rt/p/pull/7")
	if err != nil || len(list) != 1 || list[0].BuildID != rec.BuildID {
		t.Fatalf("Unfinished(ae6rt/p/pull/7) = %v, %v; want the pull request's build", list, err)
	}
	if diff := cmp.Diff(rec.PullRequest, list[0].PullRequest); diff != "" {
		t.Errorf("Unfinished(): pull request (-want +got):\n%s", diff)
	}
}
