package reliability_test

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/decap-ci/decap/internal/proctest"
)

// TestChaos SIGKILLs dispatchers and the reaper at random moments and
// restarts them, with two dispatchers running, while a stream of API build
// requests over many branches comes in, and SIGKILLs the build.sh of a
// running build now and then (an infrastructure failure). The project
// supersedes waiting and running builds (supersede.running) and keeps the
// default retries (invariants 1, 3, 4 and 8): every accepted build ends
// with a final record, none runs twice, the cap and the branch locks hold,
// a superseded request never runs, every retry follows an infrastructure
// failure, and no lock is left when all builds have ended.
func TestChaos(t *testing.T) {
	requireSuite(t)
	r := newRow(t, "chaos", "embedded")
	s := newScripts(t)
	s.addTracedWith(t, "rel", "chaos", `{"buildImage": "debian:bookworm-slim", "supersede": {"running": true}}`, 200*time.Millisecond, time.Second)
	const capacity, branches = 4, 40
	c := newCluster(t, proctest.Options{Scripts: s.dir, Trace: s.trace, Cap: capacity})
	var mu sync.Mutex
	victims := []*proctest.Service{c.Start("reaper"), c.Start("dispatcher"), c.Start("dispatcher")}
	c.Start("ingest")
	m := startMonitor(t, c, r, capacity)

	stop := make(chan struct{})
	var ids []string
	var sent sync.WaitGroup
	sent.Add(1)
	go func() {
		defer sent.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(time.Duration(100+rand.IntN(200)) * time.Millisecond):
			}
			r.add(&r.requests, 1)
			id, err := c.TryRequestBuild("rel", "chaos", fmt.Sprintf("c-%02d", rand.IntN(branches)))
			if err != nil {
				t.Errorf("request %d: %v", i, err)
				continue
			}
			r.add(&r.deliveries, 1)
			mu.Lock()
			ids = append(ids, id)
			mu.Unlock()
		}
	}()

	for k := range cfg.chaosKills {
		time.Sleep(time.Duration(300+rand.IntN(2200)) * time.Millisecond)
		i := rand.IntN(len(victims))
		v := victims[i]
		kind := strings.SplitN(v.Name, "-", 2)[0]
		c.Kill(v)
		r.add(&r.kills, 1)
		// Sometimes the service stays down for a moment.
		if rand.IntN(3) == 0 {
			time.Sleep(time.Duration(rand.IntN(1500)) * time.Millisecond)
		}
		victims[i] = c.Start(kind)
		t.Logf("kill %d/%d: %s", k+1, cfg.chaosKills, v.Name)
		if rand.IntN(2) == 0 {
			if id, ok := killBuildScript(c, m); ok {
				r.add(&r.buildKills, 1)
				t.Logf("killed the build.sh of %s", id)
			}
		}
	}
	close(stop)
	sent.Wait()
	mu.Lock()
	accepted := append([]string(nil), ids...)
	mu.Unlock()
	t.Logf("%d builds accepted during %d kills", len(accepted), cfg.chaosKills)

	// Every accepted build ends: a request a killed dispatcher held comes
	// back after its visibility timeout (30 s).
	c.WaitFor(cfg.wait, fmt.Sprintf("%d builds to have a final record", len(accepted)), func() (bool, string) {
		pending := 0
		var first string
		for _, id := range accepted {
			rec, _, err := c.GetBuild(id)
			if err != nil || !proctest.IsFinal(rec.Status) {
				pending++
				if first == "" {
					first = id + ": " + rec.String()
				}
			}
		}
		return pending == 0, fmt.Sprintf("%d pending, e.g. %s", pending, first)
	})
	waitSettled(t, c, m)
	m.halt()
	// A dispatcher killed between creating a build's run directory and
	// starting its process leaves a build the reaper records as errored
	// ("launch interrupted", an infrastructure failure, retried); its
	// script never ran. That is a final record with a reason, which
	// invariant 4 asks for, not a lost build.
	checkBuilds(t, r, c, m, accepted, capacity, nil, func(rec proctest.Record, starts int) bool {
		return rec.Status == "errored" && strings.Contains(rec.Reason, "launch interrupted") && starts == 0
	})
}
