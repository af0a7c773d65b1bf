package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/flowcontrol"

	"github.com/decap-ci/decap/internal/build"
	"github.com/decap-ci/decap/internal/config"
	"github.com/decap-ci/decap/internal/kube"
	"github.com/decap-ci/decap/internal/kubetest"
	"github.com/decap-ci/decap/internal/services"
)

// benchLaunchKubeAPI: the embedded default launching through the
// kubernetes executor on a real API server (internal/kubetest: etcd,
// kube-apiserver, kube-scheduler, and kwok's fake node, which runs each
// Pod). The executor's client is the dispatcher's: DECAP_KUBE_QPS and
// DECAP_KUBE_BURST at their defaults, acting as the decap-dispatcher
// ServiceAccount under the RBAC of manifests/, which are applied first.
// Besides push → Pod created (Launch returned), a watch times push → Pod
// bound to the node (the scheduler) and push → Pod Running (kwok). The
// time of the create is split into the wait for the client's rate limiter
// and the POST's round trip.
func benchLaunchKubeAPI(ctx context.Context, e *env) (result, error) {
	cp, err := startControlPlane(ctx, e)
	if cp != nil {
		defer cp.Stop()
	}
	if err != nil {
		return result{}, err
	}
	cfg, err := config.Load(func(string) string { return "" })
	if err != nil {
		return result{}, err
	}
	k := &kubeAPIRun{qps: cfg.Kube.QPS, burst: cfg.Kube.Burst, waits: &stamps{}, trips: &stamps{}, pods: newPodTimes()}
	ex, err := k.executor(cp, cfg.Kube.Namespace)
	if err != nil {
		return result{}, err
	}
	wctx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	if err := k.pods.watch(wctx, cp.Client, cfg.Kube.Namespace); err != nil {
		return result{}, err
	}
	k.lt = newLaunchTimes(beginTimes{ex, k.pods})

	// The control plane idle first, for what it costs without Pods.
	idle := startCost(ctx, cp, k.trips)
	select {
	case <-time.After(min(3*time.Second, e.scale.LightFor)):
	case <-ctx.Done():
		return result{}, ctx.Err()
	}
	k.idleCost = idle()
	// Each load's cost, and the API server's CPU profile over the heavy one.
	var apiProfile func() string
	probe := func(l load) func() string {
		cost := startCost(ctx, cp, k.trips) // its scrape before the profile starts
		if l.name == "heavy" {
			apiProfile = startAPIProfile(ctx, e, cp, l.d)
		}
		return cost
	}
	loads := []load{
		{name: "light", rate: e.scale.LightRate, d: e.scale.LightFor, target: true},
		{name: "heavy", rate: e.scale.KubeAPIRate, d: e.scale.HeavyFor, target: true},
	}
	runs, dec, err := pushToLaunch(ctx, e, "launch-kubeapi", "embedded", k.lt, loads, probe)
	if err != nil {
		return result{}, err
	}
	if apiProfile != nil {
		k.apiProfile = apiProfile()
	}
	var ids []build.ID
	for _, r := range runs {
		for _, b := range r.builds {
			ids = append(ids, b.id)
		}
	}
	k.notRunning = k.pods.waitRunning(ctx, ids, launchGrace)
	return k.result(e, runs, dec), nil
}

// kubeAPIRun is what launch-kubeapi measures besides the launch rows.
type kubeAPIRun struct {
	qps          float32
	burst        int
	waits, trips *stamps // the client's rate-limiter waits, its Pod POSTs' round trips
	pods         *podTimes
	lt           *launchTimes
	idleCost     string // startCost's cells over the idle control plane
	apiProfile   string // apiParts and the flat top of the API server's profile
	notRunning   int
}

// executor returns a kube.Executor whose client is the dispatcher's
// (kube.RESTConfig with its QPS and Burst), acting as the decap-dispatcher
// ServiceAccount, its rate limiter's waits and its round trips timed.
func (k *kubeAPIRun) executor(cp *kubetest.ControlPlane, namespace string) (*kube.Executor, error) {
	kubeconfig, err := cp.ServiceAccountConfig("decap-system", "decap-dispatcher")
	if err != nil {
		return nil, err
	}
	rc, err := kube.RESTConfig(kubeconfig, k.qps, k.burst)
	if err != nil {
		return nil, err
	}
	// What client-go makes of QPS and Burst when no RateLimiter is set,
	// timed.
	rc.RateLimiter = timedLimiter{flowcontrol.NewTokenBucketRateLimiter(k.qps, k.burst), k.waits}
	rc.Wrap(func(rt http.RoundTripper) http.RoundTripper { return timedTrips{rt, k.trips} })
	client, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, err
	}
	return kube.New(kube.Config{
		Client: client, Namespace: namespace, EntrypointImage: "ghcr.io/decap-ci/decap-build:bench",
		ScriptsRepo: "https://github.com/Codertocat/build-scripts.git", Uploads: benchUploads,
	})
}

