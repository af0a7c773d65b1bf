package kube_test

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation/field"
	k8stesting "k8s.io/client-go/testing"

	"github.com/decap-ci/decap/internal/build"
	"github.com/decap-ci/decap/internal/kube"
)

var podsResource = schema.GroupResource{Resource: "pods"}

func TestNew(t *testing.T) {
	t.Parallel()
	client := newClient()
	tests := []struct {
		name    string
		cfg     kube.Config
		wantErr string
	}{
		{name: "defaults", cfg: kube.Config{Client: client, Namespace: ns}},
		{name: "quantities", cfg: kube.Config{Client: client, Namespace: ns, CPURequest: "2", MemoryRequest: "512Mi", MemoryLimit: "8G"}},
		{name: "no client", cfg: kube.Config{Namespace: ns}, wantErr: "no client"},
		{name: "no namespace", cfg: kube.Config{Client: client}, wantErr: "no namespace"},
		{name: "bad cpu", cfg: kube.Config{Client: client, Namespace: ns, CPURequest: "half a core"}, wantErr: "DECAP_BUILD_CPU_REQUEST"},
		{name: "bad memory request", cfg: kube.Config{Client: client, Namespace: ns, MemoryRequest: "1 GB"}, wantErr: "DECAP_BUILD_MEMORY_REQUEST"},
		{name: "bad memory limit", cfg: kube.Config{Client: client, Namespace: ns, MemoryLimit: "lots"}, wantErr: "DECAP_BUILD_MEMORY_LIMIT"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e, err := kube.New(tt.cfg)
			if tt.wantErr == "" {
				if err != nil || e == nil {
					t.Fatalf("New = %v, %v; want an Executor", e, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("New error = %v, want one naming %q", err, tt.wantErr)
			}
		})
	}
}

func TestRESTConfig(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "kubeconfig")
	const kubeconfig = `apiVersion: v1
kind: Config
clusters:
- name: kind
  cluster:
    server: https://127.0.0.1:6443
    insecure-skip-tls-verify: true
users:
- name: decap
  user:
    token: not-a-secret
contexts:
- name: kind
  context:
    cluster: kind
    user: decap
current-context: kind
`
	if err := os.WriteFile(path, []byte(kubeconfig), 0o600); err != nil {
		t.Fatal(err)
	}
	rc, err := kube.RESTConfig(path, 50, 100)
	if err != nil {
		t.Fatalf("RESTConfig: %v", err)
	}
	if rc.Host != "https://127.0.0.1:6443" || rc.QPS != 50 || rc.Burst != 100 || rc.UserAgent != "decap" {
		t.Errorf("RESTConfig = host %q, QPS %v, burst %d, user agent %q; want https://127.0.0.1:6443, 50, 100, decap", rc.Host, rc.QPS, rc.Burst, rc.UserAgent)
	}

	if _, err := kube.RESTConfig(filepath.Join(t.TempDir(), "missing"), 50, 100); err == nil {
		t.Error("RESTConfig of a missing kubeconfig succeeded")
	}
	if os.Getenv("KUBERNETES_SERVICE_HOST") == "" {
		if _, err := kube.RESTConfig("", 50, 100); err == nil || !strings.Contains(err.Error(), "DECAP_KUBECONFIG") {
			t.Errorf("RESTConfig outside a cluster without a kubeconfig: %v, want an error naming DECAP_KUBECONFIG", err)
		}
	}
}

// creates counts the create actions on pods.
func creates(client interface{ Actions() []k8stesting.Action }) int {
	n := 0
	for _, a := range client.Actions() {
		if a.GetVerb() == "create" && a.GetResource().Resource == "pods" {
			n++
		}
	}
	return n
}

