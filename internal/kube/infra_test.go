package kube_test

import (
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/decap-ci/decap/internal/build"
)

// TestWatchInfraCauses: how a build Pod ended is an infrastructure failure
// (Outcome.Infra) when the cluster or something outside the build ended
// it, never when the build's own run did.
func TestWatchInfraCauses(t *testing.T) {
	t.Parallel()
	killed := func(code int32, reason string) corev1.ContainerState {
		s := terminated(code, "")
		s.Terminated.Reason = reason
		return s
	}
	tests := []struct {
		name     string
		deleting bool // the Pod is being deleted (DeletionTimestamp set)
		status   func(*corev1.PodStatus)
		want     build.InfraCause
	}{
		{"succeeded", false, func(s *corev1.PodStatus) {
			s.Phase = corev1.PodSucceeded
			s.ContainerStatuses[0].State = terminated(0, result(build.StatusSucceeded, intp(0), "", true))
		}, ""},
		{"script failed", false, func(s *corev1.PodStatus) {
			s.Phase = corev1.PodFailed
			s.ContainerStatuses[0].State = terminated(3, result(build.StatusFailed, intp(3), "exit code 3", true))
		}, ""},
		{"script killed by SIGKILL", false, func(s *corev1.PodStatus) {
			s.Phase = corev1.PodFailed
			s.ContainerStatuses[0].State = terminated(137, result(build.StatusFailed, intp(137), "killed by signal 9 (killed)", true))
		}, build.InfraKilled},
		{"script crashed", false, func(s *corev1.PodStatus) {
			s.Phase = corev1.PodFailed
			s.ContainerStatuses[0].State = terminated(139, result(build.StatusFailed, intp(139), "killed by signal 11 (segmentation fault)", true))
		}, ""},
		{"upload failed", false, func(s *corev1.PodStatus) {
			s.Phase = corev1.PodFailed
			s.ContainerStatuses[0].State = terminated(0, result(build.StatusErrored, intp(0), "upload log: 503", false))
		}, build.InfraUpload},
		{"entrypoint stopped (a deletion)", true, func(s *corev1.PodStatus) {
			s.Phase = corev1.PodFailed
			s.ContainerStatuses[0].State = terminated(143, result(build.StatusCancelled, intp(143), "cancelled", true))
		}, build.InfraDeleted},
		{"killed past its grace period while deleted", true, func(s *corev1.PodStatus) {
			s.Phase = corev1.PodFailed
			s.ContainerStatuses[0].State = killed(137, "Error")
		}, build.InfraDeleted},
		{"entrypoint killed, no result", false, func(s *corev1.PodStatus) {
			s.Phase = corev1.PodFailed
			s.ContainerStatuses[0].State = killed(137, "Error")
		}, build.InfraKilled},
		{"over its memory limit", false, func(s *corev1.PodStatus) {
			s.Phase = corev1.PodFailed
			s.ContainerStatuses[0].State = killed(137, "OOMKilled")
		}, ""},
		{"node lost", false, func(s *corev1.PodStatus) {
			s.Phase, s.Reason, s.Message = corev1.PodFailed, "NodeLost", "Node worker-3 which was running pod is unresponsive"
		}, build.InfraNodeLost},
		{"node shut down", false, func(s *corev1.PodStatus) {
			s.Phase, s.Reason, s.Message = corev1.PodFailed, "Terminated", "Pod was terminated in response to imminent node shutdown."
			s.ContainerStatuses[0].State = terminated(143, result(build.StatusCancelled, intp(143), "cancelled", true))
		}, build.InfraNodeLost},
		{"preempted", false, func(s *corev1.PodStatus) {
			s.Phase = corev1.PodFailed
			s.Conditions = append(s.Conditions, corev1.PodCondition{Type: corev1.DisruptionTarget, Status: corev1.ConditionTrue, Reason: "PreemptionByScheduler"})
			s.ContainerStatuses[0].State = terminated(143, result(build.StatusCancelled, intp(143), "cancelled", true))
		}, build.InfraEvicted},
		{"node's taint", false, func(s *corev1.PodStatus) {
			s.Phase = corev1.PodFailed
			s.Conditions = append(s.Conditions, corev1.PodCondition{Type: corev1.DisruptionTarget, Status: corev1.ConditionTrue, Reason: "DeletionByTaintManager"})
			s.ContainerStatuses[0].State = killed(137, "Error")
		}, build.InfraNodeLost},
		{"deadline exceeded", false, func(s *corev1.PodStatus) {
			s.Phase, s.Reason = corev1.PodFailed, "DeadlineExceeded"
			s.ContainerStatuses[0].State = terminated(143, result(build.StatusCancelled, intp(143), "cancelled", true))
		}, ""},
		{"checkout failed", false, func(s *corev1.PodStatus) {
			s.Phase = corev1.PodFailed
			s.InitContainerStatuses[0].State = terminated(128, "fatal: could not read from remote repository")
			s.ContainerStatuses[0].State = corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "PodInitializing"}}
		}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			w := startWatch(t, nil, nil)
			id := testID(1)
			p := podOf(id)
			if tt.deleting {
				at := metav1.NewTime(t0.Add(-5 * time.Second))
				p.DeletionTimestamp = &at
			}
			w.create(t, p)
			w.setStatus(t, id, tt.status)
			if o := w.nextOf(t, id); o.Infra != tt.want {
				t.Errorf("outcome %s (%s): Infra %q, want %q", o.Status, o.Reason, o.Infra, tt.want)
			}
		})
	}
}
