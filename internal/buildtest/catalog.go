package buildtest

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/decap-ci/decap/internal/build"
)

// Catalog is an in-memory catalog: project keys mapped to project.json text,
// parsed as the real catalog parses them.
type Catalog struct {
	mu       sync.Mutex
	commit   string
	projects map[string]build.Project
	skipped  []string
	// Refreshes counts calls to Refresh.
	Refreshes int
}

// NewCatalog returns a catalog of the given "team/project" → project.json.
func NewCatalog(commit string, descriptors map[string]string) *Catalog {
	c := &Catalog{commit: commit, projects: map[string]build.Project{}}
	for key, js := range descriptors {
		c.Set(key, js)
	}
	return c
}

// Set adds or replaces one project.
func (c *Catalog) Set(key, projectJSON string) {
	team, project, ok := cut(key)
	if !ok {
		panic(fmt.Sprintf("buildtest: catalog key %q is not team/project", key))
	}
	p := build.Project{Team: team, Project: project}
	d, err := build.ParseDescriptor([]byte(projectJSON))
	if err != nil {
		// As the real catalog keeps it: without build's "invalid: ".
		p.Error = strings.TrimPrefix(err.Error(), build.ErrInvalid.Error()+": ")
	} else {
		p.Descriptor = &d
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.projects[key] = p
}

// SetSkipped sets the entries the catalog reports as skipped for their
// names (as catalog.Snapshot.Skipped formats them).
func (c *Catalog) SetSkipped(entries []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.skipped = slices.Clone(entries)
}

// Skipped returns what SetSkipped set.
func (c *Catalog) Skipped() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.skipped)
}

// SetCommit changes the commit the catalog reports.
func (c *Catalog) SetCommit(commit string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.commit = commit
}

func cut(key string) (string, string, bool) {
	for i := range key {
		if key[i] == '/' {
			return key[:i], key[i+1:], true
		}
	}
	return "", "", false
}

// Lookup implements the consumers' Catalog.
func (c *Catalog) Lookup(team, project string) (build.Descriptor, string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	p, ok := c.projects[build.ProjectKey(team, project)]
	switch {
	case !ok:
		return build.Descriptor{}, "", fmt.Errorf("project %s: %w", build.ProjectKey(team, project), build.ErrNotFound)
	case p.Descriptor == nil:
		// p.Error is the text of a build.ErrInvalid error from ParseDescriptor.
		return build.Descriptor{}, "", fmt.Errorf("%w: project %s is not buildable: %s", build.ErrInvalid, build.ProjectKey(team, project), p.Error)
	}
	return *p.Descriptor, c.commit, nil
}

// LookupAsOf implements the dispatcher's Catalog: the fake is always
// current, whenever the request was made.
func (c *Catalog) LookupAsOf(team, project string, _ time.Time) (build.Descriptor, string, error) {
	return c.Lookup(team, project)
}

// Projects lists projects sorted by key.
func (c *Catalog) Projects() []build.Project {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]build.Project, 0, len(c.projects))
	for _, p := range c.projects {
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key() < out[j].Key() })
	return out
}

// Refresh counts the call.
func (c *Catalog) Refresh(context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.Refreshes++
	return nil
}
