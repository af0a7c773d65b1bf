package kube_test

import (
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	k8stesting "k8s.io/client-go/testing"

	"github.com/decap-ci/decap/internal/build"
	"github.com/decap-ci/decap/internal/buildtest"
	"github.com/decap-ci/decap/internal/entrypoint"
	"github.com/decap-ci/decap/internal/kube"
	"github.com/decap-ci/decap/internal/reap"
)

// Times in the build Pods of podOf and terminated.
var (
	podStarted       = t0.Add(-50 * time.Second) // status.startTime
	checkoutFinished = t0.Add(-45 * time.Second) // the checkout's end
	buildFinished    = t0.Add(-10 * time.Second) // the build container's end
	resultStarted    = t0.Add(-39 * time.Second) // the script's start, in the result
	resultFinished   = t0.Add(-11 * time.Second) // the script's end, in the result
	longAgo          = metav1.NewTime(t0.Add(-10 * time.Minute))
)

// result is a termination message as decap-entrypoint writes it.
func result(status build.Status, code *int, reason string, uploaded bool) string {
	r := entrypoint.Result{Status: status, ExitCode: code, Reason: reason, StartedAt: resultStarted, FinishedAt: resultFinished}
	if uploaded {
		r.LogKey, r.ArtifactsKey = build.LogKey(testID(1)), build.ArtifactsKey(testID(1))
	}
	b, err := json.Marshal(r)
	if err != nil {
		panic(err)
	}
	return string(b) + "\n"
}

// outcomeOf is the outcome of testID(1) with the fields every case shares.
func outcomeOf(o build.Outcome) build.Outcome {
	id := testID(1)
	o.BuildID, o.PodName, o.Team, o.Project, o.Ref = id, id.PodName(), "decap-ci", "hello", "main"
	return o
}

