package awssqs

import (
	"context"
	"sync"
	"time"
)

// maxSenders bounds how many batches one batcher has in flight at once. A
// second sender starts only when a full batch is waiting.
const maxSenders = 4

// batchTimeout bounds one batch request. A batch carries the entries of
// several callers, so no single caller's context governs it.
const batchTimeout = 30 * time.Second

// batcher groups concurrent calls into batch requests: "batches under load
// without adding latency at light load". A call arriving while nothing is in
// flight is sent at once (after window, if set); calls arriving while a
// batch is in flight wait and go together in the next one. A call's items
// are never split across batches, so a call of up to maxItems items is sent
// in one request, in order; callers split longer calls themselves and send
// the parts one after another.
//
// Senders are goroutines that live while calls are pending and exit when
// there are none, so a batcher needs no Close.
type batcher[T any] struct {
	window   time.Duration
	maxItems int
	maxBytes int
	size     func(T) int
	// send sends one batch and returns one error (or nil) per item.
	send func(ctx context.Context, items []T) []error

	mu      sync.Mutex
	pending []*batchCall[T]
	queued  int // items in pending
	senders int
}

type batchCall[T any] struct {
	ctx   context.Context
	items []T
	errs  []error
	done  chan struct{}
}

// do sends items in one batch request, possibly with other callers' items,
// and returns one error (or nil) per item. When ctx ends first it returns
// ctx's error; the items may or may not be sent.
func (b *batcher[T]) do(ctx context.Context, items []T) ([]error, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	c := &batchCall[T]{ctx: ctx, items: items, errs: make([]error, len(items)), done: make(chan struct{})}
	b.mu.Lock()
	b.pending = append(b.pending, c)
	b.queued += len(items)
	first := b.senders == 0
	start := first || (b.queued >= b.maxItems && b.senders < maxSenders)
	if start {
		b.senders++
	}
	b.mu.Unlock()
	if start {
		go b.run(first)
	}
	select {
	case <-c.done:
		return c.errs, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// run sends batches until no call is pending. The first sender waits window
// before its first batch so that calls arriving meanwhile join it.
func (b *batcher[T]) run(first bool) {
	if first && b.window > 0 {
		time.Sleep(b.window)
	}
	for {
		calls := b.next()
		if calls == nil {
			return
		}
		var items []T
		for _, c := range calls {
			items = append(items, c.items...)
		}
		ctx, cancel := context.WithTimeout(context.WithoutCancel(calls[0].ctx), batchTimeout)
		errs := b.send(ctx, items)
		cancel()
		i := 0
		for _, c := range calls {
			copy(c.errs, errs[i:i+len(c.items)])
			i += len(c.items)
			close(c.done)
		}
	}
}

// next takes the calls of the next batch off pending, whole calls in
// arrival order while they fit maxItems and maxBytes (the first one
// always). Calls whose context ended are dropped: their callers have
// returned. With nothing pending, next retires the sender and returns nil.
func (b *batcher[T]) next() []*batchCall[T] {
	b.mu.Lock()
	defer b.mu.Unlock()
	var calls []*batchCall[T]
	n, bytes := 0, 0
	for len(b.pending) > 0 {
		c := b.pending[0]
		if c.ctx.Err() != nil {
			b.pending = b.pending[1:]
			b.queued -= len(c.items)
			continue
		}
		size := 0
		for _, it := range c.items {
			size += b.size(it)
		}
		if len(calls) > 0 && (n+len(c.items) > b.maxItems || bytes+size > b.maxBytes) {
			break
		}
		calls = append(calls, c)
		b.pending[0] = nil
		b.pending = b.pending[1:]
		b.queued -= len(c.items)
		n += len(c.items)
		bytes += size
	}
	if len(calls) == 0 {
		b.senders--
		b.pending = nil
		return nil
	}
	return calls
}
