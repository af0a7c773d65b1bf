package reliability_test

import (
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/decap-ci/decap/internal/proctest"
)

// burstDescriptor is the burst project's project.json: supersede's
// defaults on odd-numbered branches (a branch's waiting pushes end
// superseded by its newest, invariant 8), none on even ones
// (exceptRefRegex), where every push builds, one after another (the
// volume behind invariant 3).
const burstDescriptor = `{"buildImage": "debian:bookworm-slim", "supersede": {"exceptRefRegex": "b-[0-9]*[02468]"}}`

// TestBurst sends a burst of signed push webhooks over many branches on the
// embedded backend, 20% of them redelivered (invariants 1, 2, 3 and 8).
func TestBurst(t *testing.T) {
	requireSuite(t)
	r := newRow(t, "burst", "embedded")
	s := newScripts(t)
	s.addTracedWith(t, "rel", "app", burstDescriptor, 0, 0)
	const capacity = 8
	c := newCluster(t, proctest.Options{Scripts: s.dir, Trace: s.trace, Cap: capacity})
	c.Start("reaper")
	c.Start("dispatcher")
	c.Start("ingest")
	runBurst(t, r, c, cfg.burstRequests, cfg.burstBranches, capacity)
}

// delivery is one unique webhook delivery of a burst.
type delivery struct {
	id     string // X-GitHub-Delivery
	branch string
	body   []byte
	build  string // the build ID of the first 202 answer
}

// runBurst sends requests webhooks over branches to c — unique deliveries
// and 20% redeliveries, half of them at once (while the first is queued or
// running) and half after the first delivery's build ended (past the point
// where only the dispatcher's once-only record can tell; the embedded
// queue's clock cannot be moved past its dedup window) — and checks that
// every unique delivery built exactly once and succeeded, or was
// superseded by a newer push of its branch (supersede's defaults) and never
// ran, and that every redelivery was answered with the first build.
func runBurst(t *testing.T, r *row, c *proctest.Cluster, requests, branches, capacity int) {
	redeliveries := requests / 5
	unique := requests - redeliveries
	early := redeliveries / 2
	late := redeliveries - early
	m := startMonitor(t, c, r, capacity)

	ds := make([]*delivery, unique)
	for i := range ds {
		branch := fmt.Sprintf("b-%04d", i%branches)
		ds[i] = &delivery{id: proctest.NewDelivery(), branch: branch, body: proctest.PushPayload("rel", "app", branch)}
	}
	// Early redeliveries follow their first delivery at once; late ones
	// go to other deliveries, after every build has ended.
	earlyOf := map[int]bool{}
	lateOf := map[int]bool{}
	for k := range early {
		earlyOf[k*unique/max(early, 1)] = true
	}
	for k := range late {
		i := k*unique/max(late, 1) + 1
		for earlyOf[i%unique] || lateOf[i%unique] {
			i++
		}
		lateOf[i%unique] = true
	}
	redeliver := func(d *delivery, when string) {
		r.add(&r.requests, 1)
		id, err := c.SendPush(c.Client(), d.id, d.body)
		if err != nil {
			t.Errorf("%s redelivery of %s: %v", when, d.id, err)
			return
		}
		r.add(&r.redeliveries, 1)
		if id != d.build {
			r.violate(t, "%s redelivery of %s answered with build %s, want the first delivery's build %s", when, d.id, id, d.build)
		}
	}

	started := time.Now()
	parallel(8, unique, func(i int) {
		d := ds[i]
		r.add(&r.requests, 1)
		id, err := c.SendPush(c.Client(), d.id, d.body)
		if err != nil {
			t.Errorf("delivery %d: %v", i, err)
			return
		}
		d.build = id
		r.add(&r.deliveries, 1)
		if earlyOf[i] {
			redeliver(d, "immediate")
		}
	})
	t.Logf("sent %d deliveries and %d immediate redeliveries in %s", unique, early, time.Since(started).Round(time.Millisecond))
	if t.Failed() {
		t.FailNow()
	}
	// A delivery to a branch with a newer one waiting is superseded and
	// never runs: wait for every record, not for a number of builds.
	waitFinal(t, c, m, func() []string {
		ids := make([]string, len(ds))
		for i, d := range ds {
			ids[i] = d.build
		}
		return ids
	}())
	t.Logf("all %d requests ended %s after the first delivery", unique, time.Since(started).Round(time.Millisecond))

	for i := range ds {
		if lateOf[i] {
			redeliver(ds[i], "late")
		}
	}
	t.Logf("sent %d redeliveries after their builds ended", late)
	waitSettled(t, c, m)

	m.halt()
	ids := make([]string, len(ds))
	for i, d := range ds {
		ids[i] = d.build
	}
	checkBuilds(t, r, c, m, ids, capacity, func(i int, rec proctest.Record) {
		if rec.DeliveryID != ds[i].id {
			r.violate(t, "build %s: got deliveryId %q, want %q", ids[i], rec.DeliveryID, ds[i].id)
		}
	}, nil)
}