// TestLaunchUploadTTL checks that a build's upload URLs expire when its Pod
// must have ended, whatever sets the timeout: the time the Pod may wait to
// start (PendingTimeout) plus activeDeadlineSeconds (the build's timeout plus
// build.UploadGrace), not longer, so that a build cannot rewrite its log or
// artifacts long after its record is final (issue 12).
func TestLaunchUploadTTL(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name           string
		jobTimeout     time.Duration
		descriptorSecs int
		wantTimeout    time.Duration
	}{
		{"default timeout", 0, 0, build.DefaultBuildTimeout},
		{"descriptor timeout", 0, 600, 10 * time.Minute},
		{"job timeout", 3 * time.Minute, 600, 3 * time.Minute},
		{"longest timeout", 0, int(build.MaxBuildTimeout / time.Second), build.MaxBuildTimeout},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			client := newClient()
			var ttls []time.Duration
			e := newExecutor(t, client, nil, func(c *kube.Config) {
				c.PendingTimeout = 90 * time.Second
				uploads := c.Uploads
				c.Uploads = func(ctx context.Context, id build.ID, ttl time.Duration) (map[string]string, error) {
					ttls = append(ttls, ttl)
					return uploads(ctx, id, ttl)
				}
			})
			id := testID(100 + i)
			job := testJob(id)
			job.Timeout, job.Descriptor.TimeoutSeconds = tt.jobTimeout, tt.descriptorSecs
			if err := e.Launch(t.Context(), job); err != nil {
				t.Fatalf("Launch: %v", err)
			}
			pod, err := client.CoreV1().Pods(ns).Get(t.Context(), id.PodName(), metav1.GetOptions{})
			if err != nil {
				t.Fatalf("the launched Pod: %v", err)
			}
			deadline := time.Duration(*pod.Spec.ActiveDeadlineSeconds) * time.Second
			want := 90*time.Second + tt.wantTimeout + build.UploadGrace
			if len(ttls) != 1 || ttls[0] != want || ttls[0] != 90*time.Second+deadline {
				t.Errorf("presigned for %v, want %v (PendingTimeout 1m30s + the Pod's deadline %v)", ttls, want, deadline)
			}
		})
	}
}

func TestLaunch(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	client := newClient()
	var ttls []time.Duration
	e := newExecutor(t, client, nil, func(c *kube.Config) {
		uploads := c.Uploads
		c.Uploads = func(ctx context.Context, id build.ID, ttl time.Duration) (map[string]string, error) {
			ttls = append(ttls, ttl)
			return uploads(ctx, id, ttl)
		}
	})
	id := testID(1)
	job := testJob(id)
	if err := e.Launch(ctx, job); err != nil {
		t.Fatalf("Launch: %v", err)
	}
	got, err := client.CoreV1().Pods(ns).Get(ctx, id.PodName(), metav1.GetOptions{})
	if err != nil {
		t.Fatalf("the launched Pod: %v", err)
	}
	want := kube.PodFor(job, kube.PodSpec{
		Namespace: ns, EntrypointImage: "ghcr.io/decap-ci/build:1.0.0", ScriptsRepo: "https://github.com/decap-ci/build-scripts.git",
		ServiceAccount:     "decap-build",
		LogUploadURL:       "https://log.example/" + string(id),
		ArtifactsUploadURL: "https://art.example/" + string(id),
		LogTimesUploadURL:  "https://times.example/" + string(id),
		CPURequest:         resource.MustParse("500m"), MemoryRequest: resource.MustParse("1Gi"), MemoryLimit: resource.MustParse("4Gi"),
	})
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("launched Pod (-want +got):\n%s", diff)
	}
	// The URLs live as long as the Pod can: the default PendingTimeout
	// (5m) to start, then its deadline.
	if wantTTL := 5*time.Minute + time.Duration(*want.Spec.ActiveDeadlineSeconds)*time.Second; len(ttls) != 1 || ttls[0] != wantTTL {
		t.Errorf("presigned for %v, want once, for %v", ttls, wantTTL)
	}

	// Launched again (a redelivery): launched, and still one Pod.
	if err := e.Launch(ctx, job); err != nil {
		t.Fatalf("second Launch: %v, want nil (AlreadyExists is launched)", err)
	}
	list, err := client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Items) != 1 || creates(client) != 2 {
		t.Errorf("after two launches: %d Pods, %d creates; want 1 Pod (2 creates)", len(list.Items), creates(client))
	}
}

