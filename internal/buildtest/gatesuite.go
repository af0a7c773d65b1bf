package buildtest

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/decap-ci/decap/internal/build"
)

// TestGate runs the Gate contract. newGate must return a gate that was never
// set. Subtests run in parallel.
func TestGate(t *testing.T, newGate func(t *testing.T) Gate) {
	since := time.Date(2025, time.March, 1, 12, 0, 0, 123456789, time.UTC)

	t.Run("open by default", func(t *testing.T) {
		t.Parallel()
		g := newGate(t)
		got, err := g.Get(t.Context())
		if err != nil {
			t.Fatalf("Get() error = %v", err)
		}
		if diff := cmp.Diff(build.GateState{}, got); diff != "" {
			t.Errorf("Get() of a new gate (-want +got):\n%s", diff)
		}
	})

	t.Run("pause and resume", func(t *testing.T) {
		t.Parallel()
		g := newGate(t)
		steps := []struct {
			name  string
			state build.GateState
		}{
			{"pause", build.GateState{Paused: true, Reason: "cluster upgrade", By: "octocat", Since: since}},
			// Setting again replaces every field.
			{"pause again", build.GateState{Paused: true, Reason: "ünïcode 🚧, \"quotes\"\nand a newline", By: "ops", Since: since.Add(time.Minute).In(time.FixedZone("X", 5*3600))}},
			{"pause without details", build.GateState{Paused: true}},
			{"resume", build.GateState{By: "octocat", Since: since.Add(time.Hour)}},
			{"pause once more", build.GateState{Paused: true, Reason: "again", By: "ops", Since: since.Add(2 * time.Hour)}},
			{"reset to zero", build.GateState{}},
		}
		for _, st := range steps {
			if err := g.Set(t.Context(), st.state); err != nil {
				t.Fatalf("%s: Set() error = %v", st.name, err)
			}
			got, err := g.Get(t.Context())
			if err != nil {
				t.Fatalf("%s: Get() error = %v", st.name, err)
			}
			// time.Time compares with Equal: the zone need not survive.
			if diff := cmp.Diff(st.state, got); diff != "" {
				t.Errorf("%s: Get() after Set (-want +got):\n%s", st.name, diff)
			}
		}
	})
}
