package e2e_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/decap-ci/decap/internal/kubetest"
	"github.com/decap-ci/decap/internal/proctest"
)

// The Kubernetes end-to-end test: the three services on the AWS backend
// (moto) with DECAP_EXECUTOR=kubernetes, against a real kube-apiserver with
// manifests/ applied, each service acting as its own ServiceAccount, so
// RBAC is what production enforces. kwok's fake node takes build Pods
// through their phases; the kwok stages end a Pod as its branch says
// (internal/kubetest).

// buildImage is the test project's buildImage; kwok pulls nothing.
const kubeBuildImage = "registry.example/ci/golang:1.26"

// rbacChecks are what each service's ServiceAccount may and may not do,
// asked with kubectl auth can-i. The manifests grant exactly the "yes"
// rows (manifests/README.md); every "no" row is a privilege a compromised
// service must not have.
var rbacChecks = []struct {
	account string
	verb    string
	what    string // resource[/subresource]
	ns      string
	want    bool
}{
	{"decap-dispatcher", "create", "pods", "decap", true},
	{"decap-dispatcher", "delete", "pods", "decap", true},
	{"decap-dispatcher", "get", "pods", "decap", true},
	{"decap-dispatcher", "list", "pods", "decap", false},
	{"decap-dispatcher", "create", "secrets", "decap", true}, // a build's secrets, for its Pod
	{"decap-dispatcher", "get", "secrets", "decap", false},
	{"decap-dispatcher", "list", "secrets", "decap", false},
	{"decap-dispatcher", "watch", "secrets", "decap", false},
	{"decap-dispatcher", "create", "secrets", "decap-system", false},
	{"decap-dispatcher", "get", "secrets", "decap-system", false},
	{"decap-dispatcher", "create", "pods", "decap-system", false},
	{"decap-dispatcher", "create", "pods", "default", false},
	{"decap-dispatcher", "get", "pods/log", "decap", false},
	{"decap-dispatcher", "create", "pods/exec", "decap", false},
	{"decap-dispatcher", "update", "pods", "decap", false},
	{"decap-reaper", "get", "pods", "decap", true},
	{"decap-reaper", "list", "pods", "decap", true},
	{"decap-reaper", "watch", "pods", "decap", true},
	{"decap-reaper", "delete", "pods", "decap", true},
	{"decap-reaper", "get", "pods/log", "decap", true},
	{"decap-reaper", "create", "pods", "decap", false},
	{"decap-reaper", "delete", "secrets", "decap", true}, // a build's secrets, with its Pod
	{"decap-reaper", "get", "secrets", "decap", false},
	{"decap-reaper", "list", "secrets", "decap", false},
	{"decap-reaper", "delete", "pods", "decap-system", false},
	{"decap-ingest", "get", "pods", "decap", true},
	{"decap-ingest", "list", "pods", "decap", true},
	{"decap-ingest", "watch", "pods", "decap", true},
	{"decap-ingest", "get", "pods/log", "decap", true},
	{"decap-ingest", "create", "pods", "decap", false},
	{"decap-ingest", "delete", "pods", "decap", false},
	{"decap-ingest", "get", "secrets", "decap", false},
	{"decap-ingest", "list", "secrets", "decap", false},
	{"decap-ingest", "create", "secrets", "decap", false},
	{"decap-ingest", "get", "secrets", "decap-system", false},
	{"decap-build", "get", "pods", "decap", false},
	{"decap-build", "get", "secrets", "decap", false},
	{"decap-build", "list", "secrets", "decap", false},
	{"decap-build", "list", "configmaps", "decap", false},
}

