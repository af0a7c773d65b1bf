package kube_test

import (
	"context"
	"encoding/json"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/decap-ci/decap/internal/build"
	"github.com/decap-ci/decap/internal/buildtest"
	"github.com/decap-ci/decap/internal/entrypoint"
	"github.com/decap-ci/decap/internal/kube"
)

// TestExecutorContract runs the executor suite on client-go's fake
// clientset, with the driver in the kubelet's place: it sets each Pod's
// status as a kubelet would for the build's ending.
func TestExecutorContract(t *testing.T) {
	t.Parallel()
	buildtest.TestExecutor(t, buildtest.ExecutorHarness{
		New: func(t *testing.T) (buildtest.Executor, buildtest.ExecutorDriver) {
			d := &kubeDriver{client: newClient(), watching: make(chan struct{}), endings: map[build.ID]buildtest.ExecutorEnding{}}
			var once sync.Once
			// As the fake clientset's own watch reactor does, then say the
			// watch is there: a deletion made before it would be lost.
			d.client.PrependWatchReactor("pods", func(action k8stesting.Action) (bool, watch.Interface, error) {
				var opts metav1.ListOptions
				if a, ok := action.(k8stesting.WatchActionImpl); ok {
					opts = a.ListOptions
				}
				w, err := d.client.Tracker().Watch(action.GetResource(), action.GetNamespace(), opts)
				if err != nil {
					return false, nil, err
				}
				once.Do(func() { close(d.watching) })
				return true, w, nil
			})
			return newExecutor(t, d.client, time.Now, nil), d
		},
		// Cancel deletes the Pod, and the fake clientset deletes at once:
		// the watcher sees a Pod deleted before it ended.
		Features: buildtest.ExecutorFeatures{CancelLooksExternal: true},
	})
}

type kubeDriver struct {
	client   *fake.Clientset
	watching chan struct{}
	mu       sync.Mutex
	endings  map[build.ID]buildtest.ExecutorEnding
}

func (d *kubeDriver) Job(id build.ID, ending buildtest.ExecutorEnding) build.Job {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.endings[id] = ending
	job := testJob(id)
	job.Request.RequestedAt = time.Now()
	job.Timeout = time.Hour
	return job
}

func (d *kubeDriver) Watching(t *testing.T) {
	t.Helper()
	select {
	case <-d.watching:
	case <-time.After(wait):
		t.Fatalf("Watch did not watch pods within %s", wait)
	}
}

// Drive sets the Pod's status as the kubelet would for the build's ending.
func (d *kubeDriver) Drive(t *testing.T, id build.ID) {
	t.Helper()
	d.mu.Lock()
	ending := d.endings[id]
	d.mu.Unlock()
	now := time.Now()
	started := metav1.NewTime(now.Add(-time.Second))
	checkedOut := corev1.ContainerStatus{Name: kube.ContainerCheckout, State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
		ExitCode: 0, Reason: "Completed", StartedAt: started, FinishedAt: started}}}
	ended := func(code int32, res entrypoint.Result) corev1.ContainerState {
		res.StartedAt, res.FinishedAt = started.Time, now
		msg, err := json.Marshal(res)
		if err != nil {
			t.Fatal(err)
		}
		return corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: code, Message: string(msg), StartedAt: started, FinishedAt: metav1.NewTime(now)}}
	}
	own := func(r entrypoint.Result) entrypoint.Result {
		r.LogKey, r.ArtifactsKey = build.LogKey(id), build.ArtifactsKey(id)
		return r
	}
	code := func(n int) *int { return &n }
	s := corev1.PodStatus{StartTime: &started, InitContainerStatuses: []corev1.ContainerStatus{checkedOut}}
	buildState := func(st corev1.ContainerState) {
		s.ContainerStatuses = []corev1.ContainerStatus{{Name: kube.ContainerBuild, State: st}}
	}
	switch ending {
	case buildtest.EndSucceeds:
		s.Phase = corev1.PodSucceeded
		buildState(ended(0, own(entrypoint.Result{Status: build.StatusSucceeded, ExitCode: code(0)})))
	case buildtest.EndFails:
		s.Phase = corev1.PodFailed
		buildState(ended(3, own(entrypoint.Result{Status: build.StatusFailed, ExitCode: code(3), Reason: "exit code 3"})))
	case buildtest.EndTimesOut:
		s.Phase, s.Reason, s.Message = corev1.PodFailed, "DeadlineExceeded", "Pod was active on the node longer than the specified deadline"
		buildState(ended(143, own(entrypoint.Result{Status: build.StatusCancelled, ExitCode: code(143), Reason: "cancelled"})))
	case buildtest.EndErrors:
		s.Phase, s.StartTime, s.InitContainerStatuses = corev1.PodPending, nil, nil
		buildState(corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "InvalidImageName", Message: `couldn't parse image name "golang:Nope"`}})
	case buildtest.EndUploadFails:
		s.Phase = corev1.PodFailed
		buildState(ended(0, entrypoint.Result{Status: build.StatusErrored, ExitCode: code(0), Reason: "upload log: 503 Service Unavailable"}))
	case buildtest.EndRunsLong:
		s.Phase = corev1.PodRunning
		buildState(corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: started}})
	default:
		t.Fatalf("no ending for build %s", id)
	}
	ctx := context.Background()
	p, err := d.client.CoreV1().Pods(ns).Get(ctx, id.PodName(), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	p.Status = s
	if _, err := d.client.CoreV1().Pods(ns).UpdateStatus(ctx, p, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// KillFromOutside deletes the build's Pod, as someone with kubectl would.
func (d *kubeDriver) KillFromOutside(t *testing.T, id build.ID) {
	t.Helper()
	if err := d.client.CoreV1().Pods(ns).Delete(context.Background(), id.PodName(), metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
}

// Runs is 1 while the build has its Pod: a Pod's name is its build's.
func (d *kubeDriver) Runs(t *testing.T, id build.ID) int {
	t.Helper()
	_, err := d.client.CoreV1().Pods(ns).Get(context.Background(), id.PodName(), metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return 0
	case err != nil:
		t.Fatal(err)
	}
	return 1
}