// endCases are ways a build Pod ends, and what the watcher must make of
// each.
var endCases = []struct {
	name   string
	status func(*corev1.PodStatus)
	want   build.Outcome
	// log is the container whose log the watcher stores when it has Blobs
	// ("" when the outcome has the build's own log).
	log string
}{
	{
		name: "succeeded with a result",
		status: func(s *corev1.PodStatus) {
			s.Phase = corev1.PodSucceeded
			s.ContainerStatuses[0].State = terminated(0, result(build.StatusSucceeded, intp(0), "", true))
		},
		want: outcomeOf(build.Outcome{Status: build.StatusSucceeded, ExitCode: intp(0), StartedAt: resultStarted, FinishedAt: resultFinished,
			LogKey: build.LogKey(testID(1)), ArtifactsKey: build.ArtifactsKey(testID(1))}),
	},
	{
		name: "failed with a result",
		status: func(s *corev1.PodStatus) {
			s.Phase = corev1.PodFailed
			s.ContainerStatuses[0].State = terminated(3, result(build.StatusFailed, intp(3), "exit code 3", true))
		},
		want: outcomeOf(build.Outcome{Status: build.StatusFailed, ExitCode: intp(3), Reason: "exit code 3", StartedAt: resultStarted, FinishedAt: resultFinished,
			LogKey: build.LogKey(testID(1)), ArtifactsKey: build.ArtifactsKey(testID(1))}),
	},
	{
		name: "failed without a result",
		status: func(s *corev1.PodStatus) {
			s.Phase = corev1.PodFailed
			// FallbackToLogsOnError: the log's tail is the message.
			s.ContainerStatuses[0].State = terminated(2, "compiling\n./main.go:3:2: undefined: foo\n\n")
		},
		want: outcomeOf(build.Outcome{Status: build.StatusFailed, ExitCode: intp(2), StartedAt: podStarted, FinishedAt: buildFinished,
			Reason: "exit code 2 (" + kube.ReasonNoResult + "): ./main.go:3:2: undefined: foo"}),
		log: kube.ContainerBuild,
	},
	{
		name: "decap-entrypoint failed",
		status: func(s *corev1.PodStatus) {
			s.Phase = corev1.PodFailed
			s.ContainerStatuses[0].State = terminated(125, "decap-entrypoint: DECAP_LOG_UPLOAD_URL and DECAP_ARTIFACTS_UPLOAD_URL must be set\n")
		},
		want: outcomeOf(build.Outcome{Status: build.StatusErrored, ExitCode: intp(125), StartedAt: podStarted, FinishedAt: buildFinished,
			Reason: "exit code 125 (" + kube.ReasonNoResult + "): decap-entrypoint: DECAP_LOG_UPLOAD_URL and DECAP_ARTIFACTS_UPLOAD_URL must be set"}),
		log: kube.ContainerBuild,
	},
	{
		name: "deadline exceeded",
		status: func(s *corev1.PodStatus) {
			s.Phase, s.Reason, s.Message = corev1.PodFailed, "DeadlineExceeded", "Pod was active on the node longer than the specified deadline"
			s.ContainerStatuses[0].State = terminated(143, result(build.StatusCancelled, intp(143), "cancelled", true))
		},
		want: outcomeOf(build.Outcome{Status: build.StatusTimedOut, ExitCode: intp(143), StartedAt: resultStarted, FinishedAt: resultFinished,
			Reason: "build pod exceeded its deadline of 1h5m0s (activeDeadlineSeconds): cancelled",
			LogKey: build.LogKey(testID(1)), ArtifactsKey: build.ArtifactsKey(testID(1))}),
	},
	{
		name: "deadline exceeded before the build started",
		status: func(s *corev1.PodStatus) {
			s.Phase, s.Reason, s.Message = corev1.PodFailed, "DeadlineExceeded", "Pod was active on the node longer than the specified deadline"
			s.ContainerStatuses[0].State = corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ContainerCreating"}}
		},
		want: outcomeOf(build.Outcome{Status: build.StatusTimedOut, StartedAt: podStarted, FinishedAt: t0,
			Reason: "build pod exceeded its deadline of 1h5m0s (activeDeadlineSeconds)"}),
		log: kube.ContainerCheckout,
	},
	{
		name: "evicted",
		status: func(s *corev1.PodStatus) {
			s.Phase, s.Reason, s.Message = corev1.PodFailed, "Evicted", "The node was low on resource: ephemeral-storage."
			s.ContainerStatuses[0].State = terminated(137, "")
		},
		want: outcomeOf(build.Outcome{Status: build.StatusErrored, ExitCode: intp(137), StartedAt: podStarted, FinishedAt: buildFinished,
			Reason: "build pod evicted: The node was low on resource: ephemeral-storage.", Infra: build.InfraEvicted}),
		log: kube.ContainerBuild,
	},
	{
		name: "checkout failed",
		status: func(s *corev1.PodStatus) {
			// The kubelet leaves the containers of a Pod that never
			// initialised waiting.
			s.Phase = corev1.PodFailed
			s.InitContainerStatuses[0].State = terminated(128, "fatal: could not read Username for 'https://github.com': terminal prompts disabled\n")
			s.InitContainerStatuses[0].State.Terminated.FinishedAt = metav1.NewTime(checkoutFinished)
			s.ContainerStatuses[0].State = corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "PodInitializing"}}
		},
		want: outcomeOf(build.Outcome{Status: build.StatusErrored, StartedAt: podStarted, FinishedAt: checkoutFinished,
			Reason: "checking out the build scripts failed (exit code 128): fatal: could not read Username for 'https://github.com': terminal prompts disabled"}),
		log: kube.ContainerCheckout,
	},
	{
		name: "failed before any container ran",
		status: func(s *corev1.PodStatus) {
			s.Phase, s.Reason, s.Message = corev1.PodFailed, "UnexpectedAdmissionError", "Allocate failed due to no healthy devices"
			s.InitContainerStatuses[0].State = corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "PodInitializing"}}
			s.ContainerStatuses[0].State = corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "PodInitializing"}}
		},
		want: outcomeOf(build.Outcome{Status: build.StatusErrored, StartedAt: podStarted, FinishedAt: t0,
			Reason: "build pod failed: UnexpectedAdmissionError: Allocate failed due to no healthy devices", Infra: build.InfraEvicted}),
		log: kube.ContainerCheckout,
	},
}

// ending returns the end case called name.
func ending(name string) (c struct {
	status func(*corev1.PodStatus)
	want   build.Outcome
}) {
	for _, tt := range endCases {
		if tt.name == name {
			c.status, c.want = tt.status, tt.want
			return c
		}
	}
	panic("no end case " + name)
}

