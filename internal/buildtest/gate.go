package buildtest

import (
	"context"
	"sync"

	"github.com/decap-ci/decap/internal/build"
)

// FakeGate is an in-memory build.Gate.
type FakeGate struct {
	mu    sync.Mutex
	state build.GateState
}

// NewGate returns an open gate.
func NewGate() *FakeGate { return &FakeGate{} }

// Get returns the gate.
func (g *FakeGate) Get(context.Context) (build.GateState, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.state, nil
}

// Set replaces the gate.
func (g *FakeGate) Set(_ context.Context, s build.GateState) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.state = s
	return nil
}
