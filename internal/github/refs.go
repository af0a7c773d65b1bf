package github

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/go-github/v93/github"

	"github.com/decap-ci/decap/internal/build"
)

// DefaultRefsTTL is how long Refs reuses a repository's listing.
const DefaultRefsTTL = 30 * time.Second

const (
	// perPage is GitHub's largest page size for branches and tags.
	perPage = 100
	// maxPages bounds one listing (10,000 branches or tags); a repository
	// with more is listed up to there.
	maxPages = 100
	// maxCached bounds the cache; when full, the oldest listing goes.
	maxCached = 4096
	// maxFetch bounds one whole listing, all pages.
	maxFetch = 2 * time.Minute
)

// refsAPI is the part of go-github's RepositoriesService that Refs calls.
type refsAPI interface {
	ListBranches(ctx context.Context, owner, repo string, opts *github.BranchListOptions) ([]*github.Branch, *github.Response, error)
	ListTags(ctx context.Context, owner, repo string, opts *github.ListOptions) ([]*github.RepositoryTag, *github.Response, error)
}

// Refs lists the branches and tags of GitHub repositories. Listings are
// cached per repository for a TTL and shared by concurrent callers, so a busy
// UI costs GitHub a few requests a minute. It is safe for concurrent use.
type Refs struct {
	api refsAPI
	ttl time.Duration
	now func() time.Time

	mu       sync.Mutex
	cache    map[string]refsEntry
	inflight map[string]*refsCall
}

type refsEntry struct {
	branches, tags []build.RefInfo
	fetched        time.Time
}

// refsCall is one listing in progress; waiters read the result after done.
type refsCall struct {
	done           chan struct{}
	branches, tags []build.RefInfo
	err            error
}

// NewRefs returns a Refs for cfg. ttl is how long a listing is reused
// (DefaultRefsTTL when <= 0); now is the clock the TTL is measured by
// (time.Now when nil).
func NewRefs(cfg Config, ttl time.Duration, now func() time.Time) (*Refs, error) {
	c, err := newClient(cfg)
	if err != nil {
		return nil, err
	}
	return newRefs(c.Repositories, ttl, now), nil
}

func newRefs(api refsAPI, ttl time.Duration, now func() time.Time) *Refs {
	if ttl <= 0 {
		ttl = DefaultRefsTTL
	}
	if now == nil {
		now = time.Now
	}
	return &Refs{api: api, ttl: ttl, now: now, cache: map[string]refsEntry{}, inflight: map[string]*refsCall{}}
}

// Refs returns the branches and tags of github.com/<team>/<project>, every
// page of them, in GitHub's order. A listing younger than the TTL is reused.
// When GitHub cannot answer (rate limit, 5xx, network) and an older listing
// is cached, that listing is returned however old it is; without one the
// error wraps build.ErrUnavailable and, for a rate limit, says when it
// resets. An unknown repository (or one the token cannot see) gives
// build.ErrNotFound, an invalid team or project build.ErrInvalid. The
// returned slices are the caller's.
func (r *Refs) Refs(ctx context.Context, team, project string) (branches, tags []build.RefInfo, err error) {
	if err := build.ValidateName("team", team); err != nil {
		return nil, nil, err
	}
	if err := build.ValidateName("project", project); err != nil {
		return nil, nil, err
	}
	// GitHub's owner and repository names are case-insensitive.
	key := strings.ToLower(build.ProjectKey(team, project))

	r.mu.Lock()
	if e, ok := r.cache[key]; ok && r.now().Sub(e.fetched) < r.ttl {
		r.mu.Unlock()
		return slices.Clone(e.branches), slices.Clone(e.tags), nil
	}
	call, running := r.inflight[key]
	if !running {
		call = &refsCall{done: make(chan struct{})}
		r.inflight[key] = call
		// The listing outlives a caller that gives up: it fills the cache
		// for the next one, and it is bounded by maxFetch.
		go r.run(context.WithoutCancel(ctx), key, team, project, call)
	}
	r.mu.Unlock()

	select {
	case <-call.done:
	case <-ctx.Done():
		return nil, nil, fmt.Errorf("refs of %s: %w", build.ProjectKey(team, project), ctx.Err())
	}
	if call.err != nil {
		return nil, nil, call.err
	}
	return slices.Clone(call.branches), slices.Clone(call.tags), nil
}

// run lists one repository for everyone waiting on call, and caches the
// result; when GitHub cannot answer, waiters get the cached listing if any.
func (r *Refs) run(ctx context.Context, key, team, project string, call *refsCall) {
	ctx, cancel := context.WithTimeout(ctx, maxFetch)
	defer cancel()
	branches, tags, err := r.fetch(ctx, team, project)
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.inflight, key)
	switch {
	case err == nil:
		r.store(key, refsEntry{branches: branches, tags: tags, fetched: r.now()})
	case errors.Is(err, build.ErrUnavailable):
		if e, ok := r.cache[key]; ok {
			branches, tags, err = e.branches, e.tags, nil
		}
	}
	call.branches, call.tags, call.err = branches, tags, err
	close(call.done)
}

// store caches e under key, dropping the oldest listing when full. The
// caller holds r.mu.
func (r *Refs) store(key string, e refsEntry) {
	if _, ok := r.cache[key]; !ok && len(r.cache) >= maxCached {
		oldest, first := "", true
		for k, v := range r.cache {
			if first || v.fetched.Before(r.cache[oldest].fetched) {
				oldest, first = k, false
			}
		}
		delete(r.cache, oldest)
	}
	r.cache[key] = e
}

// fetch lists every page of branches and then of tags.
func (r *Refs) fetch(ctx context.Context, team, project string) (branches, tags []build.RefInfo, err error) {
	what := "repository " + build.ProjectKey(team, project)
	branches = []build.RefInfo{}
	bopts := &github.BranchListOptions{ListOptions: github.ListOptions{PerPage: perPage}}
	for range maxPages {
		page, resp, err := r.api.ListBranches(ctx, team, project, bopts)
		if err != nil {
			return nil, nil, classify(err, what+" branches", r.now())
		}
		for _, b := range page {
			branches = append(branches, build.RefInfo{Name: b.GetName(), SHA: b.GetCommit().GetSHA()})
		}
		if resp == nil || resp.NextPage == 0 {
			break
		}
		bopts.Page = resp.NextPage
	}
	tags = []build.RefInfo{}
	topts := &github.ListOptions{PerPage: perPage}
	for range maxPages {
		page, resp, err := r.api.ListTags(ctx, team, project, topts)
		if err != nil {
			return nil, nil, classify(err, what+" tags", r.now())
		}
		for _, t := range page {
			tags = append(tags, build.RefInfo{Name: t.GetName(), SHA: t.GetCommit().GetSHA()})
		}
		if resp == nil || resp.NextPage == 0 {
			break
		}
		topts.Page = resp.NextPage
	}
	return branches, tags, nil
}
