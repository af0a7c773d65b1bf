package kube_test

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/decap-ci/decap/internal/build"
	"github.com/decap-ci/decap/internal/kube"
)

// secretJob is a push build granted two secrets.
func secretJob() build.Job {
	job := testJob(testID(9))
	job.Descriptor.Secrets = []string{"NPM_TOKEN", "DEPLOY_KEY"}
	job.Descriptor.Sidecars = []build.Sidecar{{Name: "db", Image: "postgres:17"}}
	job.Secrets = []build.Secret{{Name: "DEPLOY_KEY", Value: []byte("deploy-key-value-Q1")}, {Name: "NPM_TOKEN", Value: []byte("npm-token-value-Z9")}}
	return job
}

// TestPodWithSecretsGolden: the Pod of a build with secrets mounts its
// Secret read-only in the build container alone, and its spec holds the
// Secret's name, never a value.
func TestPodWithSecretsGolden(t *testing.T) {
	t.Parallel()
	pod := kube.PodFor(secretJob(), testSpec())
	got, err := yaml.Marshal(pod)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{"deploy-key-value-Q1", "npm-token-value-Z9", "ZGVwbG95LWtleS12YWx1ZS1RMQ"} {
		if bytes.Contains(got, []byte(v)) {
			t.Errorf("the Pod's spec holds a secret's value %q", v)
		}
	}
	path := filepath.Join("testdata", "pods", "with-secrets.yaml")
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./internal/kube/ -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("PodFor differs from %s (-want +got; -update rewrites it):\n%s", path, cmp.Diff(string(want), string(got)))
	}
	for _, c := range append(pod.Spec.InitContainers, pod.Spec.Containers...) {
		for _, m := range c.VolumeMounts {
			if m.MountPath == kube.SecretsMount && (c.Name != kube.ContainerBuild || !m.ReadOnly) {
				t.Errorf("container %s mounts the secrets (read-only %t); want the build container alone, read-only", c.Name, m.ReadOnly)
			}
		}
	}
	// Without secrets, nothing of them.
	plain, _ := yaml.Marshal(kube.PodFor(testJob(testID(9)), testSpec()))
	if bytes.Contains(plain, []byte("secret")) || bytes.Contains(plain, []byte("DECAP_SECRETS_DIR")) {
		t.Errorf("the Pod of a build without secrets mentions them:\n%s", plain)
	}
}

// TestSecretFor: the build's Secret holds its values, is owned by its
// Pod (by UID), immutable, and named after the build.
func TestSecretFor(t *testing.T) {
	t.Parallel()
	job := secretJob()
	pod := kube.PodFor(job, testSpec())
	pod.UID = "0c3a6f1e-1111-2222-3333-444455556666"
	s := kube.SecretFor(job, pod)
	want := &corev1.Secret{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"},
		ObjectMeta: metav1.ObjectMeta{
			Name: pod.Name + "-secrets", Namespace: pod.Namespace,
			Labels:          map[string]string{kube.LabelType: kube.TypeBuildSecrets},
			Annotations:     map[string]string{kube.AnnotationBuildID: string(job.Request.BuildID)},
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "v1", Kind: "Pod", Name: pod.Name, UID: pod.UID}},
		},
		Immutable: ptr(true),
		Type:      corev1.SecretTypeOpaque,
		Data:      map[string][]byte{"DEPLOY_KEY": []byte("deploy-key-value-Q1"), "NPM_TOKEN": []byte("npm-token-value-Z9")},
	}
	if diff := cmp.Diff(want, s); diff != "" {
		t.Errorf("SecretFor() (-want +got):\n%s", diff)
	}
	if s.Name != kube.SecretName(job.Request.BuildID) || pod.Spec.Volumes[len(pod.Spec.Volumes)-1].Secret.SecretName != s.Name {
		t.Errorf("the Pod mounts %q, the Secret is %q", pod.Spec.Volumes[len(pod.Spec.Volumes)-1].Secret.SecretName, s.Name)
	}
}

func ptr[T any](v T) *T { return &v }

// TestLaunchCreatesTheSecret: Launch creates the Pod, then its Secret,
// owned by the Pod's UID; a second Launch (a redelivered request) creates
// the Secret a first one did not; Remove deletes both.
func TestLaunchCreatesTheSecret(t *testing.T) {
	t.Parallel()
	client := newClient()
	e := newExecutor(t, client, nil, nil)
	job := secretJob()
	if err := e.Launch(t.Context(), job); err != nil {
		t.Fatalf("Launch() error = %v", err)
	}
	pod, err := client.CoreV1().Pods(ns).Get(t.Context(), job.Request.BuildID.PodName(), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	s, err := client.CoreV1().Secrets(ns).Get(t.Context(), kube.SecretName(job.Request.BuildID), metav1.GetOptions{})
	if err != nil {
		t.Fatalf("the build's Secret: %v", err)
	}
	if len(s.OwnerReferences) != 1 || s.OwnerReferences[0].UID != pod.UID || string(s.Data["NPM_TOKEN"]) != "npm-token-value-Z9" {
		t.Errorf("Secret owners %+v (pod UID %q), data keys %v", s.OwnerReferences, pod.UID, len(s.Data))
	}
	// The launcher died between the Pod and the Secret: the next Launch
	// finds the Pod and makes the Secret.
	if err := client.CoreV1().Secrets(ns).Delete(t.Context(), s.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := e.Launch(t.Context(), job); err != nil {
		t.Fatalf("second Launch() error = %v", err)
	}
	if _, err := client.CoreV1().Secrets(ns).Get(t.Context(), s.Name, metav1.GetOptions{}); err != nil {
		t.Errorf("the Secret after a second Launch: %v", err)
	}
	if err := e.Launch(t.Context(), job); err != nil {
		t.Errorf("third Launch() error = %v, want nil (all there already)", err)
	}
	if err := e.Remove(t.Context(), job.Request.BuildID); err != nil {
		t.Fatalf("Remove() error = %v", err)
	}
	if _, err := client.CoreV1().Secrets(ns).Get(t.Context(), s.Name, metav1.GetOptions{}); err == nil {
		t.Error("the build's Secret is still there after Remove")
	}
	// A build without secrets makes no Secret.
	plain := testJob(testID(10))
	if err := e.Launch(t.Context(), plain); err != nil {
		t.Fatal(err)
	}
	list, _ := client.CoreV1().Secrets(ns).List(t.Context(), metav1.ListOptions{})
	if len(list.Items) != 0 {
		var names []string
		for _, i := range list.Items {
			names = append(names, i.Name)
		}
		t.Errorf("Secrets after a build without secrets: %s", strings.Join(names, ", "))
	}
}