// parallel runs f(0..n-1) on workers goroutines.
func parallel(workers, n int, f func(i int)) {
	next := make(chan int)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				f(i)
			}
		}()
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
}

// waitEnded waits until the trace shows n ended builds.
func waitEnded(t *testing.T, c *proctest.Cluster, m *monitor, n int) {
	t.Helper()
	last := time.Now()
	c.WaitFor(cfg.wait, fmt.Sprintf("%d builds to end", n), func() (bool, string) {
		m.mu.Lock()
		ended, started := m.tr.ended(), len(m.tr)
		m.mu.Unlock()
		status := fmt.Sprintf("%d started, %d ended", started, ended)
		if time.Since(last) > 15*time.Second {
			t.Logf("waiting: %s of %d", status, n)
			last = time.Now()
		}
		return ended >= n, status
	})
}

// waitSettled waits until the queue holds nothing (every request decided)
// and then a little longer, so a wrongly launched build would show up.
func waitSettled(t *testing.T, c *proctest.Cluster, m *monitor) {
	t.Helper()
	c.WaitFor(cfg.wait, "the queue to drain", func() (bool, string) {
		q, err := c.Queue()
		if err != nil {
			return false, err.Error()
		}
		m.mu.Lock()
		running := len(m.running)
		m.mu.Unlock()
		return q.Visible == 0 && q.InFlight == 0 && running == 0, fmt.Sprintf("%+v, %d running", q, running)
	})
	time.Sleep(3 * time.Second)
}

// checkBuilds checks the end state of a scenario whose accepted builds are
// ids (check, if set, looks at each one's record): every accepted request
// has a record, and every build of the scenario's projects — the accepted
// ones and the retries the reaper made — ends with a final record that is
// succeeded with one start, superseded (see checkInvariant8), errored by
// an infrastructure failure, or explained by allow; every started build is
// one of them and started once; the whole trace is serialized per branch
// and under the cap (a stopped build ends when its record says, if its
// trace has no end); invariant 8 holds; and no lock is left.
func checkBuilds(t *testing.T, r *row, c *proctest.Cluster, m *monitor, ids []string, capacity int,
	check func(i int, rec proctest.Record), allow func(rec proctest.Record, starts int) bool) {
	t.Helper()
	tr, err := readTrace(c.Trace())
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	projects := map[string]bool{}
	parallel(8, len(ids), func(i int) {
		id := ids[i]
		if id == "" {
			return
		}
		var rec proctest.Record
		var code int
		var err error
		for range 3 { // through a restarting ingest
			if rec, code, err = c.GetBuild(id); err == nil && code == http.StatusOK {
				break
			}
			time.Sleep(time.Second)
		}
		if err != nil || code != http.StatusOK {
			r.violate(t, "build %s: no record (HTTP %d, %v): an accepted request was lost", id, code, err)
			return
		}
		mu.Lock()
		projects[rec.Team+"/"+rec.Project] = true
		mu.Unlock()
		if check != nil {
			check(i, rec)
		}
	})
	recs := waitAllFinal(t, r, c, projects)
	for id, sp := range tr {
		if rec, ok := recs[id]; ok && sp.end.IsZero() && !rec.FinishedAt.IsZero() {
			sp.end = rec.FinishedAt // stopped, and its trace says nothing
		}
	}
	r.add(&r.builds, len(tr))
	tr.checkExact(t, r, capacity)
	statuses := map[string]int{}
	for id, rec := range recs {
		statuses[rec.Status]++
		starts := 0
		if sp := tr[id]; sp != nil {
			starts = sp.starts
		}
		switch {
		case rec.Succeeded() && starts == 1:
		case rec.Status == "superseded" && starts <= 1: // checkInvariant8
		case rec.Status == "errored" && rec.Infra != "" && starts <= 1: // retried: checkInvariant8
		case allow != nil && allow(rec, starts):
			t.Logf("build %s: %s, started %d times (allowed)", id, rec, starts)
		default:
			r.violate(t, "build %s: record %s, started %d times; want succeeded, started once", id, rec, starts)
		}
	}
	for id, sp := range tr {
		if _, ok := recs[id]; !ok {
			r.violate(t, "build %s (%s) started %d times but is none of the scenario's builds", id, sp.branch, sp.starts)
		}
	}
	checkInvariant8(t, r, tr, recs)
	t.Logf("records: %v", statuses)
	var left []proctest.Lease
	deadline := time.Now().Add(60 * time.Second)
	for {
		left, err = c.Locks()
		if err == nil && len(left) == 0 {
			break
		}
		if time.Now().After(deadline) {
			r.violate(t, "locks still held 60 s after every build ended: %+v (%v)", left, err)
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	if crashes := c.Crashed(); len(crashes) > 0 {
		t.Errorf("services crashed: %v", crashes)
	}
}
