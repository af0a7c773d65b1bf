package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"runtime/pprof"
	"sync"
	"sync/atomic"
	"time"

	"github.com/decap-ci/decap/internal/ingest"
)

// webhook returns a signed push webhook to url with a delivery ID of its own.
func webhook(url string, body []byte, sig, delivery string) *http.Request {
	r, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		panic(err) // the URL is the bench's own
	}
	r.Header.Set("Content-Type", "application/json")
	r.Header.Set("X-GitHub-Event", "push")
	r.Header.Set("X-GitHub-Delivery", delivery)
	r.Header.Set("X-Hub-Signature-256", sig)
	return r
}

func sign(body []byte) string { return ingest.Sign([]byte(webhookSecret), body) }

// clientSide labels the calling goroutine (and those it starts, such as
// the HTTP transport's) as the load generator's, so that profiles of the
// servers can leave it out (see env.profile).
func clientSide() {
	pprof.SetGoroutineLabels(pprof.WithLabels(context.Background(), pprof.Labels("side", "client")))
}

// answer is one HTTP exchange of a load run.
type answer struct {
	status int
	body   []byte
	err    error
}

func do(c *http.Client, r *http.Request) answer {
	resp, err := c.Do(r)
	if err != nil {
		return answer{err: err}
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return answer{status: resp.StatusCode, body: body, err: err}
}

// closedLoop runs clients goroutines that each send mk(client, i) back to
// back for d, and counts the answers with status want.
func closedLoop(ctx context.Context, c *http.Client, clients int, d time.Duration, want int, mk func(client, i int) *http.Request) (ok, failed int64, elapsed time.Duration, firstErr string) {
	var nOK, nFailed atomic.Int64
	var errOnce sync.Once
	start := time.Now()
	deadline := start.Add(d)
	var wg sync.WaitGroup
	for w := range clients {
		wg.Go(func() {
			clientSide()
			for i := 0; time.Now().Before(deadline) && ctx.Err() == nil; i++ {
				a := do(c, mk(w, i))
				if a.err == nil && a.status == want {
					nOK.Add(1)
					continue
				}
				nFailed.Add(1)
				errOnce.Do(func() { firstErr = fmt.Sprintf("status %d, %v: %.200s", a.status, a.err, a.body) })
			}
		})
	}
	wg.Wait()
	return nOK.Load(), nFailed.Load(), time.Since(start), firstErr
}

// sent is one request of an open-loop run.
type sent struct {
	scheduled, start, done time.Time
	answer
}

// openLoop sends n requests, request i at start + i/rate whatever became of
// the earlier ones (an open loop: a slow server meets the same arrivals),
// with at most maxInFlight at once, and returns every exchange in order.
// Latency should be taken from scheduled, so that requests that had to wait
// for a free slot count their wait.
func openLoop(ctx context.Context, c *http.Client, rate float64, n, maxInFlight int, mk func(i int) *http.Request) []sent {
	out := make([]sent, n)
	k := n
	sem := make(chan struct{}, maxInFlight)
	start := time.Now()
	var wg sync.WaitGroup
	for i := range n {
		at := start.Add(time.Duration(float64(i) / rate * float64(time.Second)))
		if d := time.Until(at); d > 0 {
			select {
			case <-time.After(d):
			case <-ctx.Done():
			}
		}
		if ctx.Err() != nil {
			k = i
			break
		}
		sem <- struct{}{}
		r := mk(i)
		wg.Go(func() {
			clientSide()
			defer func() { <-sem }()
			s := sent{scheduled: at, start: time.Now()}
			s.answer = do(c, r)
			s.done = time.Now()
			out[i] = s
		})
	}
	wg.Wait()
	return out[:k]
}