// result makes the launch rows, a push → Pod Running row per load, and
// the details: where each load's time went and what it cost.
func (k *kubeAPIRun) result(e *env, runs []launchRun, dec *decisions) result {
	who := fmt.Sprintf("embedded (SQLite) + kubernetes executor on kube-apiserver %s (kubetest, kwok node), client QPS %s / Burst %d",
		kubetest.Version, trimFloat(float64(k.qps)), k.burst)
	res := launchRows(e, "launch-kubeapi", who, "kube.Executor.Launch (PodFor, presign, Pod create) returned", runs, dec)
	for _, r := range runs {
		s := k.pods.split(r, k.lt)
		res.rows = append(res.rows, row{
			what:     fmt.Sprintf("push → Pod Running (kwok), %s load %s/s for %s (%d webhooks), real kube-apiserver", r.name, trimFloat(r.rate), r.d, r.n),
			figure:   fmt.Sprintf("p50 %s, p99 %s%s", ms(s.toRunning.quantile(0.5)), ms(s.toRunning.quantile(0.99)), notRunningNote(len(r.builds)-len(s.toRunning))),
			baseline: fmt.Sprintf("p50 %s, p99 %s (webhook answered)", ms(r.answered.quantile(0.5)), ms(r.answered.quantile(0.99))),
			ratio:    ratio(float64(s.toRunning.quantile(0.99)), float64(r.answered.quantile(0.99))) + " (p99)",
			holds:    noTarget, command: e.command("launch-kubeapi"),
		})
	}
	res.details = append(res.details, k.splitTable(runs), k.costTable(runs))
	if k.apiProfile != "" {
		res.details = append(res.details, "kube-apiserver's CPU profile over the heavy load (its /debug/pprof/profile): the shares of its parts "+
			"(cumulative; the storage work of a request runs in a goroutine of its own, outside the request filters), "+
			"then the functions the time is spent in:\n\n"+codeBlock(k.apiProfile))
	}
	if k.notRunning > 0 {
		res.details = append(res.details, fmt.Sprintf("%d Pods were not seen Running within %s of the last launch.", k.notRunning, launchGrace))
	}
	return res
}

// splitTable says where the time of each load's builds went.
func (k *kubeAPIRun) splitTable(runs []launchRun) string {
	var b strings.Builder
	fmt.Fprintf(&b, "The client is the dispatcher's: `kube.RESTConfig` with DECAP_KUBE_QPS=%s and DECAP_KUBE_BURST=%d (the defaults, as manifests/configmap.yaml sets them), ",
		trimFloat(float64(k.qps)), k.burst)
	b.WriteString("as the decap-dispatcher ServiceAccount under manifests/' RBAC; the presigned upload URLs are made up, as in launch-kube (the embedded default has no S3). ")
	b.WriteString("Split of each build's path, from the webhook's scheduled send: to the executor's Launch call (ingest, queue, dispatcher), ")
	b.WriteString("Launch itself (its wait for the client's rate limiter and the POST's round trip to the API server are the next two columns, over all the load's requests), ")
	b.WriteString("then, from a watch on the namespace, the Pod created → bound to the node (kube-scheduler) → Running (kwok). ")
	b.WriteString("The last two columns split the slowest 5% of push → Pod created (their means).\n\n")
	b.WriteString("| load | to Launch p50 | p99 | Launch p50 | p99 | limiter wait p99 | max | POST p50 | p99 | created → bound p50 | p99 | bound → Running p50 | p99 | slowest 5%: to Launch | Launch |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, r := range runs {
		s := k.pods.split(r, k.lt)
		w, t := k.waits.within(r.from, r.to), k.trips.within(r.from, r.to)
		slowTo, slowLaunch := s.slowest(0.05)
		fmt.Fprintf(&b, "| %s, %s/s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", r.name, trimFloat(r.rate),
			ms(s.toLaunch.quantile(0.5)), ms(s.toLaunch.quantile(0.99)), ms(s.launch.quantile(0.5)), ms(s.launch.quantile(0.99)),
			ms(w.quantile(0.99)), ms(w.max()), ms(t.quantile(0.5)), ms(t.quantile(0.99)),
			ms(s.bound.quantile(0.5)), ms(s.bound.quantile(0.99)), ms(s.running.quantile(0.5)), ms(s.running.quantile(0.99)),
			ms(slowTo), ms(slowLaunch))
	}
	return b.String()
}

