package catalog

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/decap-ci/decap/internal/build"
)

// Snapshot is the catalog at one commit. It is immutable and safe for
// concurrent use; the zero Snapshot is the empty catalog served before the
// first successful refresh.
type Snapshot struct {
	commit      string
	refreshedAt time.Time
	projects    []build.Project // sorted by key
	index       map[string]int  // project key → index in projects
	teams       []string
	skipped     []string
}

func newSnapshot(commit string, projects []build.Project, skipped []string, now time.Time) *Snapshot {
	projects = slices.Clone(projects)
	slices.SortFunc(projects, func(a, b build.Project) int { return strings.Compare(a.Key(), b.Key()) })
	s := &Snapshot{
		commit:      commit,
		refreshedAt: now,
		projects:    projects,
		index:       make(map[string]int, len(projects)),
		skipped:     slices.Clone(skipped),
	}
	for i, p := range projects {
		s.index[p.Key()] = i
		s.teams = append(s.teams, p.Team)
	}
	slices.Sort(s.teams)
	s.teams = slices.Compact(s.teams)
	slices.Sort(s.skipped)
	return s
}

// Commit returns the commit the snapshot was read at: a git commit SHA, or
// "dir:<hash>" for a directory source; "" for the empty snapshot.
func (s *Snapshot) Commit() string { return s.commit }

// RefreshedAt returns when a refresh last confirmed this snapshot.
func (s *Snapshot) RefreshedAt() time.Time { return s.refreshedAt }

// Projects returns every project, sorted by key. A buildable project has a
// Descriptor; an unbuildable one has none and an Error saying why, e.g.
// "project.json is missing" or "project.json: buildImage is required" (several
// problems are joined with "; "). The slice is the caller's; the Descriptors
// it points to are shared and must not be modified.
func (s *Snapshot) Projects() []build.Project { return slices.Clone(s.projects) }

// Teams returns the distinct teams that have at least one project, sorted.
func (s *Snapshot) Teams() []string { return slices.Clone(s.teams) }

// Skipped describes the directories left out because their names are not
// valid team or project names (hidden ones aside), one line each: the path,
// quoted and shortened, and the reason. Sorted.
func (s *Snapshot) Skipped() []string { return slices.Clone(s.skipped) }

// Project returns team/project, buildable or not, and whether it exists.
func (s *Snapshot) Project(team, project string) (build.Project, bool) {
	i, ok := s.index[build.ProjectKey(team, project)]
	if !ok {
		return build.Project{}, false
	}
	return s.projects[i], true
}

// Lookup returns the descriptor of a buildable project. Errors:
// build.ErrUnavailable for the empty snapshot; build.ErrInvalid for a
// malformed name or an unbuildable project, with the reason; build.ErrNotFound
// for an unknown project.
func (s *Snapshot) Lookup(team, project string) (build.Descriptor, error) {
	if err := build.ValidateName("team", team); err != nil {
		return build.Descriptor{}, err
	}
	if err := build.ValidateName("project", project); err != nil {
		return build.Descriptor{}, err
	}
	key := build.ProjectKey(team, project)
	if s.commit == "" {
		return build.Descriptor{}, fmt.Errorf("project %s: catalog not loaded yet: %w", key, build.ErrUnavailable)
	}
	p, ok := s.Project(team, project)
	switch {
	case !ok:
		return build.Descriptor{}, fmt.Errorf("project %s at catalog commit %s: %w", key, s.commit, build.ErrNotFound)
	case p.Error != "" || p.Descriptor == nil:
		return build.Descriptor{}, fmt.Errorf("%w: project %s is not buildable: %s", build.ErrInvalid, key, p.Error)
	}
	return *p.Descriptor, nil
}

// displayName quotes a path found in the repository for logs and the UI,
// shortened, with control and invalid bytes escaped.
func displayName(s string) string {
	const max = 80
	if len(s) > max {
		s = s[:max] + "…"
	}
	return strconv.Quote(s)
}

// reason drops the "invalid: " that build's errors start with: in a
// project's Error it says nothing.
func reason(err error) string {
	return strings.TrimPrefix(err.Error(), build.ErrInvalid.Error()+": ")
}

// candidate is what a source found in one <team>/<project> directory.
type candidate struct {
	team, project string
	// dirErr says the directory itself is unusable, e.g. a symlink out of the
	// repository; the fields below are then unset.
	dirErr string
	// json is the content of project.json when jsonErr is empty.
	json    []byte
	jsonErr string
	// scriptErr says why build.sh is unusable; empty when it is a file.
	scriptErr string
}

// skip formats one Snapshot.Skipped line.
func skip(path string, err error) string {
	return displayName(path) + ": " + reason(err)
}
