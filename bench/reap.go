package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/cache"

	"github.com/decap-ci/decap/internal/build"
	"github.com/decap-ci/decap/internal/entrypoint"
	"github.com/decap-ci/decap/internal/kube"
	"github.com/decap-ci/decap/internal/reap"
)

// removeTimes is the reaper's executor: it notes when the reaper removes a
// build's Pod, which it does only once the final record is written and the
// lock released, then removes it.
type removeTimes struct {
	reap.Executor
	mu sync.Mutex
	at map[build.ID]time.Time
}

func (r *removeTimes) Remove(ctx context.Context, id build.ID) error {
	now := time.Now()
	r.mu.Lock()
	if _, ok := r.at[id]; !ok {
		r.at[id] = now
	}
	r.mu.Unlock()
	return r.Executor.Remove(ctx, id)
}

func (r *removeTimes) get(id build.ID) (time.Time, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	t, ok := r.at[id]
	return t, ok
}

// benchReap measures the reaper's lag: a build Pod's status becomes
// Succeeded on client-go's fake clientset → kube.Executor.Watch → a real
// reap.Reaper on SQLite records and locks has written the final record and
// released the lock. Baseline: the same status updates seen by a plain
// informer on the same clientset.
func benchReap(ctx context.Context, e *env) (result, error) {
	s := e.scale
	st, err := openStack(ctx, e, "reaper", "embedded", e.dir("reap"))
	if err != nil {
		return result{}, err
	}
	defer st.close()

	client := fake.NewSimpleClientset()
	// Both watches (the executor's and the baseline's) must be there before
	// the first change, or it is lost: as the fake's own watch reactor,
	// then count the watch.
	var watches atomic.Int32
	client.PrependWatchReactor("pods", func(action k8stesting.Action) (bool, watch.Interface, error) {
		var opts metav1.ListOptions
		if a, ok := action.(k8stesting.WatchActionImpl); ok {
			opts = a.ListOptions
		}
		w, err := client.Tracker().Watch(action.GetResource(), action.GetNamespace(), opts)
		if err != nil {
			return false, nil, err
		}
		watches.Add(1)
		return true, w, nil
	})
	const ns = "decap"
	ex, err := kube.New(kube.Config{
		Client: client, Namespace: ns, EntrypointImage: "ghcr.io/decap-ci/decap-build:bench",
		ScriptsRepo: "https://github.com/Codertocat/build-scripts.git",
		Uploads: func(_ context.Context, id build.ID, _ time.Duration) (map[string]string, error) {
			return map[string]string{
				build.LogKey(id):       "https://bench.invalid/" + build.LogKey(id) + "?X-Amz-Signature=x",
				build.ArtifactsKey(id): "https://bench.invalid/" + build.ArtifactsKey(id) + "?X-Amz-Signature=x",
			}, nil
		},
		Blobs: st.set.Blobs, Logger: st.log.With("component", "executor"),
	})
	if err != nil {
		return result{}, err
	}

	// N running builds: a record, a held lock, a Pod created by Launch and
	// running.
	n := s.ReapN
	ids := make([]build.ID, n)
	now := time.Now().UTC()
	for i := range n {
		id := build.NewID(now)
		ids[i] = id
		req := build.Request{V: build.MessageVersion, BuildID: id, Team: benchTeam, Project: benchProject,
			Ref: fmt.Sprintf("reap-%d", i), RefType: build.Branch, Trigger: build.TriggerPush, RequestedAt: now}
		rec := build.RecordFor(req)
		if err := rec.Start(now, id.PodName(), ""); err != nil {
			return result{}, err
		}
		if err := st.set.Records.Save(ctx, rec); err != nil {
			return result{}, err
		}
		if err := st.set.Locks.Acquire(ctx, build.Lease{Key: req.LockKey(), BuildID: id, Owner: "bench", AcquiredAt: now, ExpiresAt: now.Add(time.Hour)}, 0); err != nil {
			return result{}, err
		}
		job := build.Job{Request: req, Descriptor: build.Descriptor{BuildImage: "debian:bookworm-slim"}, CatalogCommit: "dir:bench", Timeout: time.Hour}
		if err := ex.Launch(ctx, job); err != nil {
			return result{}, err
		}
		if err := setStatus(ctx, client, ns, id, func(st *corev1.PodStatus) {
			st.Phase = corev1.PodRunning
			st.StartTime = &metav1.Time{Time: now}
		}); err != nil {
			return result{}, err
		}
	}

	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	removed := &removeTimes{Executor: ex, at: map[build.ID]time.Time{}}
	reaper, err := st.reaper(removed)
	if err != nil {
		return result{}, err
	}
	done := make(chan error, 1)
	go func() { done <- reaper.Run(rctx) }()
	defer func() {
		cancel()
		<-done
	}()

	// The baseline: a plain informer on the same Pods.
	var seenMu sync.Mutex
	seen := map[string]time.Time{}
	factory := informers.NewSharedInformerFactoryWithOptions(client, 0, informers.WithNamespace(ns))
	inf := factory.Core().V1().Pods().Informer()
	if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{UpdateFunc: func(_, obj any) {
		p, ok := obj.(*corev1.Pod)
		if !ok || p.Status.Phase != corev1.PodSucceeded {
			return
		}
		t := time.Now()
		seenMu.Lock()
		if _, ok := seen[p.Name]; !ok {
			seen[p.Name] = t
		}
		seenMu.Unlock()
	}}); err != nil {
		return result{}, err
	}
	factory.Start(rctx.Done())
	defer func() {
		cancel() // Shutdown waits for the informer, which stops with rctx
		factory.Shutdown()
	}()
	deadline := time.Now().Add(30 * time.Second)
	for watches.Load() < 2 || !inf.HasSynced() {
		if time.Now().After(deadline) {
			return result{}, fmt.Errorf("the watches did not start within 30s (%d)", watches.Load())
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond) // the executor's workers, after its cache sync

	// End the Pods at the rate, as the kubelet would report them.
	ended := make([]time.Time, n)
	start := time.Now()
	for i, id := range ids {
		at := start.Add(time.Duration(float64(i) / s.ReapRate * float64(time.Second)))
		time.Sleep(time.Until(at))
		fin := time.Now().UTC()
		res, _ := json.Marshal(entrypoint.Result{Status: build.StatusSucceeded, ExitCode: new(int), StartedAt: now, FinishedAt: fin,
			LogKey: build.LogKey(id), ArtifactsKey: build.ArtifactsKey(id)})
		ended[i] = time.Now()
		if err := setStatus(ctx, client, ns, id, func(st *corev1.PodStatus) {
			st.Phase = corev1.PodSucceeded
			st.ContainerStatuses = []corev1.ContainerStatus{{Name: kube.ContainerBuild, State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
				ExitCode: 0, Reason: "Completed", Message: string(res),
				StartedAt: metav1.Time{Time: now}, FinishedAt: metav1.Time{Time: fin},
			}}}}
		}); err != nil {
			return result{}, err
		}
	}

	var lag, base latencies
	missing := 0
	wait := time.Now().Add(30 * time.Second)
	for i, id := range ids {
		for {
			t, ok := removed.get(id)
			if ok {
				lag = append(lag, t.Sub(ended[i]))
				break
			}
			if time.Now().After(wait) {
				missing++
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
		seenMu.Lock()
		if t, ok := seen[id.PodName()]; ok {
			base = append(base, t.Sub(ended[i]))
		}
		seenMu.Unlock()
	}
	// Check what the reaper wrote, for the first build.
	check := ""
	if rec, err := st.set.Records.Get(ctx, ids[0]); err != nil || rec.Status != build.StatusSucceeded {
		check = fmt.Sprintf(" The first build's record is %q (%v), not succeeded.", rec.Status, err)
	}
	leases, err := st.set.Locks.List(ctx)
	if err != nil {
		return result{}, err
	}

	lost := ""
	if missing > 0 {
		lost = fmt.Sprintf(" (%d not reaped within 30s)", missing)
	}
	res := result{rows: []row{{
		what:     fmt.Sprintf("reaper lag: Pod Succeeded → record written and lock released, %d Pods at %s/s, fake clientset + SQLite", n, trimFloat(s.ReapRate)),
		figure:   fmt.Sprintf("p50 %s, p99 %s%s", ms(lag.quantile(0.5)), ms(lag.quantile(0.99)), lost),
		baseline: fmt.Sprintf("p50 %s, p99 %s (a plain informer sees the update)", ms(base.quantile(0.5)), ms(base.quantile(0.99))),
		ratio:    ratio(float64(lag.quantile(0.99)), float64(base.quantile(0.99))) + " (p99)",
		command:  e.command("reap"),
	}}}
	var b strings.Builder
	fmt.Fprintf(&b, "The time runs from the UpdateStatus call that makes a build Pod Succeeded (with decap-entrypoint's result in the "+
		"build container's termination message) to the reaper's Remove of the Pod, which it calls only after the final record is "+
		"written and the lock released. kube.Executor.Watch (shared informer, work queue, %d workers) feeds reap.Reaper.Handle, "+
		"as in cmd/reaper. Max %s; %d of %d builds reaped; %d leases still held afterwards.%s\n", 4, ms(lag.max()), len(lag), n, len(leases), check)
	res.details = append(res.details, b.String())
	return res, nil
}

// setStatus changes the status of build id's Pod through UpdateStatus.
func setStatus(ctx context.Context, client *fake.Clientset, ns string, id build.ID, change func(*corev1.PodStatus)) error {
	pods := client.CoreV1().Pods(ns)
	p, err := pods.Get(ctx, id.PodName(), metav1.GetOptions{})
	if err != nil {
		return err
	}
	change(&p.Status)
	_, err = pods.UpdateStatus(ctx, p, metav1.UpdateOptions{})
	return err
}
