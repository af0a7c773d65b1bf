package buildtest

import (
	"context"
	"fmt"
	"slices"
	"sync"

	"github.com/decap-ci/decap/internal/build"
)

// FakePullRequests is an in-memory build.PullRequests. It is safe for
// concurrent use.
type FakePullRequests struct {
	mu    sync.Mutex
	pulls map[string]build.PullRequestState // by lock key
}

// NewPullRequests returns a FakePullRequests with no pull requests.
func NewPullRequests() *FakePullRequests {
	return &FakePullRequests{pulls: map[string]build.PullRequestState{}}
}

// Get returns the pull request's entry; build.ErrNotFound if none.
func (f *FakePullRequests) Get(_ context.Context, team, project string, number int) (build.PullRequestState, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	p, ok := f.pulls[build.LockKey(team, project, build.PullRef(number))]
	if !ok {
		return build.PullRequestState{}, fmt.Errorf("pull request %s#%d: %w", build.ProjectKey(team, project), number, build.ErrNotFound)
	}
	return p, nil
}

// Put stores p over version p.Version-1; see build.PullRequests.
func (f *FakePullRequests) Put(_ context.Context, p build.PullRequestState) error {
	if err := p.Validate(); err != nil {
		return fmt.Errorf("put pull request: %w", err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	old, ok := f.pulls[p.LockKey()]
	switch {
	case !ok && p.Version != 1, ok && old.Version != p.Version-1:
		return fmt.Errorf("put pull request %s version %d: %w: stored version is %d", p.LockKey(), p.Version, build.ErrConflict, old.Version)
	}
	f.pulls[p.LockKey()] = p
	return nil
}

// ListOpen returns the project's open pull requests by number.
func (f *FakePullRequests) ListOpen(_ context.Context, team, project string) ([]build.PullRequestState, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []build.PullRequestState
	for _, p := range f.pulls {
		if p.Team == team && p.Project == project && !p.Closed {
			out = append(out, p)
		}
	}
	slices.SortFunc(out, func(a, b build.PullRequestState) int { return a.Number - b.Number })
	return out, nil
}