// costTable says what each load cost the machine and the control plane.
func (k *kubeAPIRun) costTable(runs []launchRun) string {
	var b strings.Builder
	b.WriteString("What each load cost: the machine's busy cores (of all its processes), each process's cores, and its CPU and its threads' wait for a CPU (run queue, /proc schedstat) per Pod created over the load ")
	b.WriteString("(a Pod's whole life there: create, binding, kwok's two status updates, the watches); the bench process holds ingest, the dispatcher, ")
	b.WriteString("the executor's client and the load generator. Then the Pod creates' mean time at the client and in the API server and its etcd write, ")
	b.WriteString("from the API server's metrics (how many POSTs it counted).\n\n")
	b.WriteString("| load | " + strings.Join(costColumns, " | ") + " |\n|---|" + strings.Repeat("---|", len(costColumns)) + "\n")
	fmt.Fprintf(&b, "| idle control plane | %s |\n", k.idleCost)
	for _, r := range runs {
		fmt.Fprintf(&b, "| %s, %s/s | %s |\n", r.name, trimFloat(r.rate), r.probed)
	}
	return b.String()
}

func notRunningNote(n int) string {
	if n == 0 {
		return ""
	}
	return fmt.Sprintf(" (%d not seen Running within %s)", n, launchGrace)
}

// benchUploads stands in for S3's presigning, which the embedded default
// does not have.
func benchUploads(_ context.Context, id build.ID, _ time.Duration) (map[string]string, error) {
	return map[string]string{
		build.LogKey(id):       "https://bench.invalid/" + build.LogKey(id) + "?X-Amz-Signature=x",
		build.ArtifactsKey(id): "https://bench.invalid/" + build.ArtifactsKey(id) + "?X-Amz-Signature=x",
	}, nil
}

// startControlPlane starts kubetest's control plane and applies
// manifests/ to it, as an operator would. The caller stops a returned
// control plane, also after an error.
func startControlPlane(ctx context.Context, e *env) (*kubetest.ControlPlane, error) {
	start := time.Now()
	cp, err := kubetest.Run(e.dir("kube-controlplane"))
	if err != nil {
		if cp != nil {
			err = fmt.Errorf("%w\n%s", err, cp.LogTails())
		}
		return cp, fmt.Errorf("start the control plane: %w", err)
	}
	rendered, err := exec.CommandContext(ctx, "kubectl", "kustomize", filepath.Join(e.root, "manifests")).Output()
	if err != nil {
		return cp, fmt.Errorf("kubectl kustomize manifests/: %w", err)
	}
	if out, err := cp.Kubectl(rendered, "apply", "-f", "-"); err != nil {
		return cp, fmt.Errorf("kubectl apply the manifests: %w\n%s", err, out)
	}
	e.logf("control plane %s up with manifests/ applied in %s", kubetest.Version, time.Since(start).Round(100*time.Millisecond))
	return cp, nil
}

var costColumns = []string{
	"machine busy", "kube-apiserver", "etcd", "kube-scheduler", "kwok", "bench process",
	"Pod POST mean: client round trip", "in the API server", "its etcd create",
}