func TestLaunchErrors(t *testing.T) {
	t.Parallel()
	invalid := apierrors.NewInvalid(schema.GroupKind{Kind: "Pod"}, "build-x", field.ErrorList{
		field.Invalid(field.NewPath("spec", "containers").Index(0).Child("image"), "Not An Image", "must not contain spaces"),
	})
	tests := []struct {
		name        string
		createErr   error
		uploads     kube.Uploads
		noUploads   bool
		wantInvalid bool
		wantCreates int
		wantIn      string
	}{
		{name: "invalid", createErr: invalid, wantInvalid: true, wantCreates: 1, wantIn: "must not contain spaces"},
		{name: "forbidden", createErr: apierrors.NewForbidden(podsResource, "build-x", errors.New("exceeded quota")), wantCreates: 1, wantIn: "exceeded quota"},
		{name: "unavailable", createErr: apierrors.NewServiceUnavailable("etcd is down"), wantCreates: 1, wantIn: "etcd is down"},
		{name: "presign fails", uploads: func(context.Context, build.ID, time.Duration) (map[string]string, error) {
			return nil, errors.New("no credentials")
		}, wantIn: "no credentials"},
		{name: "no uploads", noUploads: true, wantIn: "presign"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			client := newClient()
			if tt.createErr != nil {
				client.PrependReactor("create", "pods", func(k8stesting.Action) (bool, runtime.Object, error) {
					return true, nil, tt.createErr
				})
			}
			e := newExecutor(t, client, nil, func(c *kube.Config) {
				if tt.uploads != nil {
					c.Uploads = tt.uploads
				}
				if tt.noUploads {
					c.Uploads = nil
				}
			})
			err := e.Launch(context.Background(), testJob(testID(1)))
			if err == nil {
				t.Fatal("Launch succeeded, want an error")
			}
			if got := errors.Is(err, build.ErrInvalid); got != tt.wantInvalid {
				t.Errorf("Launch error %q: errors.Is(err, build.ErrInvalid) = %v, want %v", err, got, tt.wantInvalid)
			}
			if !strings.Contains(err.Error(), tt.wantIn) {
				t.Errorf("Launch error %q does not say %q", err, tt.wantIn)
			}
			if tt.createErr != nil && !tt.wantInvalid && apierrors.ReasonForError(err) != apierrors.ReasonForError(tt.createErr) {
				t.Errorf("Launch error %q does not wrap the API error", err)
			}
			if n := creates(client); n != tt.wantCreates {
				t.Errorf("%d creates, want %d", n, tt.wantCreates)
			}
		})
	}
}

// deletes returns the options of the delete actions on pods.
func deletes(client interface{ Actions() []k8stesting.Action }) []metav1.DeleteOptions {
	var out []metav1.DeleteOptions
	for _, a := range client.Actions() {
		if d, ok := a.(k8stesting.DeleteActionImpl); ok && d.GetResource().Resource == "pods" {
			out = append(out, d.DeleteOptions)
		}
	}
	return out
}

func TestCancel(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	client := newClient(podOf(testID(1)))
	e := newExecutor(t, client, nil, nil)

	if err := e.Cancel(ctx, testID(1)); err != nil {
		t.Fatalf("Cancel: %v", err)
	}
	if _, err := client.CoreV1().Pods(ns).Get(ctx, testID(1).PodName(), metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("Pod after Cancel: %v, want NotFound", err)
	}
	if d := deletes(client); len(d) != 1 || d[0].GracePeriodSeconds != nil {
		t.Errorf("Cancel deleted with %+v, want once with the Pod's own grace period", d)
	}

	if err := e.Cancel(ctx, testID(2)); !errors.Is(err, build.ErrNotFound) {
		t.Errorf("Cancel of a build without a Pod: %v, want build.ErrNotFound", err)
	}

	client.PrependReactor("delete", "pods", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewServiceUnavailable("etcd is down")
	})
	if err := e.Cancel(ctx, testID(3)); err == nil || errors.Is(err, build.ErrNotFound) {
		t.Errorf("Cancel with the API down: %v, want an error other than build.ErrNotFound", err)
	}
}

func TestRemove(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	client := newClient(podOf(testID(1)))
	e := newExecutor(t, client, nil, nil)

	if err := e.Remove(ctx, testID(1)); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	if _, err := client.CoreV1().Pods(ns).Get(ctx, testID(1).PodName(), metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("Pod after Remove: %v, want NotFound", err)
	}
	if err := e.Remove(ctx, testID(1)); err != nil {
		t.Errorf("second Remove: %v, want nil (gone is removed)", err)
	}
	d := deletes(client)
	if len(d) != 2 {
		t.Fatalf("%d deletes, want 2", len(d))
	}
	for _, o := range d {
		if o.GracePeriodSeconds == nil || *o.GracePeriodSeconds != 0 {
			t.Errorf("Remove deleted with grace period %v, want 0", o.GracePeriodSeconds)
		}
	}

	client.PrependReactor("delete", "pods", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewServiceUnavailable("etcd is down")
	})
	if err := e.Remove(ctx, testID(1)); err == nil {
		t.Error("Remove with the API down succeeded")
	}
}