// TestWatchEnds drives a running build Pod to each way it can end and
// checks the outcome handled.
func TestWatchEnds(t *testing.T) {
	t.Parallel()
	for _, tt := range endCases {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			w := startWatch(t, nil, nil)
			id := testID(1)
			w.create(t, podOf(id))
			w.setStatus(t, id, tt.status)
			if diff := cmp.Diff(tt.want, w.nextOf(t, id)); diff != "" {
				t.Errorf("outcome (-want +got):\n%s", diff)
			}
		})
	}
}

// TestWatchStoresPodLog checks that with Blobs, the Pod's log becomes the
// log of a build that uploaded none.
func TestWatchStoresPodLog(t *testing.T) {
	t.Parallel()
	for _, tt := range endCases {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			blobs := buildtest.NewBlobs()
			w := startWatch(t, func(c *kube.Config) { c.Blobs = blobs }, nil)
			id := testID(1)
			w.create(t, podOf(id))
			w.setStatus(t, id, tt.status)
			got := w.nextOf(t, id)

			var logs []corev1.PodLogOptions
			for _, a := range w.client.Actions() {
				if a.GetSubresource() == "log" {
					logs = append(logs, *a.(k8stesting.GenericActionImpl).Value.(*corev1.PodLogOptions))
				}
			}
			want := tt.want
			if tt.log == "" {
				if len(logs) > 0 {
					t.Errorf("read the Pod's log (%+v) of a build that uploaded its own", logs)
				}
				if _, err := blobs.Open(context.Background(), build.LogKey(id)); !errors.Is(err, build.ErrNotFound) {
					t.Errorf("stored a log of a build that uploaded its own: %v", err)
				}
			} else {
				want.LogKey = build.LogKey(id)
				if len(logs) != 1 || logs[0].Container != tt.log || logs[0].LimitBytes == nil || logs[0].TailLines == nil || logs[0].Follow {
					t.Errorf("log requests %+v, want one of container %s's tail with a byte limit", logs, tt.log)
				}
				if log := gunzip(t, blobs, build.LogKey(id)); !strings.Contains(log, "the "+tt.log+" container's log") || !strings.HasSuffix(log, "\nfake logs") {
					t.Errorf("stored log %q, want a note naming the %s container, then the fake's log", log, tt.log)
				}
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("outcome (-want +got):\n%s", diff)
			}
		})
	}
}

func gunzip(t *testing.T, blobs *buildtest.FakeBlobs, key string) string {
	t.Helper()
	rc, err := blobs.Open(context.Background(), key)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	zr, err := gzip.NewReader(rc)
	if err != nil {
		t.Fatalf("stored log: %v", err)
	}
	b, err := io.ReadAll(zr)
	if err != nil {
		t.Fatalf("stored log: %v", err)
	}
	return string(b)
}

// TestWatchPodLogUnavailable checks that a log the API server will not give
// costs the build nothing but the log.
func TestWatchPodLogUnavailable(t *testing.T) {
	t.Parallel()
	blobs := buildtest.NewBlobs()
	w := startWatch(t, func(c *kube.Config) { c.Blobs = blobs }, nil)
	w.client.PrependReactor("get", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
		return a.GetSubresource() == "log", nil, apierrors.NewServiceUnavailable("kubelet unreachable")
	})
	id := testID(1)
	w.create(t, podOf(id))
	w.setStatus(t, id, ending("failed without a result").status)
	if diff := cmp.Diff(ending("failed without a result").want, w.nextOf(t, id)); diff != "" {
		t.Errorf("outcome (-want +got):\n%s", diff)
	}
}

// TestWatchClipsReason checks that a long last line makes a reason of
// bounded length that is still UTF-8.
func TestWatchClipsReason(t *testing.T) {
	t.Parallel()
	w := startWatch(t, nil, nil)
	id := testID(1)
	w.create(t, podOf(id))
	w.setStatus(t, id, func(s *corev1.PodStatus) {
		s.Phase = corev1.PodFailed
		s.ContainerStatuses[0].State = terminated(1, "x"+strings.Repeat("ü", 2000)) // 4001 bytes, the kubelet's limit is 4096
	})
	o := w.nextOf(t, id)
	prefix := "exit code 1 (" + kube.ReasonNoResult + "): xü"
	if len(o.Reason) > 1024+len("…") || !utf8.ValidString(o.Reason) || !strings.HasPrefix(o.Reason, prefix) || !strings.HasSuffix(o.Reason, "ü…") {
		t.Errorf("reason of %d bytes %q, want at most 1024 bytes of UTF-8, starting %q, ending with ü…", len(o.Reason), o.Reason, prefix)
	}
}