// startCost notes the CPU the control plane's processes, this one and the
// machine have used, and the Pod creates so far by the client's count
// (trips) and the API server's; the function it returns gives what the
// time since cost, as the cells of costColumns: cores busy, and CPU per
// Pod created.
func startCost(ctx context.Context, cp *kubetest.ControlPlane, trips *stamps) func() string {
	pids := cp.Pids()
	procs := []string{"kube-apiserver", "etcd", "kube-scheduler", "kwok"}
	cpu := func() []schedTimes {
		var out []schedTimes
		for _, p := range procs {
			out = append(out, procSched(pids[p]))
		}
		return append(out, procSched(os.Getpid()))
	}
	// The scrapes outside the CPU's interval: the API server serves 2 MB.
	m0 := scrapeCreates(ctx, cp)
	cpu0, wall0 := cpu(), time.Now()
	busy0, total0 := machineTicks()
	return func() string {
		cpu1, wall1 := cpu(), time.Now()
		busy1, total1 := machineTicks()
		m1 := scrapeCreates(ctx, cp)
		wall := wall1.Sub(wall0)
		n := m1.posts - m0.posts
		cells := []string{"?"}
		if total1 > total0 {
			cells[0] = fmt.Sprintf("%.2f cores", float64(busy1-busy0)/float64(total1-total0)*float64(runtime.NumCPU()))
		}
		for i := range cpu1 {
			c := fmt.Sprintf("%.2f cores", float64(cpu1[i].cpu-cpu0[i].cpu)/float64(wall))
			if n > 0 {
				c += fmt.Sprintf(", CPU %s/Pod, run queue %s/Pod", ms((cpu1[i].cpu-cpu0[i].cpu)/time.Duration(n)), ms((cpu1[i].wait-cpu0[i].wait)/time.Duration(n)))
			}
			cells = append(cells, c)
		}
		mean := func(sum, count float64) string {
			if count <= 0 {
				return "—"
			}
			return ms(time.Duration(sum / count * float64(time.Second)))
		}
		var client time.Duration
		t := trips.within(wall0, wall1)
		for _, d := range t {
			client += d
		}
		return strings.Join(append(cells, mean(client.Seconds(), float64(len(t))),
			fmt.Sprintf("%s (%d)", mean(m1.postSum-m0.postSum, n), int(n)),
			mean(m1.etcdSum-m0.etcdSum, m1.etcdCount-m0.etcdCount)), " | ")
	}
}

// startAPIProfile asks the API server for a CPU profile of d; the
// function it returns waits for it and gives its top entries.
func startAPIProfile(ctx context.Context, e *env, cp *kubetest.ControlPlane, d time.Duration) func() string {
	done := make(chan string, 1)
	go func() {
		body, err := cp.Client.CoreV1().RESTClient().Get().AbsPath("/debug/pprof/profile").
			Param("seconds", strconv.Itoa(max(int(d.Seconds()), 1))).Timeout(d + time.Minute).DoRaw(ctx)
		if err != nil {
			done <- fmt.Sprintf("(no profile: %v)", err)
			return
		}
		path := filepath.Join(e.tmp, "kube-apiserver.cpu.pprof")
		if err := os.WriteFile(path, body, 0o600); err != nil {
			done <- fmt.Sprintf("(no profile: %v)", err)
			return
		}
		done <- apiParts(path) + "\n\n" + pprofTopBy(path, 15, "-flat")
	}()
	return func() string { return <-done }
}

// apiParts returns the shares of a CPU profile of the API server that
// parts of its work took: each part is a function of its code (a regexp
// matching the whole name), its cumulative share what the part cost.
func apiParts(path string) string {
	parts := []struct{ what, fn string }{
		{"storage work of all requests (finishRequest)", `k8s\.io/apiserver/pkg/endpoints/handlers/finisher\.finishRequest\.func1`},
		{"  Pod status updates (kwok's: StatusREST.Update)", `k8s\.io/kubernetes/pkg/registry/core/pod/storage\.\(\*StatusREST\)\.Update`},
		{"  creates (the Pods, their bindings: Store.Create)", `k8s\.io/apiserver/pkg/registry/generic/registry\.\(\*Store\)\.Create`},
		{"request filters, all requests (authentication and below)", `k8s\.io/apiserver/pkg/endpoints/filters\.withAuthentication\.func1`},
		{"watches served (WatchServer.HandleHTTP)", `k8s\.io/apiserver/pkg/endpoints/handlers\.\(\*WatchServer\)\.HandleHTTP`},
		{"garbage collection (gcBgMarkWorker)", `runtime\.gcBgMarkWorker`},
	}
	out, err := exec.Command("go", "tool", "pprof", "-top", "-cum", "-nodecount=100000", path).CombinedOutput()
	if err != nil {
		return fmt.Sprintf("(go tool pprof failed: %v)", err)
	}
	var b strings.Builder
	for _, p := range parts {
		re := regexp.MustCompile(`^` + p.fn + `$`)
		share := "0%"
		for line := range strings.Lines(string(out)) {
			f := strings.Fields(line)
			if len(f) == 6 && re.MatchString(f[5]) {
				share = f[4] + " (" + f[3] + ")"
				break
			}
		}
		fmt.Fprintf(&b, "%-58s %s\n", p.what, share)
	}
	return strings.TrimRight(b.String(), "\n")
}

