package sqlite

import (
	"bytes"
	"sync"

	"github.com/decap-ci/decap/internal/build"
)

// docCacheSize bounds the records a docCache remembers: more than the
// dispatcher's decisions in flight (128), ~1.5 KiB each; docCacheMaxDoc
// bounds the document of one (a record is ~750 bytes; a larger one is
// decoded each time), so that the cache stays under ~8 MiB whatever the
// records hold.
const (
	docCacheSize   = 1024
	docCacheMaxDoc = 4 << 10
)

// docCache remembers, for the records this process wrote or read last,
// the stored document and the record it decodes to, so that a save that
// finds that very document stored (compared byte for byte) takes the
// record from here instead of decoding it under the write lock: a
// launch's claim follows the dispatcher's read of the record, its start
// the claim, and a build's end the reaper's read (docs/BENCHMARKS.md,
// tuning 19). A document another process wrote since is not the one
// remembered, and is decoded. It is safe for concurrent use.
type docCache struct {
	mu   sync.Mutex
	m    map[build.ID]docEntry
	ring []build.ID // the ids in the order they came, to forget the oldest
	next int
}

type docEntry struct {
	doc []byte
	rec build.Record
}

func newDocCache() *docCache {
	return &docCache{m: make(map[build.ID]docEntry, docCacheSize), ring: make([]build.ID, 0, docCacheSize)}
}

// get returns the record remembered for id if doc is its document.
func (c *docCache) get(id build.ID, doc []byte) (build.Record, bool) {
	c.mu.Lock()
	e, ok := c.m[id]
	c.mu.Unlock()
	if !ok || !bytes.Equal(e.doc, doc) {
		return build.Record{}, false
	}
	return e.rec.Clone(), true
}

// put remembers r as what doc, which the caller no longer changes,
// decodes to (as far as a save compares records: build.SameRecord).
func (c *docCache) put(id build.ID, doc []byte, r build.Record) {
	if len(doc) > docCacheMaxDoc {
		c.mu.Lock()
		// An older, smaller document of id is not the stored one either.
		// The id keeps its place in the ring: put again, it may be
		// forgotten early (a miss, never a wrong answer).
		delete(c.m, id)
		c.mu.Unlock()
		return
	}
	r = r.Clone()
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.m[id]; !ok {
		if len(c.ring) < docCacheSize {
			c.ring = append(c.ring, id)
		} else {
			delete(c.m, c.ring[c.next])
			c.ring[c.next] = id
			c.next = (c.next + 1) % docCacheSize
		}
	}
	c.m[id] = docEntry{doc: doc, rec: r}
}