// pending makes a Pod pending since at, waiting as change says.
func pending(id build.ID, at metav1.Time, change func(*corev1.PodStatus)) *corev1.Pod {
	p := podOf(id)
	p.CreationTimestamp = at
	p.Status = corev1.PodStatus{
		Phase:                 corev1.PodPending,
		InitContainerStatuses: []corev1.ContainerStatus{{Name: kube.ContainerCheckout, State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "PodInitializing"}}}},
		ContainerStatuses:     []corev1.ContainerStatus{{Name: kube.ContainerBuild, State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "PodInitializing"}}}},
	}
	change(&p.Status)
	return p
}

func imagePullBackOff(s *corev1.PodStatus) {
	s.StartTime = &metav1.Time{Time: podStarted}
	s.InitContainerStatuses[0].State = terminated(0, "")
	s.ContainerStatuses[0].State = corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{
		Reason: "ImagePullBackOff", Message: `Back-off pulling image "golang:nope"`}}
}

func unschedulable(s *corev1.PodStatus) {
	s.Conditions = []corev1.PodCondition{{Type: corev1.PodScheduled, Status: corev1.ConditionFalse,
		Reason: corev1.PodReasonUnschedulable, Message: "0/3 nodes are available: 3 Insufficient cpu."}}
}

func TestWatchPendingTooLong(t *testing.T) {
	t.Parallel()
	sidecarPull := func(s *corev1.PodStatus) {
		s.InitContainerStatuses[0].State = terminated(0, "")
		s.InitContainerStatuses = append(s.InitContainerStatuses, corev1.ContainerStatus{Name: "postgres",
			State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ErrImagePull", Message: "manifest unknown"}}})
	}
	tests := []struct {
		name   string
		status func(*corev1.PodStatus)
		want   build.Outcome
	}{
		{name: "image pull back-off", status: imagePullBackOff, want: outcomeOf(build.Outcome{Status: build.StatusErrored, StartedAt: podStarted, FinishedAt: t0,
			Reason: `build pod pending for 10m0s: container build: its image cannot be pulled (ImagePullBackOff: Back-off pulling image "golang:nope")`, Infra: build.InfraImagePull})},
		{name: "unschedulable", status: unschedulable, want: outcomeOf(build.Outcome{Status: build.StatusErrored, FinishedAt: t0,
			Reason: "build pod pending for 10m0s: no node can run it (Unschedulable: 0/3 nodes are available: 3 Insufficient cpu.)"})},
		{name: "sidecar image", status: sidecarPull, want: outcomeOf(build.Outcome{Status: build.StatusErrored, FinishedAt: t0,
			Reason: "build pod pending for 10m0s: container postgres: its image cannot be pulled (ErrImagePull: manifest unknown)", Infra: build.InfraImagePull})},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			w := startWatch(t, nil, nil)
			w.create(t, pending(testID(1), longAgo, tt.status))
			if diff := cmp.Diff(tt.want, w.nextOf(t, testID(1))); diff != "" {
				t.Errorf("outcome (-want +got):\n%s", diff)
			}
		})
	}
}