// schedTimes is the time a process's threads have run on a CPU and waited
// for one (on a run queue) so far, from /proc/<pid>/task/*/schedstat:
// threads that have ended are not counted.
type schedTimes struct{ cpu, wait time.Duration }

func procSched(pid int) schedTimes {
	var t schedTimes
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/schedstat", pid))
	for _, task := range tasks {
		b, err := os.ReadFile(task)
		if err != nil {
			continue
		}
		f := strings.Fields(string(b))
		if len(f) < 2 {
			continue
		}
		run, _ := strconv.ParseInt(f[0], 10, 64)
		wait, _ := strconv.ParseInt(f[1], 10, 64)
		t.cpu += time.Duration(run)
		t.wait += time.Duration(wait)
	}
	return t
}

// creates is what the API server's metrics say of Pod creates so far.
type creates struct {
	posts, postSum     float64 // apiserver_request_duration_seconds, POST pods
	etcdCount, etcdSum float64 // etcd_request_duration_seconds, create pods
}

// scrapeCreates reads the API server's /metrics as the admin; zeros when
// it cannot.
func scrapeCreates(ctx context.Context, cp *kubetest.ControlPlane) creates {
	var c creates
	body, err := cp.Client.CoreV1().RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
	if err != nil {
		return c
	}
	for line := range strings.Lines(string(body)) {
		name, rest, ok := strings.Cut(line, "{")
		if !ok {
			continue
		}
		labels, value, _ := strings.Cut(rest, "} ")
		v, err := strconv.ParseFloat(strings.TrimSpace(value), 64)
		if err != nil {
			continue
		}
		has := func(l ...string) bool {
			for _, x := range l {
				if !strings.Contains(labels, x) {
					return false
				}
			}
			return true
		}
		switch {
		case name == "apiserver_request_duration_seconds_sum" && has(`resource="pods"`, `subresource=""`, `verb="POST"`):
			c.postSum += v
		case name == "apiserver_request_duration_seconds_count" && has(`resource="pods"`, `subresource=""`, `verb="POST"`):
			c.posts += v
		case name == "etcd_request_duration_seconds_sum" && has(`operation="create"`, `resource="pods"`):
			c.etcdSum += v
		case name == "etcd_request_duration_seconds_count" && has(`operation="create"`, `resource="pods"`):
			c.etcdCount += v
		}
	}
	return c
}

// stamps collects durations with the time each ended.
type stamps struct {
	mu sync.Mutex
	at []time.Time
	d  latencies
}

func (s *stamps) add(start time.Time) {
	now := time.Now()
	s.mu.Lock()
	s.at = append(s.at, now)
	s.d = append(s.d, now.Sub(start))
	s.mu.Unlock()
}

// within returns the durations that ended between from and to.
func (s *stamps) within(from, to time.Time) latencies {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out latencies
	for i, at := range s.at {
		if !at.Before(from) && !at.After(to) {
			out = append(out, s.d[i])
		}
	}
	return out
}

// timedLimiter notes how long each request waited for the client's rate
// limiter.
type timedLimiter struct {
	flowcontrol.RateLimiter
	waits *stamps
}

func (l timedLimiter) Wait(ctx context.Context) error {
	start := time.Now()
	err := l.RateLimiter.Wait(ctx)
	l.waits.add(start)
	return err
}

// timedTrips notes the round trip of each Pod create.
type timedTrips struct {
	next  http.RoundTripper
	trips *stamps
}

func (t timedTrips) RoundTrip(req *http.Request) (*http.Response, error) {
	start := time.Now()
	resp, err := t.next.RoundTrip(req)
	if req.Method == http.MethodPost && strings.HasSuffix(req.URL.Path, "/pods") {
		t.trips.add(start)
	}
	return resp, err
}

// beginTimes notes when the executor's Launch was called for each build.
type beginTimes struct {
	next services.Launcher
	pods *podTimes
}

func (b beginTimes) Launch(ctx context.Context, job build.Job) error {
	b.pods.begin(job.Request.BuildID)
	return b.next.Launch(ctx, job)
}

func (b beginTimes) Cancel(ctx context.Context, id build.ID) error { return b.next.Cancel(ctx, id) }

// podTimes is when each build's Launch began, and when a watch first saw
// its Pod bound to a node and Running (or past it).
type podTimes struct {
	mu             sync.Mutex
	begun          map[build.ID]time.Time
	bound, running map[string]time.Time // by Pod name
	changed        chan struct{}        // closed and replaced on every change
}

