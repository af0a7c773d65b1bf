package kube

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"

	"github.com/decap-ci/decap/internal/build"
	"github.com/decap-ci/decap/internal/entrypoint"
)

// Reasons of the outcomes Watch makes of build Pods.
const (
	ReasonDeleted        = "build pod was deleted before it ended"
	ReasonNoResult       = "build container ended without reporting a result"
	maxReasonLen         = 1024
	maxStoredPodLog      = 4 << 20
	maxStoredPodLogLines = 20000
	watchWorkers         = 4
	handleRetryCeiling   = time.Minute
)

// Waiting reasons of a container that will not start by itself: what
// they mean, and whether they never pass in a build Pod (a malformed image
// name; a container that cannot be configured — build Pods refer to no
// ConfigMap or Secret that could appear later, and a sidecar image that
// runs as root under runAsNonRoot is the usual cause).
var stuckWaiting = map[string]struct {
	what      string
	permanent bool
	infra     build.InfraCause // when it ends the build after PendingTimeout
}{
	"ErrImagePull":               {"its image cannot be pulled", false, build.InfraImagePull},
	"ImagePullBackOff":           {"its image cannot be pulled", false, build.InfraImagePull},
	"InvalidImageName":           {"its image name is invalid", true, ""},
	"CreateContainerConfigError": {"its container cannot be configured", true, ""},
	"CreateContainerError":       {"its container cannot be created", false, ""},
}

// Watch calls handle with the Outcome of every build whose Pod has ended,
// until ctx is done; then it returns nil. It follows build Pods (label
// type=decap-build in the namespace) on a shared informer feeding a work
// queue, so the first list reconciles every build Pod that exists at
// start, ended while nobody watched or not.
//
// A build has ended when its Pod is Succeeded or Failed (the build
// container's result, DeadlineExceeded, an eviction, a failed checkout),
// when it cannot start at all (an invalid image name, a container that
// cannot be configured), when it has waited in Pending past PendingTimeout
// for an image it cannot pull or a node it cannot get, or when it was
// deleted before it ended.
//
// handle must be idempotent and should end with Remove: the Pod is removed
// only after handle recorded its end. An error from handle is logged and
// the Pod tried again with backoff.
func (e *Executor) Watch(ctx context.Context, handle func(context.Context, build.Outcome) error) error {
	factory := informers.NewSharedInformerFactoryWithOptions(e.client, 0,
		informers.WithNamespace(e.cfg.Namespace),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = LabelType + "=" + TypeBuild }))
	pods := factory.Core().V1().Pods()
	informer, lister := pods.Informer(), pods.Lister()

	queue := workqueue.NewTypedRateLimitingQueueWithConfig(
		workqueue.NewTypedItemExponentialFailureRateLimiter[string](500*time.Millisecond, handleRetryCeiling),
		workqueue.TypedRateLimitingQueueConfig[string]{Name: "decap-build-pods"})
	defer queue.ShutDown()

	w := &watcher{e: e, handle: handle, queue: queue, gone: map[string]*corev1.Pod{}, done: map[string]bool{}}
	enqueue := func(obj any) {
		p, ok := obj.(*corev1.Pod)
		if !ok || p.Labels[LabelType] != TypeBuild { // the fake clientset ignores selectors on Watch
			return
		}
		queue.Add(p.Name)
	}
	_, err := informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    enqueue,
		UpdateFunc: func(_, obj any) { enqueue(obj) },
		DeleteFunc: func(obj any) {
			if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = t.Obj
			}
			p, ok := obj.(*corev1.Pod)
			if !ok || p.Labels[LabelType] != TypeBuild {
				return
			}
			w.mu.Lock()
			w.gone[p.Name] = p
			w.mu.Unlock()
			queue.Add(p.Name)
		},
	})
	if err != nil {
		return fmt.Errorf("watch build pods: %w", err)
	}
	factory.Start(ctx.Done())
	defer factory.Shutdown()
	if !cache.WaitForCacheSync(ctx.Done(), informer.HasSynced) {
		return nil // ctx ended first
	}
	e.log.Info("watching build pods", "namespace", e.cfg.Namespace, "pods", len(informer.GetStore().ListKeys()))
	w.lister = func(name string) (*corev1.Pod, error) { return lister.Pods(e.cfg.Namespace).Get(name) }

	var wg sync.WaitGroup
	for range watchWorkers {
		wg.Go(func() {
			for w.next(ctx) {
			}
		})
	}
	<-ctx.Done()
	queue.ShutDown()
	wg.Wait()
	return nil
}

