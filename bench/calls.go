package main

import (
	"fmt"
	"sort"
	"strings"
	"sync"
)

// calls counts calls by name: a service's calls to its backend ports by
// "port.operation" (a metrics.Calls: openStack's ports tell it each call,
// through the metrics' wrappers the services run), or the API calls a
// countingProxy forwards.
type calls struct {
	mu sync.Mutex
	n  map[string]int
}

func newCalls() *calls { return &calls{n: map[string]int{}} }

func (c *calls) inc(op string) {
	c.mu.Lock()
	c.n[op]++
	c.mu.Unlock()
}

// Called counts a call of op on port.
func (c *calls) Called(port, op string) { c.inc(port + "." + op) }

// snapshot returns the counts so far.
func (c *calls) snapshot() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]int, len(c.n))
	for k, v := range c.n {
		out[k] = v
	}
	return out
}

// since returns the counts made after the snapshot before.
func (c *calls) since(before map[string]int) map[string]int {
	out := c.snapshot()
	for k, v := range before {
		out[k] -= v
		if out[k] == 0 {
			delete(out, k)
		}
	}
	return out
}

// sum adds the counts of the operations whose name starts with prefix.
func sum(m map[string]int, prefix string) int {
	n := 0
	for k, v := range m {
		if strings.HasPrefix(k, prefix) {
			n += v
		}
	}
	return n
}

// format lists counts as "op n, op n", sorted by name.
func format(m map[string]int) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s %d", k, m[k])
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}
