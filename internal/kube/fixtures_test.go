package kube_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/decap-ci/decap/internal/build"
	"github.com/decap-ci/decap/internal/buildtest"
	"github.com/decap-ci/decap/internal/kube"
)

const (
	ns = "decap"
	// wait bounds every wait for something the watcher does; it is a
	// deadlock guard, never a measure of speed.
	wait = 10 * time.Second
)

// t0 is the fake clock's start.
var t0 = time.Date(2025, time.March, 1, 12, 0, 0, 0, time.UTC)

// testID returns a distinct UUIDv7 build ID for n.
func testID(n int) build.ID { return build.ID(fmt.Sprintf("01955187-c400-7000-8000-%012d", n)) }

// testJob is a plain branch push of decap-ci/hello.
func testJob(id build.ID) build.Job {
	return build.Job{
		Request: build.Request{
			V: 1, BuildID: id, Team: "decap-ci", Project: "hello", Ref: "main", RefType: build.Branch,
			SHA: "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c", Trigger: build.TriggerPush,
			RequestedBy: "octocat", RequestedAt: t0.Add(-2 * time.Minute), DeliveryID: "72d3162e-cc78-11e3-81ab-4c9367dc0958",
		},
		Descriptor:    build.Descriptor{BuildImage: "golang:1.26"},
		CatalogCommit: "4b825dc642cb6eb9a060e54bf8d69288fbee4904",
	}
}

// testSpec is the PodSpec the golden files are made with.
func testSpec() kube.PodSpec {
	return kube.PodSpec{
		Namespace:          ns,
		EntrypointImage:    "ghcr.io/decap-ci/build:1.0.0",
		ScriptsRepo:        "https://github.com/decap-ci/build-scripts.git",
		ServiceAccount:     "decap-build",
		LogUploadURL:       "https://decap-logs.s3.amazonaws.com/logs/console.log.gz?X-Amz-Signature=log",
		ArtifactsUploadURL: "https://decap-logs.s3.amazonaws.com/artifacts/artifacts.tar.gz?X-Amz-Signature=art",
		LogTimesUploadURL:  "https://decap-logs.s3.amazonaws.com/logs/console.times.json.gz?X-Amz-Signature=times",
		CPURequest:         resource.MustParse("500m"),
		MemoryRequest:      resource.MustParse("1Gi"),
		MemoryLimit:        resource.MustParse("4Gi"),
	}
}

// podOf is the build Pod of id as Launch creates it, made a minute before
// t0 and running since then.
func podOf(id build.ID) *corev1.Pod {
	p := kube.PodFor(testJob(id), testSpec())
	p.CreationTimestamp = metav1.NewTime(t0.Add(-time.Minute))
	started := metav1.NewTime(t0.Add(-50 * time.Second))
	p.Status = corev1.PodStatus{
		Phase:     corev1.PodRunning,
		StartTime: &started,
		InitContainerStatuses: []corev1.ContainerStatus{
			{Name: kube.ContainerCheckout, State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
				ExitCode: 0, Reason: "Completed", StartedAt: started, FinishedAt: metav1.NewTime(t0.Add(-45 * time.Second))}}},
		},
		ContainerStatuses: []corev1.ContainerStatus{
			{Name: kube.ContainerBuild, State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{
				StartedAt: metav1.NewTime(t0.Add(-40 * time.Second))}}},
		},
	}
	return p
}

// newClient returns a fake clientset holding objects.
func newClient(objects ...runtime.Object) *fake.Clientset {
	return fake.NewSimpleClientset(objects...)
}

// newExecutor returns an Executor on client with the fake clock now.
func newExecutor(t *testing.T, client *fake.Clientset, now func() time.Time, edit func(*kube.Config)) *kube.Executor {
	t.Helper()
	cfg := kube.Config{
		Client: client, Namespace: ns,
		EntrypointImage: "ghcr.io/decap-ci/build:1.0.0", ScriptsRepo: "https://github.com/decap-ci/build-scripts.git",
		Uploads: func(_ context.Context, id build.ID, _ time.Duration) (map[string]string, error) {
			return map[string]string{
				build.LogKey(id): "https://log.example/" + string(id), build.ArtifactsKey(id): "https://art.example/" + string(id),
				build.LogTimesKey(id): "https://times.example/" + string(id),
			}, nil
		},
		Now: now,
	}
	if edit != nil {
		edit(&cfg)
	}
	e, err := kube.New(cfg)
	if err != nil {
		t.Fatalf("kube.New: %v", err)
	}
	return e
}

// watchRun is one Executor.Watch running on a fake clientset until the test
// ends.
type watchRun struct {
	client   *fake.Clientset
	exec     *kube.Executor
	clock    *buildtest.Clock
	outcomes chan build.Outcome
}