func TestKubernetesPipeline(t *testing.T) {
	requireAWS(t)
	cp := kubetest.Start(t)
	w := newAWSWorld(t)

	// The manifests, as an operator applies them.
	rendered, err := exec.Command("kubectl", "kustomize", filepath.Join(moduleRoot, "manifests")).Output()
	if err != nil {
		t.Fatalf("kubectl kustomize manifests/: %v", err)
	}
	if out, err := cp.Kubectl(rendered, "apply", "-f", "-"); err != nil {
		t.Fatalf("kubectl apply the manifests: %v\n%s", err, out)
	}

	t.Run("rbac", func(t *testing.T) {
		for _, c := range rbacChecks {
			ns := "decap-system"
			if c.account == "decap-build" {
				ns = "decap"
			}
			as := "system:serviceaccount:" + ns + ":" + c.account
			// "pods/log" on kubectl's command line would name a Pod "log".
			args := []string{"auth", "can-i", c.verb, c.what, "-n", c.ns, "--as=" + as}
			if resource, sub, ok := strings.Cut(c.what, "/"); ok {
				args[3] = resource
				args = append(args, "--subresource="+sub)
			}
			out, err := cp.Kubectl(nil, args...)
			got := err == nil
			var exit *exec.ExitError
			if err != nil && !errors.As(err, &exit) {
				t.Fatalf("kubectl auth can-i: %v\n%s", err, out)
			}
			if got != c.want {
				t.Errorf("%s can %s %s in %s: got %v, want %v (%s)", c.account, c.verb, c.what, c.ns, got, c.want, strings.TrimSpace(string(out)))
			}
		}
	})

	scripts := gitScripts(t)
	kindEnv := map[string][]string{}
	for _, kind := range []string{"ingest", "dispatcher", "reaper"} {
		kindEnv[kind] = []string{"DECAP_KUBECONFIG=" + cp.ServiceAccountKubeconfig("decap-system", "decap-"+kind)}
	}
	c := w.cluster(proctest.Options{Scripts: "git+" + scripts, Cap: 4, KindEnv: kindEnv, Env: []string{
		"DECAP_EXECUTOR=kubernetes",
		"DECAP_KUBE_NAMESPACE=decap",
		"DECAP_ENTRYPOINT_IMAGE=ghcr.io/decap-ci/decap-build:e2e",
	}})
	c.Start("reaper")
	c.Start("dispatcher")
	c.Start("ingest")
	pods := cp.Client.CoreV1().Pods("decap")

	t.Run("push builds in a pod that kwok runs to success", func(t *testing.T) {
		id := c.Push("kube", "hello", "main")
		rec := c.WaitFinal(id)[id]
		if rec.Status != "succeeded" || rec.PodName != "build-"+id {
			t.Fatalf("record: got %s, want succeeded in pod build-%s", rec, id)
		}
		waitPodGone(t, c, pods, "build-"+id)
	})

	t.Run("failed build container", func(t *testing.T) {
		id := c.Push("kube", "hello", kubetest.BranchFail)
		rec := c.WaitFinal(id)[id]
		if rec.Status != "failed" || rec.ExitCode == nil || *rec.ExitCode != kubetest.FailExitCode || !strings.Contains(rec.Reason, "Error 3") {
			t.Fatalf("record: got %s (exit %v), want failed with exit code %d and the message's last line", rec, rec.ExitCode, kubetest.FailExitCode)
		}
		waitPodGone(t, c, pods, "build-"+id)
	})

	t.Run("pod spec, then a cancel through the API", func(t *testing.T) {
		id := c.Push("kube", "hello", kubetest.BranchHold)
		rec := c.WaitStatus("running", func(r proctest.Record) bool { return r.Status == "running" }, id)[id]
		pod, err := pods.Get(t.Context(), "build-"+id, metav1.GetOptions{})
		if err != nil {
			t.Fatalf("get the build pod: %v", err)
		}
		checkBuildPod(t, pod, id, rec.CatalogCommit, w.bucket())

		status, body, err := c.Do(http.MethodDelete, "/api/v1/builds/"+id, http.Header{"Authorization": {"Bearer " + apiToken}}, nil)
		if err != nil || status != http.StatusAccepted {
			t.Fatalf("DELETE /api/v1/builds/%s: %d %s %v, want 202", id, status, body, err)
		}
		rec = c.WaitFinal(id)[id]
		if rec.Status != "cancelled" {
			t.Fatalf("record: got %s, want cancelled", rec)
		}
		waitPodGone(t, c, pods, "build-"+id)
	})

	t.Run("pod deleted from outside", func(t *testing.T) {
		id := c.Push("kube", "hello", kubetest.BranchHold)
		c.WaitStatus("running", func(r proctest.Record) bool { return r.Status == "running" }, id)
		if err := pods.Delete(t.Context(), "build-"+id, metav1.DeleteOptions{}); err != nil {
			t.Fatalf("delete the build pod: %v", err)
		}
		rec := c.WaitFinal(id)[id]
		if rec.Status != "errored" || !strings.Contains(rec.Reason, "deleted") || rec.Infra != "deleted" {
			t.Fatalf("record: got %s (infra %q), want errored because its pod was deleted", rec, rec.Infra)
		}
		// An infrastructure failure: the reaper retries it, a build of
		// its own in a Pod of its own, attempt 2 of the same ref.
		var retry proctest.Record
		c.WaitFor(proctest.BuildTimeout, "the retry of the deleted build to run", func() (bool, string) {
			for _, b := range c.ProjectBuilds("kube", "hello") {
				if b.RetryOf == id {
					retry = b
					return b.Status == "running", b.String()
				}
			}
			return false, "no retry recorded"
		})
		if retry.Attempt != 2 || retry.Ref != rec.Ref || retry.SHA != rec.SHA || retry.PodName != "build-"+retry.ID {
			t.Errorf("retry: attempt %d, ref %s, sha %s, pod %s; want attempt 2 of %s at %s in its own pod", retry.Attempt, retry.Ref, retry.SHA, retry.PodName, rec.Ref, rec.SHA)
		}
		if _, err := pods.Get(t.Context(), "build-"+retry.ID, metav1.GetOptions{}); err != nil {
			t.Errorf("the retry's pod: %v", err)
		}
		// A cancel is never retried.
		status, body, err := c.Do(http.MethodDelete, "/api/v1/builds/"+retry.ID, http.Header{"Authorization": {"Bearer " + apiToken}}, nil)
		if err != nil || status != http.StatusAccepted {
			t.Fatalf("DELETE /api/v1/builds/%s: %d %s %v, want 202", retry.ID, status, body, err)
		}
		if got := c.WaitFinal(retry.ID)[retry.ID]; got.Status != "cancelled" {
			t.Errorf("cancelled retry: got %s", got)
		}
		waitPodGone(t, c, pods, "build-"+retry.ID)
		for _, b := range c.ProjectBuilds("kube", "hello") {
			if b.RetryOf == retry.ID {
				t.Errorf("the cancelled retry was retried: %s", b.ID)
			}
		}
	})

	t.Run("a build's secrets in a Secret of its own, mounted, gone with the build", func(t *testing.T) {
		token := newSecret("the kube project's token", "npm_")
		status, body, err := c.Do(http.MethodPut, "/api/v1/projects/kube/secret/secrets/NPM_TOKEN", http.Header{"Authorization": {"Bearer " + apiToken}}, []byte(token.value))
		if err != nil || status != http.StatusOK {
			t.Fatalf("set the secret: %d %s %v", status, body, err)
		}
		id := c.Push("kube", "secret", kubetest.BranchHold)
		rec := c.WaitStatus("running", func(r proctest.Record) bool { return r.Status == "running" }, id)[id]
		if strings.Join(rec.Secrets, ",") != "NPM_TOKEN" {
			t.Errorf("record's secrets: got %q, want [NPM_TOKEN]", rec.Secrets)
		}
		pod, err := pods.Get(t.Context(), "build-"+id, metav1.GetOptions{})
		if err != nil {
			t.Fatalf("get the build pod: %v", err)
		}
		spec, _ := json.Marshal(pod)
		if found := leaks("the build Pod", spec, []secret{token}); len(found) > 0 {
			t.Errorf("%v", found)
		}
		mounted := false
		for _, v := range pod.Spec.Volumes {
			mounted = mounted || v.Secret != nil && v.Secret.SecretName == "build-"+id+"-secrets"
		}
		if !mounted {
			t.Errorf("the build Pod mounts no Secret build-%s-secrets: %+v", id, pod.Spec.Volumes)
		}
		secrets := cp.Client.CoreV1().Secrets("decap")
		s, err := secrets.Get(t.Context(), "build-"+id+"-secrets", metav1.GetOptions{})
		if err != nil {
			t.Fatalf("the build's Secret: %v", err)
		}
		if len(s.OwnerReferences) != 1 || s.OwnerReferences[0].UID != pod.UID || s.OwnerReferences[0].Kind != "Pod" || string(s.Data["NPM_TOKEN"]) != token.value {
			t.Errorf("the build's Secret: owners %+v (pod UID %s), keys %d", s.OwnerReferences, pod.UID, len(s.Data))
		}
		status, body, err = c.Do(http.MethodDelete, "/api/v1/builds/"+id, http.Header{"Authorization": {"Bearer " + apiToken}}, nil)
		if err != nil || status != http.StatusAccepted {
			t.Fatalf("DELETE /api/v1/builds/%s: %d %s %v, want 202", id, status, body, err)
		}
		c.WaitFinal(id)
		waitPodGone(t, c, pods, "build-"+id)
		// Without a garbage collector (none runs here) too: the reaper
		// deletes it.
		c.WaitFor(proctest.BuildTimeout, "the build's Secret to be deleted", func() (bool, string) {
			_, err := secrets.Get(context.Background(), "build-"+id+"-secrets", metav1.GetOptions{})
			return apierrors.IsNotFound(err), fmt.Sprint(err)
		})
		all, err := secrets.List(t.Context(), metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		everything, _ := json.Marshal(all)
		if found := leaks("the Secrets of namespace decap", everything, []secret{token}); len(found) > 0 {
			t.Errorf("%v", found)
		}
	})

	if t.Failed() {
		if out, err := cp.Kubectl(nil, "get", "pods", "-n", "decap", "-o", "wide"); err == nil {
			t.Logf("build pods:\n%s", out)
		}
	}
}

// gitScripts makes a build-scripts git repository with the project
// kube/hello and returns its path.
func gitScripts(t *testing.T) string {
	t.Helper()
	s := newScripts(t)
	s.add("kube", "hello", `{"buildImage": "`+kubeBuildImage+`", "buildTimeoutSeconds": 600}`, "#!/bin/bash\necho hello\n")
	s.add("kube", "secret", `{"buildImage": "`+kubeBuildImage+`", "secrets": ["NPM_TOKEN"]}`, "#!/bin/bash\ncat \"$BUILD_SECRETS/NPM_TOKEN\"\n")
	for _, args := range [][]string{
		{"init", "-q", "-b", "main"},
		{"add", "."},
		{"-c", "user.name=e2e", "-c", "user.email=e2e@example.com", "commit", "-q", "-m", "build scripts"},
	} {
		cmd := exec.Command("git", args...)
		cmd.Dir = s.dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
	}
	return s.dir
}

// checkBuildPod checks what the dispatcher created against DESIGN.md's
// build Pod.
func checkBuildPod(t *testing.T, pod *corev1.Pod, id, commit, bucket string) {
	t.Helper()
	if pod.Labels["type"] != "decap-build" || pod.Labels["team"] != "kube" || pod.Labels["project"] != "hello" || pod.Labels["branch"] != kubetest.BranchHold {
		t.Errorf("labels: got %v", pod.Labels)
	}
	if pod.Spec.RestartPolicy != corev1.RestartPolicyNever {
		t.Errorf("restartPolicy: got %s, want Never", pod.Spec.RestartPolicy)
	}
	if d := pod.Spec.ActiveDeadlineSeconds; d == nil || *d != 600+300 {
		t.Errorf("activeDeadlineSeconds: got %v, want 900 (the project's 600 s and 300 s for uploads)", d)
	}
	if pod.Spec.ServiceAccountName != "decap-build" || pod.Spec.AutomountServiceAccountToken == nil || *pod.Spec.AutomountServiceAccountToken {
		t.Errorf("service account: got %s (automount %v), want decap-build without a token", pod.Spec.ServiceAccountName, pod.Spec.AutomountServiceAccountToken)
	}
	if pod.Spec.NodeName != kubetest.NodeName {
		t.Errorf("node: got %q, want the scheduler to have bound it to %s", pod.Spec.NodeName, kubetest.NodeName)
	}
	if len(pod.Spec.InitContainers) != 1 || pod.Spec.InitContainers[0].Name != "checkout" {
		t.Fatalf("init containers: got %+v, want the checkout", pod.Spec.InitContainers)
	}
	env := func(c corev1.Container) map[string]string {
		m := map[string]string{}
		for _, e := range c.Env {
			m[e.Name] = e.Value
		}
		return m
	}
	checkout := env(pod.Spec.InitContainers[0])
	if checkout["DECAP_SCRIPTS_COMMIT"] != commit || commit == "" {
		t.Errorf("checkout commit: got %q, want the record's catalog commit %q", checkout["DECAP_SCRIPTS_COMMIT"], commit)
	}
	b := pod.Spec.Containers[0]
	if b.Name != "build" || b.Image != kubeBuildImage {
		t.Errorf("build container: got %s %s, want build %s", b.Name, b.Image, kubeBuildImage)
	}
	be := env(b)
	if be["BUILD_ID"] != id || be["PROJECT_KEY"] != "kube/hello" || be["BRANCH_TO_BUILD"] != kubetest.BranchHold {
		t.Errorf("build env: got %v", be)
	}
	for _, name := range []string{"DECAP_LOG_UPLOAD_URL", "DECAP_ARTIFACTS_UPLOAD_URL"} {
		if u := be[name]; !strings.Contains(u, bucket) || !strings.Contains(u, id) || !strings.Contains(u, "X-Amz-Signature") {
			t.Errorf("%s: got %q, want a presigned URL of the build's object in %s", name, u, bucket)
		}
	}
	for _, c := range append(pod.Spec.InitContainers, pod.Spec.Containers...) {
		for _, e := range c.Env {
			if strings.HasPrefix(e.Name, "AWS_") || strings.Contains(e.Value, apiToken) || strings.Contains(e.Value, webhookSecret) {
				t.Errorf("container %s holds a service credential in %s", c.Name, e.Name)
			}
		}
	}
}

// waitPodGone waits until the reaper has removed the build's Pod.
func waitPodGone(t *testing.T, c *proctest.Cluster, pods interface {
	Get(context.Context, string, metav1.GetOptions) (*corev1.Pod, error)
}, name string) {
	t.Helper()
	c.WaitFor(proctest.BuildTimeout, "pod "+name+" to be removed", func() (bool, string) {
		p, err := pods.Get(context.Background(), name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return true, ""
		}
		if err != nil {
			return false, err.Error()
		}
		return false, string(p.Status.Phase)
	})
}