type watcher struct {
	e      *Executor
	handle func(context.Context, build.Outcome) error
	queue  workqueue.TypedRateLimitingInterface[string]
	lister func(name string) (*corev1.Pod, error)

	mu sync.Mutex
	// gone holds the last state of deleted Pods until they are handled.
	gone map[string]*corev1.Pod
	// done names Pods whose outcome was handled, so that the deletion
	// that follows (Remove) is not taken for a second end.
	done map[string]bool
}

// next handles one queued Pod; false once the queue shut down.
func (w *watcher) next(ctx context.Context) bool {
	name, quit := w.queue.Get()
	if quit {
		return false
	}
	defer w.queue.Done(name)
	retry, err := w.process(ctx, name)
	switch {
	case err != nil:
		if ctx.Err() == nil {
			w.e.log.Error("handle build pod", "pod", name, "err", err)
		}
		w.queue.AddRateLimited(name)
	case retry > 0:
		w.queue.Forget(name)
		w.queue.AddAfter(name, retry)
	default:
		w.queue.Forget(name)
	}
	return true
}

// process decides whether the Pod's build ended and, if so, hands its
// outcome over. retry > 0 asks to look again then (a Pending Pod whose
// timeout has not come yet).
func (w *watcher) process(ctx context.Context, name string) (retry time.Duration, err error) {
	pod, err := w.lister(name)
	deleted := apierrors.IsNotFound(err)
	if err != nil && !deleted {
		return 0, err
	}
	w.mu.Lock()
	handled := w.done[name]
	if deleted {
		pod = w.gone[name]
		delete(w.done, name) // its deletion ends what the watcher keeps of it
		if handled {
			delete(w.gone, name)
		}
	}
	w.mu.Unlock()
	if pod == nil || handled {
		return 0, nil // unknown, or ended and handled (its deletion is on its way)
	}
	o, ended, retry := w.e.outcome(pod, deleted)
	if !ended {
		return retry, nil
	}
	log := w.e.log.With("build_id", string(o.BuildID), "lock_key", o.LockKey(), "pod", name)
	if o.LogKey == "" && w.e.cfg.Blobs != nil && !deleted {
		if key, err := w.e.storePodLog(ctx, pod, o); err != nil {
			log.Warn("store the pod's log of a build that uploaded none", "err", err)
		} else if key != "" {
			o.LogKey = key
		}
	}
	if err := w.handle(ctx, o); err != nil {
		return 0, fmt.Errorf("build %s (%s): %w", o.BuildID, o.Status, err)
	}
	w.mu.Lock()
	if deleted {
		delete(w.gone, name)
	} else {
		w.done[name] = true
	}
	w.mu.Unlock()
	return 0, nil
}

// outcome decides how the build of pod ended, if it has. For a Pod that is
// Pending and not yet past its timeout, retry says when to look again.
func (e *Executor) outcome(pod *corev1.Pod, deleted bool) (o build.Outcome, ended bool, retry time.Duration) {
	id, err := podBuildID(pod)
	if err != nil {
		return o, false, 0
	}
	o = build.Outcome{
		BuildID: id, PodName: pod.Name,
		Team: pod.Annotations[AnnotationTeam], Project: pod.Annotations[AnnotationProject], Ref: pod.Annotations[AnnotationRef],
	}
	if pod.Status.StartTime != nil {
		o.StartedAt = pod.Status.StartTime.Time
	}
	switch pod.Status.Phase {
	case corev1.PodSucceeded, corev1.PodFailed:
		terminalOutcome(pod, &o)
		if o.FinishedAt.IsZero() {
			o.FinishedAt = e.now()
		}
		return o, true, 0
	}
	if deleted {
		o.Status, o.Reason, o.FinishedAt = build.StatusErrored, ReasonDeleted, e.now()
		if o.Infra = disruption(pod); o.Infra == "" {
			o.Infra = build.InfraDeleted
		}
		return o, true, 0
	}
	if pod.DeletionTimestamp != nil {
		return o, false, 0 // being stopped (a cancel): its end comes next
	}
	if pod.Status.Phase != corev1.PodPending && pod.Status.Phase != "" {
		return o, false, 0
	}
	age := e.now().Sub(pod.CreationTimestamp.Time)
	if why, permanent, _ := stuck(pod); permanent {
		// Nothing will change: end it now rather than after the timeout.
		o.Status, o.FinishedAt = build.StatusErrored, e.now()
		o.Reason = clip("build pod cannot start: " + why)
		return o, true, 0
	}
	if age < e.cfg.PendingTimeout {
		return o, false, e.cfg.PendingTimeout - age + time.Second
	}
	if why, _, cause := stuck(pod); why != "" {
		o.Status, o.FinishedAt, o.Infra = build.StatusErrored, e.now(), cause
		o.Reason = clip(fmt.Sprintf("build pod pending for %s: %s", age.Round(time.Second), why))
		return o, true, 0
	}
	// Pending for a reason that passes by itself (pulling a large image):
	// look again in a while.
	return o, false, e.cfg.PendingTimeout
}