// startWatch starts Watch on a fake clientset holding objects, and returns
// once the informer's watch is established, so that every change the test
// makes from then on reaches the watcher. handle, if not nil, is called
// before the outcome is reported on outcomes; its error is Watch's handle
// error (and an outcome is reported only when it returns nil).
func startWatch(t *testing.T, edit func(*kube.Config), handle func(context.Context, build.Outcome) error, objects ...runtime.Object) *watchRun {
	t.Helper()
	client := newClient(objects...)
	watching := make(chan struct{})
	var once sync.Once
	// As the fake clientset's own watch reactor does, then say the watch is
	// there: a deletion made before that would be lost.
	client.PrependWatchReactor("pods", func(action k8stesting.Action) (bool, watch.Interface, error) {
		var opts metav1.ListOptions
		if a, ok := action.(k8stesting.WatchActionImpl); ok {
			opts = a.ListOptions
		}
		w, err := client.Tracker().Watch(action.GetResource(), action.GetNamespace(), opts)
		if err != nil {
			return false, nil, err
		}
		once.Do(func() { close(watching) })
		return true, w, nil
	})
	r := &watchRun{client: client, clock: buildtest.NewClock(t0), outcomes: make(chan build.Outcome, 100)}
	r.exec = newExecutor(t, client, r.clock.Now, edit)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- r.exec.Watch(ctx, func(ctx context.Context, o build.Outcome) error {
			if handle != nil {
				if err := handle(ctx, o); err != nil {
					return err
				}
			}
			r.outcomes <- o
			return nil
		})
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Watch returned %v, want nil after its context ended", err)
			}
		case <-time.After(wait):
			t.Errorf("Watch did not return within %s of its context's end", wait)
		}
	})
	select {
	case <-watching:
	case err := <-done:
		t.Fatalf("Watch returned %v before it watched", err)
	case <-time.After(wait):
		t.Fatalf("Watch did not watch pods within %s", wait)
	}
	return r
}

// next returns the next outcome handled.
func (r *watchRun) next(t *testing.T) build.Outcome {
	t.Helper()
	select {
	case o := <-r.outcomes:
		return o
	case <-time.After(wait):
		t.Fatalf("no outcome within %s", wait)
		return build.Outcome{}
	}
}

// nextOf returns the next outcome, failing the test unless it is id's.
func (r *watchRun) nextOf(t *testing.T, id build.ID) build.Outcome {
	t.Helper()
	o := r.next(t)
	if o.BuildID != id {
		t.Fatalf("got an outcome of build %s (%s: %s), want one of %s", o.BuildID, o.Status, o.Reason, id)
	}
	return o
}

// settle proves that the watcher reports nothing more for what the test did
// so far: it ends a fresh sentinel build and expects that build's outcome
// next and nothing after it. The watcher sees the sentinel's events after
// all earlier ones; one that it wrongly took for an end would be handled
// first in all but rare interleavings of its workers (then the test
// passes where it should fail, never the other way round).
func (r *watchRun) settle(t *testing.T, n int) {
	t.Helper()
	id := testID(900 + n)
	p := podOf(id)
	p.Status.Phase = corev1.PodSucceeded
	p.Status.ContainerStatuses[0].State = terminated(0, "")
	if _, err := r.client.CoreV1().Pods(ns).Create(context.Background(), p, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if o := r.next(t); o.BuildID != id {
		t.Fatalf("got an outcome of build %s (%s: %s), want none before the sentinel's", o.BuildID, o.Status, o.Reason)
	}
	select {
	case o := <-r.outcomes:
		t.Fatalf("got an outcome of build %s (%s: %s) after the sentinel's, want none", o.BuildID, o.Status, o.Reason)
	default:
	}
}

// setStatus changes the status of a Pod the way the kubelet does.
func (r *watchRun) setStatus(t *testing.T, id build.ID, change func(*corev1.PodStatus)) {
	t.Helper()
	ctx := context.Background()
	p, err := r.client.CoreV1().Pods(ns).Get(ctx, id.PodName(), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	change(&p.Status)
	if _, err := r.client.CoreV1().Pods(ns).UpdateStatus(ctx, p, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func (r *watchRun) create(t *testing.T, p *corev1.Pod) {
	t.Helper()
	if _, err := r.client.CoreV1().Pods(p.Namespace).Create(context.Background(), p, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// terminated is a container state ended with code and message (the
// termination message).
func terminated(code int32, message string) corev1.ContainerState {
	return corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
		ExitCode: code, Message: message,
		StartedAt: metav1.NewTime(t0.Add(-40 * time.Second)), FinishedAt: metav1.NewTime(t0.Add(-10 * time.Second)),
	}}
}

func intp(i int) *int { return &i }