func TestPresent(t *testing.T) {
	t.Parallel()
	elsewhere := podOf(testID(3))
	elsewhere.Namespace = "default"
	noLabel := podOf(testID(4))
	noLabel.Labels = nil
	otherType := podOf(testID(5))
	otherType.Labels[kube.LabelType] = "something-else"
	byName := podOf(testID(6)) // a build Pod that lost its annotations
	byName.Annotations = nil
	client := newClient(podOf(testID(1)), podOf(testID(2)), elsewhere, noLabel, otherType, byName)
	e := newExecutor(t, client, nil, nil)

	got, err := e.Present(context.Background())
	if err != nil {
		t.Fatalf("Present: %v", err)
	}
	slices.Sort(got)
	if diff := cmp.Diff([]build.ID{testID(1), testID(2), testID(6)}, got); diff != "" {
		t.Errorf("Present (-want +got):\n%s", diff)
	}
}

// TestPresentPages checks that Present follows the list's continue tokens
// (the fake clientset does not page by itself).
func TestPresentPages(t *testing.T) {
	t.Parallel()
	client := newClient()
	var tokens []string
	client.PrependReactor("list", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
		opts := a.(k8stesting.ListActionImpl).ListOptions
		tokens = append(tokens, opts.Continue)
		if opts.LabelSelector != kube.LabelType+"="+kube.TypeBuild || opts.Limit <= 0 {
			t.Errorf("listed with %+v, want the build Pods' selector and a limit", opts)
		}
		switch opts.Continue {
		case "":
			return true, &corev1.PodList{ListMeta: metav1.ListMeta{Continue: "page-2"}, Items: []corev1.Pod{*podOf(testID(1))}}, nil
		case "page-2":
			return true, &corev1.PodList{Items: []corev1.Pod{*podOf(testID(2))}}, nil
		}
		return true, nil, apierrors.NewBadRequest("unknown continue token")
	})
	e := newExecutor(t, client, nil, nil)
	got, err := e.Present(context.Background())
	if err != nil {
		t.Fatalf("Present: %v", err)
	}
	if diff := cmp.Diff([]build.ID{testID(1), testID(2)}, got); diff != "" {
		t.Errorf("Present (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"", "page-2"}, tokens); diff != "" {
		t.Errorf("continue tokens (-want +got):\n%s", diff)
	}

	failing := newClient()
	failing.PrependReactor("list", "pods", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewServiceUnavailable("etcd is down")
	})
	if _, err := newExecutor(t, failing, nil, nil).Present(context.Background()); err == nil {
		t.Error("Present with the API down succeeded")
	}
}

func TestLiveLog(t *testing.T) {
	t.Parallel()
	client := newClient(podOf(testID(1)))
	e := newExecutor(t, client, nil, nil)

	read := func(rc io.ReadCloser, err error) string {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		defer rc.Close()
		b, err := io.ReadAll(rc)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	if got := read(e.OpenLiveLog(testID(1))); got != "fake logs" {
		t.Errorf("OpenLiveLog = %q, want the fake's %q", got, "fake logs")
	}
	if got := read(e.FollowLiveLog(context.Background(), testID(1))); got != "fake logs" {
		t.Errorf("FollowLiveLog = %q, want the fake's %q", got, "fake logs")
	}
	var opts []corev1.PodLogOptions
	for _, a := range client.Actions() {
		if a.GetSubresource() == "log" {
			opts = append(opts, *a.(k8stesting.GenericActionImpl).Value.(*corev1.PodLogOptions))
		}
	}
	want := []corev1.PodLogOptions{{Container: kube.ContainerBuild}, {Container: kube.ContainerBuild, Follow: true}}
	if diff := cmp.Diff(want, opts); diff != "" {
		t.Errorf("log requests (-want +got):\n%s", diff)
	}

	for _, apiErr := range []error{
		apierrors.NewNotFound(podsResource, testID(2).PodName()),
		apierrors.NewBadRequest(`container "build" in pod "build-x" is waiting to start: PodInitializing`),
	} {
		client := newClient()
		client.PrependReactor("get", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
			return a.GetSubresource() == "log", nil, apiErr
		})
		e := newExecutor(t, client, nil, nil)
		if _, err := e.OpenLiveLog(testID(2)); !errors.Is(err, build.ErrNotFound) {
			t.Errorf("OpenLiveLog with %q: %v, want build.ErrNotFound", apiErr, err)
		}
	}
}