// stuck says why a Pending Pod will not start by itself, or "", whether
// waiting longer cannot help, and the infrastructure failure it is when it
// ends the build after PendingTimeout (an image that cannot be pulled; not
// a Pod no node can run, which an identical Pod would meet again).
func stuck(pod *corev1.Pod) (why string, permanent bool, infra build.InfraCause) {
	statuses := append(append([]corev1.ContainerStatus(nil), pod.Status.InitContainerStatuses...), pod.Status.ContainerStatuses...)
	for _, s := range statuses {
		if s.State.Waiting == nil {
			continue
		}
		if r, ok := stuckWaiting[s.State.Waiting.Reason]; ok {
			return fmt.Sprintf("container %s: %s (%s: %s)", s.Name, r.what, s.State.Waiting.Reason, s.State.Waiting.Message), r.permanent, r.infra
		}
	}
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse && c.Reason == corev1.PodReasonUnschedulable {
			return "no node can run it (Unschedulable: " + c.Message + ")", false, ""
		}
	}
	return "", false, ""
}

// terminalOutcome fills o from a Succeeded or Failed Pod.
func terminalOutcome(pod *corev1.Pod, o *build.Outcome) {
	var reported *entrypoint.Result // the entrypoint's result, if it gave one
	defer func() { o.Infra = terminalInfra(pod, *o, buildStateOf(pod), reported) }()
	buildState := containerTerminated(pod.Status.ContainerStatuses, ContainerBuild)
	if buildState != nil {
		o.FinishedAt = buildState.FinishedAt.Time
		if !buildState.StartedAt.IsZero() && o.StartedAt.IsZero() {
			o.StartedAt = buildState.StartedAt.Time
		}
		code := int(buildState.ExitCode)
		o.ExitCode = &code
		var res entrypoint.Result
		if err := json.Unmarshal([]byte(strings.TrimSpace(buildState.Message)), &res); err == nil && res.Status.Final() {
			reported = &res
			o.Status, o.Reason, o.ExitCode = res.Status, res.Reason, res.ExitCode
			o.LogKey, o.ArtifactsKey = res.LogKey, res.ArtifactsKey
			if !res.StartedAt.IsZero() {
				o.StartedAt = res.StartedAt
			}
			if !res.FinishedAt.IsZero() {
				o.FinishedAt = res.FinishedAt
			}
		}
	}
	switch {
	case pod.Status.Reason == "DeadlineExceeded":
		o.Status = build.StatusTimedOut
		deadline := ""
		if pod.Spec.ActiveDeadlineSeconds != nil {
			deadline = fmt.Sprintf(" of %s", time.Duration(*pod.Spec.ActiveDeadlineSeconds)*time.Second)
		}
		o.Reason = joinReason("build pod exceeded its deadline"+deadline+" (activeDeadlineSeconds)", o.Reason)
	case pod.Status.Reason == "Evicted":
		o.Status = build.StatusErrored
		o.Reason = joinReason("build pod evicted: "+pod.Status.Message, o.Reason)
	case o.Status != "":
		// The entrypoint's result says it all.
	case buildState != nil && buildState.ExitCode == 0 && pod.Status.Phase == corev1.PodSucceeded:
		o.Status = build.StatusSucceeded
	case buildState != nil:
		o.Status = build.StatusFailed
		if buildState.ExitCode == 125 { // decap-entrypoint's own failure
			o.Status = build.StatusErrored
		}
		o.Reason = joinReason(fmt.Sprintf("exit code %d (%s)", buildState.ExitCode, ReasonNoResult), lastLine(buildState.Message))
	default:
		if s := containerTerminated(pod.Status.InitContainerStatuses, ContainerCheckout); s != nil && s.ExitCode != 0 {
			o.Status = build.StatusErrored
			o.Reason = joinReason(fmt.Sprintf("checking out the build scripts failed (exit code %d)", s.ExitCode), lastLine(s.Message))
			o.FinishedAt = s.FinishedAt.Time
			break
		}
		if pod.Status.Phase == corev1.PodSucceeded {
			o.Status = build.StatusSucceeded
			break
		}
		o.Status = build.StatusErrored
		o.Reason = joinReason("build pod failed", strings.TrimSpace(pod.Status.Reason+": "+pod.Status.Message))
	}
	o.Reason = clip(o.Reason)
}

