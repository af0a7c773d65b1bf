package kubetest_test

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/decap-ci/decap/internal/kubetest"
)

// TestPodsRunThroughTheirPhases checks the control plane itself: a Pod is
// scheduled onto kwok's node and ends as its branch label says.
func TestPodsRunThroughTheirPhases(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a Kubernetes control plane; skipped with -short")
	}
	cp := kubetest.Start(t)
	ctx := t.Context()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "phases"}}
	if _, err := cp.Client.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// No controller-manager makes the namespace's default ServiceAccount.
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default", Namespace: "phases"}}
	if _, err := cp.Client.CoreV1().ServiceAccounts("phases").Create(ctx, sa, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for branch, want := range map[string]corev1.PodPhase{"main": corev1.PodSucceeded, kubetest.BranchFail: corev1.PodFailed} {
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: "p-" + branch, Namespace: "phases", Labels: map[string]string{"branch": branch}},
			Spec: corev1.PodSpec{
				RestartPolicy:                corev1.RestartPolicyNever,
				AutomountServiceAccountToken: new(false),
				InitContainers:               []corev1.Container{{Name: "init", Image: "busybox"}},
				Containers:                   []corev1.Container{{Name: "build", Image: "busybox"}},
			},
		}
		if _, err := cp.Client.CoreV1().Pods("phases").Create(ctx, pod, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		waitPhase(t, cp, pod.Name, want)
	}
}

func waitPhase(t *testing.T, cp *kubetest.ControlPlane, name string, want corev1.PodPhase) {
	t.Helper()
	var last *corev1.Pod
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		p, err := cp.Client.CoreV1().Pods("phases").Get(context.Background(), name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		last = p
		if p.Status.Phase == want {
			return
		}
	}
	t.Fatalf("pod %s is %s after 60s, want %s (status %+v)", name, last.Status.Phase, want, last.Status)
}
