package catalog

import (
	"crypto/sha256"
	"strings"

	"github.com/decap-ci/decap/internal/build"
)

// descriptorCache keeps what parsing each project.json gave, by the SHA-256 of
// its bytes, so that a refresh parses (and compiles the managedRefRegex of)
// only the project.json files whose content changed. It holds the entries the
// last conversion used and nothing else: its size is bounded by the current
// catalog's, and the content of a project.json that is gone is forgotten at
// the next refresh. Not safe for concurrent use: Catalog.Refresh, which runs
// one at a time, is its only user.
type descriptorCache struct {
	parse   func([]byte) (build.Descriptor, error)
	entries map[[sha256.Size]byte]parsedDescriptor
}

// parsedDescriptor is one parse's outcome: a descriptor, or why there is
// none. The Descriptor is shared by every snapshot that lists it and is never
// modified.
type parsedDescriptor struct {
	d   *build.Descriptor
	err string
}

func newDescriptorCache(parse func([]byte) (build.Descriptor, error)) *descriptorCache {
	return &descriptorCache{parse: parse}
}

// projects turns candidates into projects, parsing each project.json whose
// content the previous call did not see.
func (dc *descriptorCache) projects(cands []candidate) []build.Project {
	next := make(map[[sha256.Size]byte]parsedDescriptor, len(cands))
	projects := make([]build.Project, 0, len(cands))
	for _, c := range cands {
		projects = append(projects, dc.project(c, next))
	}
	dc.entries = next
	return projects
}

func (dc *descriptorCache) project(c candidate, next map[[sha256.Size]byte]parsedDescriptor) build.Project {
	p := build.Project{Team: c.team, Project: c.project}
	if c.dirErr != "" {
		p.Error = c.dirErr
		return p
	}
	var problems []string
	var parsed parsedDescriptor
	if c.jsonErr != "" {
		problems = append(problems, c.jsonErr)
	} else {
		sum := sha256.Sum256(c.json)
		var ok bool
		if parsed, ok = next[sum]; !ok {
			if parsed, ok = dc.entries[sum]; !ok {
				parsed = dc.parseOne(c.json)
			}
			next[sum] = parsed
		}
		if parsed.err != "" {
			problems = append(problems, parsed.err)
		}
	}
	if c.scriptErr != "" {
		problems = append(problems, c.scriptErr)
	}
	if len(problems) > 0 {
		p.Error = strings.Join(problems, "; ")
		return p
	}
	p.Descriptor = parsed.d
	return p
}

func (dc *descriptorCache) parseOne(data []byte) parsedDescriptor {
	d, err := dc.parse(data)
	if err != nil {
		return parsedDescriptor{err: reason(err)}
	}
	return parsedDescriptor{d: &d}
}
