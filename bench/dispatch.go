package main

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/decap-ci/decap/internal/backend"
	"github.com/decap-ci/decap/internal/build"
	"github.com/decap-ci/decap/internal/dispatch"
	"github.com/decap-ci/decap/internal/metrics"
	"github.com/decap-ci/decap/internal/reap"
	"github.com/decap-ci/decap/internal/sqlite"
)

// bareLoops is how many receive+delete loops the baseline runs at once, as
// several consumers (or replicas) would.
const bareLoops = 4

// throughput is one drain of a queue of n requests.
type throughput struct {
	n, done  int
	elapsed  time.Duration
	timedOut bool
	cores    float64
	// store is the embedded store's write transactions during the
	// drain, of every open taking part (zero on aws).
	store sqlite.WriteStats
}

// storeWrites returns the write counts of the stacks' embedded stores,
// added up.
func storeWrites(stacks ...*stack) sqlite.WriteStats {
	var sum sqlite.WriteStats
	for _, s := range stacks {
		st, _ := s.set.StoreWrites()
		sum.Transactions += st.Transactions
		sum.Writes += st.Writes
		sum.LockHeld += st.LockHeld
		sum.LockWait += st.LockWait
	}
	return sum
}

// writesSince is w less before.
func writesSince(w, before sqlite.WriteStats) sqlite.WriteStats {
	return sqlite.WriteStats{Transactions: w.Transactions - before.Transactions, Writes: w.Writes - before.Writes,
		LockHeld: w.LockHeld - before.LockHeld, LockWait: w.LockWait - before.LockWait}
}

// lockShare says how much of the drain the store's write lock was held,
// and for how long per request.
func (t throughput) lockShare() string {
	if t.done == 0 || t.elapsed <= 0 {
		return "no drain"
	}
	return fmt.Sprintf("held the write lock %.0f%% of the time, %s per request (%.1f write transactions and %.1f writes per request; %s of waits for the lock in all)",
		100*t.store.LockHeld.Seconds()/t.elapsed.Seconds(), ms(t.store.LockHeld/time.Duration(t.done)),
		float64(t.store.Transactions)/float64(t.done), float64(t.store.Writes)/float64(t.done), t.store.LockWait.Round(time.Millisecond))
}

func (t throughput) rate() float64 {
	if t.elapsed <= 0 {
		return 0
	}
	return float64(t.done) / t.elapsed.Seconds()
}

// fillGap spaces the requests fill makes as ingest would accept them at
// its fastest (~2,500 webhooks/s on this machine): their build IDs and
// request times are fillGap apart, so they are accepted in the past, in
// the order they are queued, a few per millisecond. Made in one instant,
// every build ID would share its millisecond and sort at random.
const fillGap = 400 * time.Microsecond