// TestWatchPendingYoung checks that a Pod stuck for less than
// PendingTimeout, or pending for a reason that passes, is left alone, and
// that a stuck one is ended once it is old enough.
func TestWatchPendingYoung(t *testing.T) {
	t.Parallel()
	w := startWatch(t, nil, nil)
	young := metav1.NewTime(t0.Add(-time.Minute))
	w.create(t, pending(testID(1), young, imagePullBackOff))
	// The second is younger still: its create event may be handled only
	// after the clock moved (settle orders the watcher's events, not its
	// workers), and it must not be stuck even then.
	w.create(t, pending(testID(2), metav1.NewTime(t0.Add(time.Minute)), unschedulable))
	w.create(t, pending(testID(3), longAgo, func(s *corev1.PodStatus) { // pulling a large image
		s.InitContainerStatuses[0].State = terminated(0, "")
		s.ContainerStatuses[0].State = corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ContainerCreating"}}
	}))
	w.settle(t, 1)

	// Five minutes on, the first is stuck for six; its next status update
	// (the kubelet's back-off) shows it. The update leaves the waiting
	// reason as it was: the Pod's create event may be handled only now,
	// after the clock moved, and must give the same outcome.
	w.clock.Advance(5 * time.Minute)
	w.setStatus(t, testID(1), func(s *corev1.PodStatus) {
		s.Message = "kubelet: back-off pulling an image"
	})
	want := outcomeOf(build.Outcome{Status: build.StatusErrored, StartedAt: podStarted, FinishedAt: t0.Add(5 * time.Minute),
		Reason: `build pod pending for 6m0s: container build: its image cannot be pulled (ImagePullBackOff: Back-off pulling image "golang:nope")`, Infra: build.InfraImagePull})
	if diff := cmp.Diff(want, w.nextOf(t, testID(1))); diff != "" {
		t.Errorf("outcome (-want +got):\n%s", diff)
	}
}

func TestWatchDeletedBeforeEnd(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		pod  *corev1.Pod
		want build.Outcome
	}{
		{name: "running", pod: podOf(testID(1)),
			want: outcomeOf(build.Outcome{Status: build.StatusErrored, Reason: kube.ReasonDeleted, StartedAt: podStarted, FinishedAt: t0, Infra: build.InfraDeleted})},
		{name: "pending", pod: pending(testID(1), metav1.NewTime(t0.Add(-time.Minute)), func(*corev1.PodStatus) {}),
			want: outcomeOf(build.Outcome{Status: build.StatusErrored, Reason: kube.ReasonDeleted, FinishedAt: t0, Infra: build.InfraDeleted})},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			blobs := buildtest.NewBlobs()
			w := startWatch(t, func(c *kube.Config) { c.Blobs = blobs }, nil)
			w.create(t, tt.pod)
			if err := w.client.CoreV1().Pods(ns).Delete(context.Background(), tt.pod.Name, metav1.DeleteOptions{}); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, w.nextOf(t, testID(1))); diff != "" {
				t.Errorf("outcome (-want +got):\n%s", diff)
			}
			w.settle(t, 1)
		})
	}
}

