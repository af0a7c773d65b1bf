package ingest

import (
	"context"
	"sync"
	"time"

	"github.com/decap-ci/decap/internal/build"
)

// followHub shares the polling of followed builds' records: however many
// clients follow one build's log, its record is read once per poll
// interval, by one goroutine that starts with the build's first follower
// and stops when its last one leaves.
type followHub struct {
	records Records
	every   time.Duration
	obs     EdgeObserver

	mu     sync.Mutex
	builds map[build.ID]*followed
}

func newFollowHub(records Records, every time.Duration, obs EdgeObserver) *followHub {
	return &followHub{records: records, every: every, obs: obs, builds: map[build.ID]*followed{}}
}

// followed is one followed build: the record its poller last read, and a
// channel closed after each poll.
type followed struct {
	id        build.ID
	followers int // guarded by followHub.mu
	stop      context.CancelFunc

	mu     sync.Mutex
	rec    build.Record
	polled chan struct{}
}

// join adds a follower of rec's build, starting the build's poller if it
// is the first, and returns what the follower waits on. The caller must
// leave when it stops following.
func (h *followHub) join(rec build.Record) *followed {
	h.mu.Lock()
	defer h.mu.Unlock()
	f, ok := h.builds[rec.BuildID]
	if !ok {
		ctx, cancel := context.WithCancel(context.Background())
		f = &followed{id: rec.BuildID, stop: cancel, rec: rec, polled: make(chan struct{})}
		h.builds[rec.BuildID] = f
		go h.poll(ctx, f)
	}
	f.followers++
	h.obs.Followers(1)
	return f
}

// leave removes a follower; the last one stops the build's poller.
func (h *followHub) leave(f *followed) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.obs.Followers(-1)
	if f.followers--; f.followers > 0 {
		return
	}
	f.stop()
	delete(h.builds, f.id)
}

// poll reads f's record every interval until ctx ends, and wakes f's
// followers after each read. A failed read keeps the last record: the
// followers try again at the next poll.
func (h *followHub) poll(ctx context.Context, f *followed) {
	tick := time.NewTicker(h.every)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		rec, err := h.records.Get(rctx, f.id)
		cancel()
		h.obs.FollowPolled()
		f.mu.Lock()
		if err == nil {
			f.rec = rec
		}
		close(f.polled)
		f.polled = make(chan struct{})
		f.mu.Unlock()
	}
}

// next returns a channel closed after the next poll.
func (f *followed) next() <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.polled
}

// record returns the record the last poll read.
func (f *followed) record() build.Record {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.rec
}

// count returns how many builds are followed now.
func (h *followHub) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.builds)
}