// fill publishes n build requests over keys lock keys (request i to key
// i%keys, so the groups interleave), 100 to a Publish. With asIngest, each
// request's delivery is claimed and its queued record written first, as
// ingest does for a webhook (8 at a time), so the dispatcher finds what it
// finds in production.
func fill(ctx context.Context, b *backend.Set, tag string, n, keys int, asIngest bool) error {
	now := time.Now().UTC()
	reqs := make([]build.Request, n)
	for i := range n {
		at := now.Add(-time.Duration(n-i) * fillGap)
		reqs[i] = build.Request{
			V: build.MessageVersion, BuildID: build.NewID(at), Team: benchTeam, Project: benchProject,
			Ref: fmt.Sprintf("%s-k%04d", tag, i%keys), RefType: build.Branch, SHA: "6113728f27ae82c7b1a177c8d03f9e96e0adf246",
			Trigger: build.TriggerPush, RequestedBy: "bench", RequestedAt: at, DeliveryID: fmt.Sprintf("%s-%d", tag, i),
		}
	}
	if asIngest {
		var next atomic.Int64
		errs := make(chan error, 8)
		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() {
				for i := int(next.Add(1)) - 1; i < n && ctx.Err() == nil; i = int(next.Add(1)) - 1 {
					r := reqs[i]
					if _, err := b.Idempotency.Claim(ctx, r.IdempotencyKey(), r.BuildID, build.IdempotencyTTL); err != nil {
						errs <- err
						return
					}
					if err := b.Records.Save(ctx, build.RecordFor(r)); err != nil {
						errs <- err
						return
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		if err := <-errs; err != nil {
			return fmt.Errorf("fill the queue: %w", err)
		}
	}
	for i := 0; i < n; i += 100 {
		if err := b.Queue.Publish(ctx, reqs[i:min(i+100, n)]...); err != nil {
			return fmt.Errorf("fill the queue: %w", err)
		}
	}
	return nil
}

// bareDrain receives and deletes n messages with bareLoops loops, and
// nothing else: the most the queue backend does for a consumer. The time
// ends at the n-th delete.
func bareDrain(ctx context.Context, q build.Queue, n int, limit time.Duration) (throughput, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var deleted atomic.Int64
	var firstErr error
	var once sync.Once
	var end atomic.Int64 // UnixNano of the n-th delete
	start := time.Now()
	deadline := start.Add(limit)
	c0 := cpuTime()
	var wg sync.WaitGroup
	for range bareLoops {
		wg.Go(func() {
			for deleted.Load() < int64(n) && time.Now().Before(deadline) && ctx.Err() == nil {
				msgs, err := q.Receive(ctx, 10, time.Second)
				if err != nil {
					if ctx.Err() == nil {
						once.Do(func() { firstErr = err })
					}
					return
				}
				for _, m := range msgs {
					if err := q.Delete(ctx, m.Receipt); err != nil {
						if ctx.Err() == nil {
							once.Do(func() { firstErr = err })
						}
						continue
					}
					if deleted.Add(1) == int64(n) {
						end.Store(time.Now().UnixNano())
						cancel() // the other loops' long polls
					}
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	if e := end.Load(); e != 0 {
		elapsed = time.Unix(0, e).Sub(start)
	}
	t := throughput{n: n, done: int(deleted.Load()), elapsed: elapsed, cores: float64(cpuTime()-c0) / float64(time.Since(start))}
	t.timedOut = t.done < n
	return t, firstErr
}

// endsAtOnce hears the dispatcher's decisions and ends every build it
// started at once, inside the decision, through a real reaper: the record
// is final and the lock released before the dispatcher deletes the
// message, so the key's next request finds the lock free. (A real
// Observer must not block; this one stands in for a build that ends the
// moment it starts.)
type endsAtOnce struct {
	lt     *launchTimes
	reaper *reap.Reaper
	failed *atomic.Int64
}

func (o endsAtOnce) Decided(d dispatch.Decision) {
	if d.Action != dispatch.Launched || d.Cause != dispatch.CauseStarted {
		return
	}
	job, ok := o.lt.job(d.BuildID)
	if !ok {
		return
	}
	now := time.Now()
	r := job.Request
	out := build.Outcome{BuildID: r.BuildID, PodName: r.BuildID.PodName(), Team: r.Team, Project: r.Project, Ref: r.Ref,
		Status: build.StatusSucceeded, ExitCode: new(int), StartedAt: now, FinishedAt: now}
	for attempt := 0; ; attempt++ {
		err := o.reaper.Handle(context.Background(), out)
		if err == nil {
			return
		}
		if attempt == 10 {
			o.failed.Add(1)
			return
		}
		time.Sleep(10 * time.Millisecond) // as the watcher retries
	}
}

func (endsAtOnce) Paused(bool) {}

// dispatchRun is the dispatcher's drain of n requests.
type dispatchRun struct {
	throughput
	dec     *decisions
	writes  float64 // write calls per launched request
	perCall string  // the calls of the whole run
	top     string  // CPU profile, when taken
	// reapFailed counts builds the reaper could not end.
	reapFailed int64
	// reapWrites is the reaper's write calls per build.
	reapWrites float64
	// workers is the dispatcher's decisions in flight (its default).
	workers int
}

// drainWithDispatcher fills a queue on backend kind with n requests over
// keys lock keys, then runs a dispatcher wired as cmd/dispatcher (launcher
// returning at once) and a reaper on a stack of its own that ends every
// launched build at once (records it, releases its lock), until all n are
// launched.
//
// With sharedReaper the reaper writes through the dispatcher's own stack
// (one SQLite connection and writer for both) instead of one of its own:
// a diagnostic of what contention between two writers costs. With
// separate the dispatcher makes a launch's writes in separate calls even
// where the store combines them (backend.Set.Launches; tuning 4's before).
func drainWithDispatcher(ctx context.Context, e *env, name, kind, dataDir string, n, keys int, limit time.Duration, profile, sharedReaper, separate bool) (dispatchRun, error) {
	counted := newCalls()
	dis, err := openStack(ctx, e, "dispatcher", kind, dataDir, counted)
	if err != nil {
		return dispatchRun{}, err
	}
	defer dis.close()
	if separate {
		dis.set.Launches, dis.set.Ends = nil, nil
	}
	reaped := counted
	rp := dis
	if !sharedReaper {
		reaped = newCalls()
		if rp, err = openStack(ctx, e, "reaper", kind, dataDir, reaped); err != nil {
			return dispatchRun{}, err
		}
		defer rp.close()
		if separate {
			rp.set.Ends = nil
		}
	}
	tag := fmt.Sprintf("%s-%d", name, time.Now().UnixNano())
	if err := fill(ctx, dis.set, tag, n, keys, true); err != nil {
		return dispatchRun{}, err
	}

	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// Both forward build events, as cmd/dispatcher and cmd/reaper do: the
	// record changes' events go from the outbox to the stream meanwhile.
	defer dis.set.StartEvents(rctx, metrics.NewEvents(dis.reg))()
	if !sharedReaper {
		defer rp.set.StartEvents(rctx, metrics.NewEvents(rp.reg))()
	}
	lt := newLaunchTimes(nil)
	lt.keepJobs = true
	dec := &decisions{}
	reaper, err := rp.reaper(lt.fake)
	if err != nil {
		return dispatchRun{}, err
	}
	var reapFailed atomic.Int64
	d, err := dis.dispatcher(lt, dec, endsAtOnce{lt: lt, reaper: reaper.Reaper, failed: &reapFailed})
	if err != nil {
		return dispatchRun{}, err
	}

	before, rBefore := counted.snapshot(), reaped.snapshot()
	stacks := []*stack{dis}
	if !sharedReaper {
		stacks = append(stacks, rp)
	}
	wBefore := storeWrites(stacks...)
	var stop func() (string, float64)
	if profile {
		stop = e.profile(name)
	}
	c0 := cpuTime()
	start := time.Now()
	done := make(chan error, 1)
	go func() { done <- d.Run(rctx) }()
	deadline := start.Add(limit)
	for lt.n.Load() < int64(n) && time.Now().Before(deadline) && ctx.Err() == nil {
		time.Sleep(2 * time.Millisecond)
	}
	r := dispatchRun{throughput: throughput{n: n, done: int(lt.n.Load()), elapsed: time.Since(start)}, dec: dec,
		workers: dis.base.Config.DispatchWorkers}
	r.store = writesSince(storeWrites(stacks...), wBefore)
	r.cores = float64(cpuTime()-c0) / float64(r.elapsed)
	if stop != nil {
		r.top, _ = stop()
	}
	cancel()
	<-done
	r.timedOut = r.done < n
	r.reapFailed = reapFailed.Load()
	calls, rcalls := counted.since(before), reaped.since(rBefore)
	if sharedReaper {
		rcalls = map[string]int{} // in calls already
	}
	if r.done > 0 {
		r.writes = float64(writeCalls(calls)) / float64(r.done)
		r.reapWrites = float64(writeCalls(rcalls)) / float64(r.done)
	}
	r.perCall = format(calls)
	return r, ctx.Err()
}

func benchDispatch(ctx context.Context, e *env) (result, error) {
	return dispatchThroughput(ctx, e, "dispatch", "embedded", e.scale.DispatchN, e.scale.DispatchKeys, 5*time.Minute)
}

func benchDispatchAWS(ctx context.Context, e *env) (result, error) {
	return dispatchThroughput(ctx, e, "dispatch-aws", "aws", e.scale.AWSDispatchN, e.scale.AWSDispatchKeys, 4*time.Minute)
}

// dispatchThroughput drains n requests over keys lock keys with the bare
// receive+delete loops (the baseline), then with the dispatcher, then with
// the bare loops again: the baseline is the mean of the two, which
// brackets the dispatcher's run on a machine whose load changes.
func dispatchThroughput(ctx context.Context, e *env, name, kind string, n, keys int, limit time.Duration) (result, error) {
	var bases []throughput
	baseline := func(i int) error {
		// On a data directory (embedded) of its own, as big as the
		// dispatcher's.
		st, err := openStack(ctx, e, "bare", kind, e.dir(fmt.Sprintf("%s-bare%d", name, i)))
		if err != nil {
			return err
		}
		defer st.close()
		if err := fill(ctx, st.set, fmt.Sprintf("%s-bare%d-%d", name, i, time.Now().UnixNano()), n, keys, false); err != nil {
			return err
		}
		w0 := storeWrites(st)
		t, err := bareDrain(ctx, st.set.Queue, n, limit)
		if err != nil {
			return fmt.Errorf("bare receive+delete: %w", err)
		}
		t.store = writesSince(storeWrites(st), w0)
		e.logf("%s: bare receive+delete drained %d of %d in %s", name, t.done, n, t.elapsed.Round(time.Millisecond))
		bases = append(bases, t)
		return nil
	}
	// On the embedded store the dispatcher drains rounds times, each
	// between two bare drains; the figure is the round of the median
	// ratio (runs minutes apart on this shared machine differ by a
	// quarter). On moto, one round.
	rounds := 1
	if kind == "embedded" {
		rounds = max(1, e.scale.DispatchRounds)
	}
	if err := baseline(1); err != nil {
		return result{}, err
	}
	var runs []dispatchRun
	var shared, separate dispatchRun
	for i := range rounds {
		rname := name
		if i > 0 {
			rname = fmt.Sprintf("%s-round%d", name, i+1)
		}
		run, err := drainWithDispatcher(ctx, e, rname, kind, e.dir(rname), n, keys, limit, kind == "embedded" && i == 0, false, false)
		if err != nil {
			return result{}, err
		}
		e.logf("%s: dispatcher launched %d of %d in %s", rname, run.done, n, run.elapsed.Round(time.Millisecond))
		runs = append(runs, run)
		if i == 0 && kind == "embedded" {
			if shared, err = drainWithDispatcher(ctx, e, name+"-shared", kind, e.dir(name+"-shared"), n, keys, limit, false, true, false); err != nil {
				return result{}, err
			}
			e.logf("%s: dispatcher with the reaper on its connection launched %d of %d in %s", name, shared.done, n, shared.elapsed.Round(time.Millisecond))
			if separate, err = drainWithDispatcher(ctx, e, name+"-separate", kind, e.dir(name+"-separate"), n, keys, limit, false, false, true); err != nil {
				return result{}, err
			}
			e.logf("%s: dispatcher making a launch's writes in separate calls launched %d of %d in %s", name, separate.done, n, separate.elapsed.Round(time.Millisecond))
		}
		if err := baseline(i + 2); err != nil {
			return result{}, err
		}
	}
	// Round i's baseline is the mean of the bare drains before and after it.
	bracket := func(i int) throughput {
		base := throughput{n: n}
		for _, b := range bases[i : i+2] {
			base.done += b.done
			base.elapsed += b.elapsed
			base.timedOut = base.timedOut || b.timedOut
		}
		base.done /= 2
		base.elapsed /= 2
		return base
	}
	var baseRates []string
	for _, b := range bases {
		baseRates = append(baseRates, perSec(b.rate(), "messages")+" in "+b.elapsed.Round(time.Millisecond).String()+" ("+cores(b.cores)+")")
	}
	order := make([]int, rounds)
	for i := range order {
		order[i] = i
	}
	roundRatio := func(i int) float64 { return runs[i].rate() / bracket(i).rate() }
	slices.SortFunc(order, func(a, b int) int { return cmp.Compare(roundRatio(a), roundRatio(b)) })
	m := order[rounds/2]
	run, base := runs[m], bracket(m)
	var roundsText []string
	for i := range runs {
		roundsText = append(roundsText, fmt.Sprintf("%d. %s against %s, %s", i+1, perSec(runs[i].rate(), "launched"),
			perSec(bracket(i).rate(), "messages"), ratio(runs[i].rate(), bracket(i).rate())))
	}

	backendName := "embedded (SQLite)"
	if kind == "aws" {
		backendName = "AWS adapters on moto"
	}
	partial := func(t throughput) string {
		if t.timedOut {
			return fmt.Sprintf(" (timed out: %d of %d in %s)", t.done, t.n, t.elapsed.Round(time.Second))
		}
		return ""
	}
	decRate := float64(run.dec.total()) / run.elapsed.Seconds()
	roundsWhat := ""
	if rounds > 1 {
		roundsWhat = fmt.Sprintf(" (the median of %d rounds)", rounds)
	}
	res := result{rows: []row{{
		what: fmt.Sprintf("dispatcher: %d queued requests over %d lock keys, launcher returns at once, %s%s", n, keys, backendName, roundsWhat),
		figure: fmt.Sprintf("%s (%s incl. deferrals)%s", perSec(run.rate(), "requests launched"),
			perSec(decRate, "decisions"), partial(run.throughput)),
		baseline: fmt.Sprintf("%s%s (bare receive+delete, %d loops, before and after the round)", perSec(base.rate(), "messages"), partial(base), bareLoops),
		ratio:    ratio(run.rate(), base.rate()), target: "≥ 0.7", holds: check(!run.timedOut && !base.timedOut && run.rate()/base.rate() >= 0.7),
		command: e.command(name),
	}}}
	var b strings.Builder
	fmt.Fprintf(&b, "%s. Baseline: %d requests over %d lock keys drained by %d loops of Receive(10) + Delete, nothing else, "+
		"before the dispatcher's first round and after each, each on a fresh queue: %s. ",
		backendName, n, keys, bareLoops, strings.Join(baseRates, "; "))
	if rounds > 1 {
		fmt.Fprintf(&b, "Rounds, each against the mean of the bare drains before and after it: %s; the figure is round %d's, "+
			"the median, and so are the details below (the CPU profile is round 1's). ", strings.Join(roundsText, "; "), m+1)
	}
	fmt.Fprintf(&b, "Dispatcher: the same number on a fresh queue, decided by dispatch.Dispatcher wired as cmd/dispatcher "+
		"(%d workers, batches of 10) and launched by a launcher that returns at once. A reaper on its own connection ends each "+
		"build inside its decision (final record, lock released: write transactions counted in the time, and in the reaper's calls "+
		"below), so each key's next request finds its lock free, as it would once a real build ended. "+
		"%d launched in %s (the process used %s).\n\n", run.workers, run.done, run.elapsed.Round(time.Millisecond), cores(run.cores))
	fmt.Fprintf(&b, "Decisions: %s; builds the reaper failed to end: %d.\n\n", run.dec, run.reapFailed)
	fmt.Fprintf(&b, "The dispatcher's backend calls: %s: %.1f write calls per launched request, and the reaper's %.1f "+
		"(final record, lock release: one write where the store combines them), where a bare receive+delete makes 1.1 (a receive per batch, a delete per message).",
		run.perCall, run.writes, run.reapWrites)
	if kind == "embedded" {
		fmt.Fprintf(&b, " On SQLite every write call is a write transaction on the one write connection of its process, made "+
			"durable by an fsync (shared among concurrent writes when the adapter can): %.0f write calls/s during the "+
			"dispatcher's run (reaper included), %.0f during the bare drains; an fdatasync alone takes %s (p50).",
			run.rate()*(run.writes+run.reapWrites), base.rate()*1.1, ms(e.fsync.quantile(0.5)))
	}
	b.WriteString("\n")
	if kind == "embedded" {
		var bare []string
		for _, t := range bases {
			bare = append(bare, t.lockShare())
		}
		fmt.Fprintf(&b, "\nSQLite's write lock, which one connection at a time holds (sqlite.DB.WriteStats, the "+
			"decap_sqlite_write_* metrics; the time held includes the checkpoints at the end of some commits, when the "+
			"lock is free already, so two connections' shares may add up to a little over 100%%): the dispatcher's and "+
			"the reaper's connections together %s. The bare drains: %s. "+
			"A store whose writes the lock serialises launches at most 1/(lock time per request) a second, whatever the cores.\n",
			run.lockShare(), strings.Join(bare, "; "))
		fmt.Fprintf(&b, "\nDiagnostic, not the figure: the same drain with the reaper writing through the dispatcher's own "+
			"connection (one writer for both, as if they were one process) launched %d in %s: %s, %s of the bare rate. "+
			"The difference is what two processes' writers cost each other on one SQLite file: a write that finds the "+
			"lock taken waits for it (it tries again within tens of microseconds: tuning 2), and each transaction of one "+
			"begins with a page cache the other's commits made stale.\n",
			shared.done, shared.elapsed.Round(time.Millisecond), perSec(shared.rate(), "requests launched"), ratio(shared.rate(), base.rate()))
		fmt.Fprintf(&b, "\nTuning 4's before, not the figure: the same drain with the dispatcher making a launch's writes in separate "+
			"calls (lock, launch claim; running lease, running record, message delete), as before the store combined them "+
			"(sqlite.Launches), launched %d in %s: %s, %s of the bare rate, against %s with them combined (%.1f and %.1f write "+
			"calls per launched request). A claim that holds already (ingest made it) is answered by a read on SQLite; the "+
			"calls above count it as a write.\n",
			separate.done, separate.elapsed.Round(time.Millisecond), perSec(separate.rate(), "requests launched"),
			ratio(separate.rate(), base.rate()), ratio(run.rate(), base.rate()), separate.writes, run.writes)
	}
	res.details = append(res.details, b.String())
	if run.top != "" {
		res.details = append(res.details, "CPU profile of the dispatcher run (dispatcher and reaper):", codeBlock(run.top))
	}
	return res, nil
}