// TestWatchHandledOnce checks that a Pod whose end was handled is not
// handled again: not on later status updates, not while it terminates, not
// when it is deleted.
func TestWatchHandledOnce(t *testing.T) {
	t.Parallel()
	w := startWatch(t, nil, nil)
	ctx := context.Background()
	id := testID(1)
	w.create(t, podOf(id))
	w.setStatus(t, id, ending("succeeded with a result").status)
	if o := w.nextOf(t, id); o.Status != build.StatusSucceeded {
		t.Fatalf("outcome %s: %s, want succeeded", o.Status, o.Reason)
	}

	w.setStatus(t, id, func(s *corev1.PodStatus) {
		s.Conditions = append(s.Conditions, corev1.PodCondition{Type: "Ready", Status: "False"})
	})
	w.settle(t, 1) // each change on its own: the work queue would merge them
	p, err := w.client.CoreV1().Pods(ns).Get(ctx, id.PodName(), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	now := metav1.NewTime(t0)
	p.DeletionTimestamp = &now
	if _, err := w.client.CoreV1().Pods(ns).Update(ctx, p, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	w.settle(t, 2)
	if err := w.client.CoreV1().Pods(ns).Delete(ctx, id.PodName(), metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	w.settle(t, 3)
}

// TestWatchCancelled checks that a Pod being deleted with its grace period
// (Cancel) is waited for, and its end is the entrypoint's result.
func TestWatchCancelled(t *testing.T) {
	t.Parallel()
	w := startWatch(t, nil, nil)
	ctx := context.Background()
	id := testID(1)
	w.create(t, podOf(id))
	p, err := w.client.CoreV1().Pods(ns).Get(ctx, id.PodName(), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	now := metav1.NewTime(t0)
	p.DeletionTimestamp = &now
	if _, err := w.client.CoreV1().Pods(ns).Update(ctx, p, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	// A Pod stuck in Pending that is being deleted is not ended as stuck:
	// its deletion is its end.
	stuck := pending(testID(2), longAgo, imagePullBackOff)
	stuck.DeletionTimestamp = &now
	w.create(t, stuck)
	w.settle(t, 1)
	if err := w.client.CoreV1().Pods(ns).Delete(ctx, stuck.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if o := w.nextOf(t, testID(2)); o.Status != build.StatusErrored || o.Reason != kube.ReasonDeleted {
		t.Errorf("outcome of the stuck Pod deleted: %s (%s), want errored (%s)", o.Status, o.Reason, kube.ReasonDeleted)
	}

	w.setStatus(t, id, func(s *corev1.PodStatus) {
		s.Phase = corev1.PodFailed
		s.ContainerStatuses[0].State = terminated(143, result(build.StatusCancelled, intp(143), "cancelled", true))
	})
	// Stopped by SIGTERM: a deletion, by Decap's Cancel or from outside;
	// the record tells them apart (build.Record.EndedByInfra).
	want := outcomeOf(build.Outcome{Status: build.StatusCancelled, ExitCode: intp(143), Reason: "cancelled", StartedAt: resultStarted, FinishedAt: resultFinished,
		LogKey: build.LogKey(id), ArtifactsKey: build.ArtifactsKey(id), Infra: build.InfraDeleted})
	if diff := cmp.Diff(want, w.nextOf(t, id)); diff != "" {
		t.Errorf("outcome (-want +got):\n%s", diff)
	}
}

// TestWatchRetriesHandle checks that an outcome handle fails on is handed
// over again until handle takes it, also for a Pod that is gone.
func TestWatchRetriesHandle(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		end  func(*testing.T, *watchRun)
		want build.Status
	}{
		{name: "ended", want: build.StatusFailed, end: func(t *testing.T, w *watchRun) {
			w.setStatus(t, testID(1), ending("failed with a result").status)
		}},
		{name: "deleted", want: build.StatusErrored, end: func(t *testing.T, w *watchRun) {
			if err := w.client.CoreV1().Pods(ns).Delete(context.Background(), testID(1).PodName(), metav1.DeleteOptions{}); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var mu sync.Mutex
			var tries []build.Outcome
			w := startWatch(t, nil, func(_ context.Context, o build.Outcome) error {
				mu.Lock()
				defer mu.Unlock()
				tries = append(tries, o)
				if len(tries) < 3 {
					return errors.New("records unavailable")
				}
				return nil
			})
			w.create(t, podOf(testID(1)))
			tt.end(t, w)
			got := w.nextOf(t, testID(1))
			if got.Status != tt.want {
				t.Errorf("outcome %s (%s), want %s", got.Status, got.Reason, tt.want)
			}
			w.settle(t, 1)
			mu.Lock()
			defer mu.Unlock()
			if len(tries) != 3+1 { // three of the build, one of settle's sentinel
				t.Fatalf("handle called %d times, want 3 for the build and 1 for the sentinel", len(tries))
			}
			for i, o := range tries[:3] {
				if diff := cmp.Diff(got, o); diff != "" {
					t.Errorf("try %d differs from the last (-last +try):\n%s", i+1, diff)
				}
			}
		})
	}
}

// TestWatchEndedAndDeleted checks that a Pod that ends and is deleted at
// once (by another reaper, say) is handled once, with its end.
func TestWatchEndedAndDeleted(t *testing.T) {
	t.Parallel()
	w := startWatch(t, nil, nil)
	id := testID(1)
	w.create(t, podOf(id))
	w.setStatus(t, id, ending("failed with a result").status)
	if err := w.client.CoreV1().Pods(ns).Delete(context.Background(), id.PodName(), metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(ending("failed with a result").want, w.nextOf(t, id)); diff != "" {
		t.Errorf("outcome (-want +got):\n%s", diff)
	}
	w.settle(t, 1)
}

// TestWatchStops checks that Watch returns nil when its context ends, also
// before its informer synced.
func TestWatchStops(t *testing.T) {
	t.Parallel()
	e := newExecutor(t, newClient(podOf(testID(1))), nil, nil)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	done := make(chan error, 1)
	go func() {
		done <- e.Watch(ctx, func(context.Context, build.Outcome) error {
			t.Error("handle called after the context ended")
			return nil
		})
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Watch = %v, want nil", err)
		}
	case <-time.After(wait):
		t.Fatalf("Watch did not return within %s of its context's end", wait)
	}
}

// TestWatchIgnoresOtherPods checks that Pods without the build label, or in
// another namespace, are not taken for builds, however they ended.
func TestWatchIgnoresOtherPods(t *testing.T) {
	t.Parallel()
	failed := func(id build.ID) *corev1.Pod {
		p := podOf(id)
		p.Status.Phase = corev1.PodFailed
		p.Status.ContainerStatuses[0].State = terminated(1, "")
		return p
	}
	noType := failed(testID(1))
	delete(noType.Labels, kube.LabelType)
	otherType := failed(testID(2))
	otherType.Labels[kube.LabelType] = "decap-build-cache"
	elsewhere := failed(testID(3))
	elsewhere.Namespace = "default"
	w := startWatch(t, nil, nil, noType)
	w.create(t, otherType)
	w.create(t, elsewhere)
	if err := w.client.CoreV1().Pods(ns).Delete(context.Background(), noType.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	w.settle(t, 1)
}

// TestWatchReconcilesAtStart checks that Pods that ended while nobody
// watched are handled at once, and running ones only when they end.
func TestWatchReconcilesAtStart(t *testing.T) {
	t.Parallel()
	ended := func(id build.ID, status func(*corev1.PodStatus)) *corev1.Pod {
		p := podOf(id)
		status(&p.Status)
		return p
	}
	succeeded := ended(testID(1), ending("succeeded with a result").status)
	failed := ended(testID(2), ending("failed without a result").status)
	timedOut := ended(testID(3), ending("deadline exceeded").status)
	running := podOf(testID(4))
	young := pending(testID(5), metav1.NewTime(t0.Add(-time.Minute)), imagePullBackOff)
	w := startWatch(t, nil, nil, succeeded, failed, timedOut, running, young)

	want := map[build.ID]build.Status{testID(1): build.StatusSucceeded, testID(2): build.StatusFailed, testID(3): build.StatusTimedOut}
	for range len(want) {
		o := w.next(t)
		if want[o.BuildID] != o.Status {
			t.Errorf("outcome of %s: %s (%s), want %v", o.BuildID, o.Status, o.Reason, want[o.BuildID])
		}
		delete(want, o.BuildID)
	}
	w.settle(t, 1)

	w.setStatus(t, testID(4), ending("succeeded with a result").status)
	if o := w.nextOf(t, testID(4)); o.Status != build.StatusSucceeded {
		t.Errorf("outcome of the build that was running: %s (%s), want succeeded", o.Status, o.Reason)
	}
}

// TestWatchWithReaper runs Watch into a real reaper on the in-memory fakes:
// the record is final and the lock released before the Pod is removed, and
// the removal is not taken for another end.
func TestWatchWithReaper(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	clock := buildtest.NewClock(t0)
	records, locks := buildtest.NewRecords(), buildtest.NewLocks(clock.Now)
	id := testID(1)
	job := testJob(id)
	rec := build.RecordFor(job.Request)
	rec.Status, rec.StartedAt, rec.PodName = build.StatusRunning, podStarted, id.PodName()
	if err := records.Save(ctx, rec); err != nil {
		t.Fatal(err)
	}
	rec, err := records.Get(ctx, id) // with the number the store gave it
	if err != nil {
		t.Fatal(err)
	}
	if err := locks.Acquire(ctx, build.Lease{Key: job.Request.LockKey(), BuildID: id, Owner: "dispatcher-0", AcquiredAt: t0.Add(-time.Minute), ExpiresAt: t0.Add(time.Hour)}, 10); err != nil {
		t.Fatal(err)
	}

	// The reaper needs the Executor that startWatch makes; handle first
	// runs after w.create below, so it sees reaper set.
	var reaper *reap.Reaper
	w := startWatch(t, nil, func(ctx context.Context, o build.Outcome) error { return reaper.Handle(ctx, o) })
	reaper = reap.New(reap.Config{}, reap.Deps{Records: records, Locks: locks, Executor: w.exec, Now: clock.Now})

	// What the store held when the Pod was deleted.
	var removals atomic.Int32
	var atRemoval struct {
		sync.Mutex
		status build.Status
		leases int
	}
	w.client.PrependReactor("delete", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if a.(k8stesting.DeleteActionImpl).GetName() != id.PodName() {
			return false, nil, nil
		}
		removals.Add(1)
		r, err := records.Get(ctx, id)
		if err != nil {
			t.Errorf("record at removal: %v", err)
		}
		leases, err := locks.List(ctx)
		if err != nil {
			t.Errorf("leases at removal: %v", err)
		}
		atRemoval.Lock()
		atRemoval.status, atRemoval.leases = r.Status, len(leases)
		atRemoval.Unlock()
		return false, nil, nil // on to the tracker
	})

	w.create(t, podOf(id))
	w.setStatus(t, id, ending("failed with a result").status)
	if o := w.nextOf(t, id); o.Status != build.StatusFailed {
		t.Fatalf("outcome %s (%s), want failed", o.Status, o.Reason)
	}
	w.settle(t, 1) // the removal's deletion is no second end

	if n := removals.Load(); n != 1 {
		t.Errorf("the Pod was deleted %d times, want once", n)
	}
	atRemoval.Lock()
	if atRemoval.status != build.StatusFailed || atRemoval.leases != 0 {
		t.Errorf("at the removal, the record was %q with %d leases held; want failed and none", atRemoval.status, atRemoval.leases)
	}
	atRemoval.Unlock()
	if _, err := w.client.CoreV1().Pods(ns).Get(ctx, id.PodName(), metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("the Pod after the reaper: %v, want NotFound", err)
	}
	got, err := records.Get(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	want := rec
	want.Status, want.ExitCode, want.Reason = build.StatusFailed, intp(3), "exit code 3"
	want.StartedAt, want.FinishedAt = resultStarted, resultFinished
	want.LogKey, want.ArtifactsKey = build.LogKey(id), build.ArtifactsKey(id)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("final record (-want +got):\n%s", diff)
	}
	for _, d := range deletes(w.client) {
		if d.GracePeriodSeconds == nil || *d.GracePeriodSeconds != 0 {
			t.Errorf("the reaper deleted with grace period %v, want 0", d.GracePeriodSeconds)
		}
	}
}

// TestWatchPermanentWaitEndsAtOnce: a young Pod whose image name is invalid
// or whose container cannot be configured (a root sidecar image under
// runAsNonRoot) will never start; its build ends without waiting out the
// pending timeout.
func TestWatchPermanentWaitEndsAtOnce(t *testing.T) {
	t.Parallel()
	for i, reason := range []string{"InvalidImageName", "CreateContainerConfigError"} {
		t.Run(reason, func(t *testing.T) {
			t.Parallel()
			w := startWatch(t, nil, nil)
			id := testID(10 + i)
			w.create(t, pending(id, metav1.NewTime(t0.Add(-time.Second)), func(s *corev1.PodStatus) {
				s.ContainerStatuses[0].State = corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: reason, Message: "no"}}
			}))
			o := w.nextOf(t, id)
			if o.Status != build.StatusErrored || !strings.HasPrefix(o.Reason, "build pod cannot start: container build:") || !strings.Contains(o.Reason, reason) {
				t.Errorf("outcome: got %s %q, want errored, cannot start, naming %s", o.Status, o.Reason, reason)
			}
		})
	}
}

// TestWatchKeepsAnUploadedLog: a build whose entrypoint uploaded its log but
// died before writing its result keeps that log; the Pod's is not stored
// over it.
func TestWatchKeepsAnUploadedLog(t *testing.T) {
	t.Parallel()
	blobs := buildtest.NewBlobs()
	id := testID(1)
	if err := blobs.Put(context.Background(), build.LogKey(id), strings.NewReader("the uploaded log")); err != nil {
		t.Fatal(err)
	}
	w := startWatch(t, func(c *kube.Config) { c.Blobs = blobs }, nil)
	w.create(t, podOf(id))
	w.setStatus(t, id, func(s *corev1.PodStatus) {
		s.Phase = corev1.PodFailed
		s.ContainerStatuses[0].State = terminated(137, "")
	})
	if o := w.nextOf(t, id); o.LogKey != build.LogKey(id) {
		t.Errorf("outcome's LogKey: got %q, want the uploaded %s", o.LogKey, build.LogKey(id))
	}
	rc, err := blobs.Open(context.Background(), build.LogKey(id))
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	if b, _ := io.ReadAll(rc); string(b) != "the uploaded log" {
		t.Errorf("stored log: got %q, want the uploaded one untouched", b)
	}
}
