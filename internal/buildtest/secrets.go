package buildtest

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/decap-ci/decap/internal/build"
)

// FakeSecrets is an in-memory build.Secrets. It counts Reveal calls, so
// that tests can tell the dispatcher asked for no value.
type FakeSecrets struct {
	mu      sync.Mutex
	now     func() time.Time
	values  map[string]fakeSecret // team/project/NAME
	reveals int
}

type fakeSecret struct {
	value     []byte
	updatedAt time.Time
}

// NewSecrets returns an empty store that reads time from now (time.Now
// if nil).
func NewSecrets(now func() time.Time) *FakeSecrets {
	if now == nil {
		now = time.Now
	}
	return &FakeSecrets{now: now, values: map[string]fakeSecret{}}
}

// Put stores a copy of value.
func (s *FakeSecrets) Put(_ context.Context, team, project, name string, value []byte) error {
	if err := build.ValidateSecretKey(team, project, name); err != nil {
		return fmt.Errorf("put secret: %w", err)
	}
	if err := build.ValidateSecretValue(value); err != nil {
		return fmt.Errorf("put secret %s: %w", name, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.values[team+"/"+project+"/"+name] = fakeSecret{value: slices.Clone(value), updatedAt: s.now()}
	return nil
}

// Delete removes a secret.
func (s *FakeSecrets) Delete(_ context.Context, team, project, name string) error {
	if err := build.ValidateSecretKey(team, project, name); err != nil {
		return fmt.Errorf("delete secret: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	key := team + "/" + project + "/" + name
	if _, ok := s.values[key]; !ok {
		return fmt.Errorf("delete secret %s: %w", name, build.ErrNotFound)
	}
	delete(s.values, key)
	return nil
}

// List returns the project's secrets by name.
func (s *FakeSecrets) List(_ context.Context, team, project string) ([]build.SecretInfo, error) {
	if err := build.ValidateProject(team, project); err != nil {
		return nil, fmt.Errorf("list secrets: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	prefix := team + "/" + project + "/"
	var out []build.SecretInfo
	for key, v := range s.values {
		if name, ok := strings.CutPrefix(key, prefix); ok {
			out = append(out, build.SecretInfo{Name: name, Size: len(v.value), UpdatedAt: v.updatedAt})
		}
	}
	slices.SortFunc(out, func(a, b build.SecretInfo) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// Reveal returns copies of the values the project has.
func (s *FakeSecrets) Reveal(_ context.Context, team, project string, names []string) (map[string][]byte, error) {
	for _, name := range names {
		if err := build.ValidateSecretKey(team, project, name); err != nil {
			return nil, fmt.Errorf("reveal secrets: %w", err)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reveals++
	out := map[string][]byte{}
	for _, name := range names {
		if v, ok := s.values[team+"/"+project+"/"+name]; ok {
			out[name] = slices.Clone(v.value)
		}
	}
	return out, nil
}

// Reveals counts the Reveal calls so far.
func (s *FakeSecrets) Reveals() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.reveals
}