// terminalInfra classifies the end of a Succeeded or Failed Pod (see
// build.InfraCause), o being its outcome: none for a success or a deadline;
// the cluster's word for a disruption (eviction, preemption, a lost node);
// for a build container that reported a result, the result's cause, and
// InfraDeleted when the entrypoint was stopped with SIGTERM (the Pod was
// deleted: by Decap's Cancel or from outside, which the record tells
// apart); for one killed without a result (exit code 128 and above, not
// for exceeding its memory limit), InfraDeleted if the Pod was being
// deleted, else InfraKilled.
func terminalInfra(pod *corev1.Pod, o build.Outcome, buildState *corev1.ContainerStateTerminated, res *entrypoint.Result) build.InfraCause {
	if o.Status == build.StatusSucceeded || o.Status == build.StatusTimedOut {
		return ""
	}
	if cause := disruption(pod); cause != "" {
		return cause
	}
	switch {
	case res != nil && res.Status == build.StatusCancelled:
		return build.InfraDeleted
	case res != nil:
		return res.Infra()
	case buildState != nil && buildState.ExitCode >= 128 && buildState.Reason != "OOMKilled":
		if pod.DeletionTimestamp != nil {
			return build.InfraDeleted
		}
		return build.InfraKilled
	}
	return ""
}

// disruption names the infrastructure failure that the cluster says ended
// the Pod, or "": an eviction (node pressure, the eviction API),
// preemption or admission failure on its node, or its node lost or shut
// down, from the Pod's reason or its DisruptionTarget condition.
func disruption(pod *corev1.Pod) build.InfraCause {
	switch pod.Status.Reason {
	case "Evicted", "Preempting", "UnexpectedAdmissionError":
		return build.InfraEvicted
	case "NodeLost", "Shutdown", "Terminated", "NodeShutdown":
		return build.InfraNodeLost
	}
	for _, c := range pod.Status.Conditions {
		if c.Type != corev1.DisruptionTarget || c.Status != corev1.ConditionTrue {
			continue
		}
		if c.Reason == "DeletionByTaintManager" || c.Reason == "DeletionByPodGC" {
			return build.InfraNodeLost
		}
		return build.InfraEvicted
	}
	return ""
}

func buildStateOf(pod *corev1.Pod) *corev1.ContainerStateTerminated {
	return containerTerminated(pod.Status.ContainerStatuses, ContainerBuild)
}

func containerTerminated(statuses []corev1.ContainerStatus, name string) *corev1.ContainerStateTerminated {
	for _, s := range statuses {
		if s.Name == name && s.State.Terminated != nil {
			return s.State.Terminated
		}
	}
	return nil
}

func joinReason(a, b string) string {
	b = strings.Trim(strings.TrimSpace(b), ":")
	if b == "" {
		return a
	}
	return a + ": " + strings.TrimSpace(b)
}

// lastLine is the last non-empty line of a termination message (a log's
// tail when the container wrote no message).
func lastLine(msg string) string {
	lines := strings.Split(strings.TrimSpace(msg), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}

func clip(s string) string {
	if len(s) <= maxReasonLen {
		return s
	}
	return strings.ToValidUTF8(s[:maxReasonLen], "") + "…"
}

// storePodLog stores the log the API server kept of the Pod (the build
// container's, or the checkout's when that failed) as the build's log, for
// a build whose entrypoint uploaded none. "" when there is no log.
func (e *Executor) storePodLog(ctx context.Context, pod *corev1.Pod, o build.Outcome) (string, error) {
	container := ContainerBuild
	if containerTerminated(pod.Status.ContainerStatuses, ContainerBuild) == nil {
		container = ContainerCheckout
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	key := build.LogKey(o.BuildID)
	if obj, err := e.cfg.Blobs.Open(ctx, key); err == nil {
		// Uploaded after all (the entrypoint died before its result):
		// that log is the better one.
		obj.Close()
		return key, nil
	}
	// The tail, where a failure shows, bounded in lines and bytes.
	tail, limit := int64(maxStoredPodLogLines), int64(maxStoredPodLog)
	rc, err := e.client.CoreV1().Pods(pod.Namespace).GetLogs(pod.Name, &corev1.PodLogOptions{Container: container, TailLines: &tail, LimitBytes: &limit}).Stream(ctx)
	if err != nil {
		if apierrors.IsNotFound(err) || apierrors.IsBadRequest(err) {
			return "", nil
		}
		return "", err
	}
	defer rc.Close()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	fmt.Fprintf(zw, "[decap] the build uploaded no log; this is the end of the %s container's log as Kubernetes kept it\n", container)
	if _, err := io.Copy(zw, io.LimitReader(rc, maxStoredPodLog)); err != nil {
		return "", err
	}
	if err := zw.Close(); err != nil {
		return "", err
	}
	if err := e.cfg.Blobs.Put(ctx, key, &buf); err != nil {
		return "", err
	}
	return key, nil
}