func newPodTimes() *podTimes {
	return &podTimes{begun: map[build.ID]time.Time{}, bound: map[string]time.Time{}, running: map[string]time.Time{}, changed: make(chan struct{})}
}

func (p *podTimes) begin(id build.ID) {
	now := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.begun[id]; !ok {
		p.begun[id] = now
	}
}

// watch starts an informer on the build Pods of namespace; it returns
// once it has synced.
func (p *podTimes) watch(ctx context.Context, client kubernetes.Interface, namespace string) error {
	f := informers.NewSharedInformerFactoryWithOptions(client, 0, informers.WithNamespace(namespace))
	inf := f.Core().V1().Pods().Informer()
	if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    p.saw,
		UpdateFunc: func(_, obj any) { p.saw(obj) },
	}); err != nil {
		return err
	}
	f.Start(ctx.Done())
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if !cache.WaitForCacheSync(sctx.Done(), inf.HasSynced) {
		return fmt.Errorf("the watch on namespace %s did not sync", namespace)
	}
	return nil
}

func (p *podTimes) saw(obj any) {
	pod, ok := obj.(*corev1.Pod)
	if !ok || pod.Labels[kube.LabelType] != kube.TypeBuild {
		return
	}
	now := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	changed := false
	if _, ok := p.bound[pod.Name]; !ok && pod.Spec.NodeName != "" {
		p.bound[pod.Name], changed = now, true
	}
	switch pod.Status.Phase {
	case corev1.PodRunning, corev1.PodSucceeded, corev1.PodFailed:
		if _, ok := p.running[pod.Name]; !ok {
			p.running[pod.Name], changed = now, true
		}
	}
	if changed {
		close(p.changed)
		p.changed = make(chan struct{})
	}
}

// waitRunning waits up to grace for the Pods of ids to be seen Running,
// and returns how many were not.
func (p *podTimes) waitRunning(ctx context.Context, ids []build.ID, grace time.Duration) int {
	deadline := time.After(grace)
	for {
		p.mu.Lock()
		missing := 0
		for _, id := range ids {
			if _, ok := p.running[id.PodName()]; !ok {
				missing++
			}
		}
		changed := p.changed
		p.mu.Unlock()
		if missing == 0 {
			return 0
		}
		select {
		case <-changed:
		case <-deadline:
			return missing
		case <-ctx.Done():
			return missing
		}
	}
}

// podSplit is where the time of one load's builds went.
type podSplit struct {
	toLaunch, launch latencies // sent → Launch called → Launch returned
	bound, running   latencies // Launch returned → bound → Running
	toRunning        latencies // sent → Running
}

// slowest returns the mean time to Launch and in Launch of the slowest
// frac of the builds, by the sum of the two.
func (s podSplit) slowest(frac float64) (toLaunch, launch time.Duration) {
	idx := make([]int, len(s.toLaunch))
	for i := range idx {
		idx[i] = i
	}
	sort.Slice(idx, func(a, b int) bool {
		return s.toLaunch[idx[a]]+s.launch[idx[a]] > s.toLaunch[idx[b]]+s.launch[idx[b]]
	})
	n := min(max(int(frac*float64(len(idx))+0.5), 1), len(idx))
	if n == 0 {
		return 0, 0
	}
	for _, i := range idx[:n] {
		toLaunch += s.toLaunch[i]
		launch += s.launch[i]
	}
	return toLaunch / time.Duration(n), launch / time.Duration(n)
}

func (p *podTimes) split(r launchRun, lt *launchTimes) podSplit {
	p.mu.Lock()
	defer p.mu.Unlock()
	var s podSplit
	for _, b := range r.builds {
		begun, ok := p.begun[b.id]
		created, ok2 := lt.get(b.id)
		if !ok || !ok2 {
			continue
		}
		s.toLaunch = append(s.toLaunch, begun.Sub(b.sent))
		s.launch = append(s.launch, created.Sub(begun))
		name := b.id.PodName()
		bound, ok := p.bound[name]
		if ok {
			s.bound = append(s.bound, bound.Sub(created))
		}
		if running, ok3 := p.running[name]; ok3 {
			s.toRunning = append(s.toRunning, running.Sub(b.sent))
			if ok {
				s.running = append(s.running, running.Sub(bound))
			}
		}
	}
	return s
}
