package kube

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/decap-ci/decap/internal/build"
)

// Uploads presigns PUT URLs for a build's log and artifacts (keyed by
// build.LogKey and build.ArtifactsKey), and optionally its log's line
// times (build.LogTimesKey), valid for ttl.
type Uploads func(ctx context.Context, id build.ID, ttl time.Duration) (map[string]string, error)

// Config configures an Executor.
type Config struct {
	Client kubernetes.Interface
	// Namespace holds the build Pods ("decap").
	Namespace string
	// EntrypointImage is the Decap build container image.
	EntrypointImage string
	// ScriptsRepo is the build-scripts repository's git URL, which the
	// build Pod's init container checks out at the catalog commit.
	ScriptsRepo string
	// ServiceAccount runs build Pods (default "decap-build").
	ServiceAccount string
	// CPURequest, MemoryRequest, MemoryLimit size the build container
	// (defaults 500m, 1Gi, 4Gi).
	CPURequest, MemoryRequest, MemoryLimit string
	// Uploads presigns the build's upload URLs. Required to launch.
	Uploads Uploads
	// PendingTimeout is how long a Pod may wait for an image it cannot pull
	// or a node to run on before Watch ends its build (default 5m).
	PendingTimeout time.Duration
	// Blobs, if set, is where Watch stores the Pod's own log for a build
	// that uploaded none (its script never started, or it was killed).
	Blobs  build.Blobs
	Logger *slog.Logger
	Now    func() time.Time
}

// Executor runs builds as Pods. Launch, Cancel, Remove, Present and the
// log methods are safe for concurrent use; Watch runs once per Executor.
type Executor struct {
	cfg                 Config
	client              kubernetes.Interface
	cpu, memReq, memLim resource.Quantity
	log                 *slog.Logger
	now                 func() time.Time
}

// New checks cfg and returns an Executor.
func New(cfg Config) (*Executor, error) {
	if cfg.Client == nil {
		return nil, errors.New("kube: no client")
	}
	if cfg.Namespace == "" {
		return nil, errors.New("kube: no namespace for build pods")
	}
	if cfg.ServiceAccount == "" {
		cfg.ServiceAccount = "decap-build"
	}
	if cfg.PendingTimeout <= 0 {
		cfg.PendingTimeout = 5 * time.Minute
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	e := &Executor{cfg: cfg, client: cfg.Client, log: cfg.Logger, now: cfg.Now}
	for _, q := range []struct {
		name, v, def string
		into         *resource.Quantity
	}{
		{"DECAP_BUILD_CPU_REQUEST", cfg.CPURequest, "500m", &e.cpu},
		{"DECAP_BUILD_MEMORY_REQUEST", cfg.MemoryRequest, "1Gi", &e.memReq},
		{"DECAP_BUILD_MEMORY_LIMIT", cfg.MemoryLimit, "4Gi", &e.memLim},
	} {
		v := q.v
		if v == "" {
			v = q.def
		}
		parsed, err := resource.ParseQuantity(v)
		if err != nil {
			return nil, fmt.Errorf("kube: %s: %q is not a Kubernetes quantity (such as 500m or 1Gi)", q.name, v)
		}
		*q.into = parsed
	}
	return e, nil
}

// RESTConfig loads the client configuration: the kubeconfig file when one
// is named, else the in-cluster configuration (the Pod's ServiceAccount),
// with the request rate raised to qps and burst.
func RESTConfig(kubeconfig string, qps float32, burst int) (*rest.Config, error) {
	var (
		rc  *rest.Config
		err error
	)
	if kubeconfig != "" {
		rc, err = clientcmd.BuildConfigFromFlags("", kubeconfig)
	} else {
		rc, err = rest.InClusterConfig()
		if err != nil {
			err = fmt.Errorf("%w (outside a cluster, set DECAP_KUBECONFIG)", err)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("kubernetes client configuration: %w", err)
	}
	rc.QPS, rc.Burst = qps, burst
	rc.UserAgent = "decap"
	return rc, nil
}

// Launch creates the build's Pod. It is idempotent: the Pod's name is
// derived from the build ID, so a second create of one build gets
// AlreadyExists, which means launched. A Pod the API server rejects as
// invalid (a bad image name, say) wraps build.ErrInvalid: retrying cannot
// help.
func (e *Executor) Launch(ctx context.Context, job build.Job) error {
	if e.cfg.Uploads == nil {
		return errors.New("kube: no way to presign upload URLs for build pods (the kubernetes executor needs DECAP_BACKEND=aws)")
	}
	urls, err := e.cfg.Uploads(ctx, job.Request.BuildID, e.uploadTTL(job))
	if err != nil {
		return fmt.Errorf("presign uploads of %s: %w", job.Request.BuildID, err)
	}
	logURL, artifactsURL := urls[build.LogKey(job.Request.BuildID)], urls[build.ArtifactsKey(job.Request.BuildID)]
	if logURL == "" || artifactsURL == "" {
		return fmt.Errorf("presign uploads of %s: got no URL for the log or the artifacts", job.Request.BuildID)
	}
	pod := PodFor(job, PodSpec{
		Namespace: e.cfg.Namespace, EntrypointImage: e.cfg.EntrypointImage, ScriptsRepo: e.cfg.ScriptsRepo,
		ServiceAccount: e.cfg.ServiceAccount,
		LogUploadURL:   logURL, ArtifactsUploadURL: artifactsURL,
		LogTimesUploadURL: urls[build.LogTimesKey(job.Request.BuildID)],
		CPURequest:        e.cpu, MemoryRequest: e.memReq, MemoryLimit: e.memLim,
	})
	created, err := e.client.CoreV1().Pods(e.cfg.Namespace).Create(ctx, pod, metav1.CreateOptions{})
	switch {
	case err == nil:
	case apierrors.IsAlreadyExists(err):
		if len(job.Secrets) == 0 {
			return nil
		}
		// Launched before, maybe without its Secret (the launcher died
		// in between): the Secret's owner is this Pod, by its UID.
		if created, err = e.client.CoreV1().Pods(e.cfg.Namespace).Get(ctx, pod.Name, metav1.GetOptions{}); err != nil {
			return fmt.Errorf("get pod %s: %w", pod.Name, err)
		}
	case apierrors.IsInvalid(err):
		return fmt.Errorf("%w: create pod %s: %s", build.ErrInvalid, pod.Name, apiMessage(err))
	default:
		return fmt.Errorf("create pod %s: %w", pod.Name, err)
	}
	if len(job.Secrets) == 0 {
		return nil
	}
	// After the Pod, whose UID owns it: the kubelet starts no container
	// before the Secret it mounts exists.
	secret := SecretFor(job, created)
	_, err = e.client.CoreV1().Secrets(e.cfg.Namespace).Create(ctx, secret, metav1.CreateOptions{})
	switch {
	case err == nil, apierrors.IsAlreadyExists(err):
		return nil
	case apierrors.IsInvalid(err):
		return fmt.Errorf("%w: create secret %s: %s", build.ErrInvalid, secret.Name, apiMessage(err))
	}
	return fmt.Errorf("create secret %s: %w", secret.Name, err)
}

// uploadTTL is how long the build's presigned upload URLs stay valid: the
// longest its Pod can live, and no more, so that a build cannot rewrite its
// log or artifacts once its record is final. That is the time it may wait
// to be scheduled (a Pod still unscheduled after PendingTimeout is ended by
// the watcher) plus activeDeadlineSeconds, counted from the Pod's start:
// the build's timeout plus build.UploadGrace. Image pulls count within the
// deadline.
func (e *Executor) uploadTTL(job build.Job) time.Duration {
	return e.cfg.PendingTimeout + job.BuildTimeout() + build.UploadGrace
}

// Cancel deletes the build's Pod with its grace period: decap-entrypoint
// gets SIGTERM, stops the script, uploads what there is and reports
// cancelled. build.ErrNotFound when there is no Pod.
func (e *Executor) Cancel(ctx context.Context, id build.ID) error {
	err := e.client.CoreV1().Pods(e.cfg.Namespace).Delete(ctx, id.PodName(), metav1.DeleteOptions{})
	if apierrors.IsNotFound(err) {
		return fmt.Errorf("%w: no pod %s", build.ErrNotFound, id.PodName())
	}
	if err != nil {
		return fmt.Errorf("delete pod %s: %w", id.PodName(), err)
	}
	return nil
}

// Remove deletes the Pod of a build whose end is recorded, at once (grace
// period 0: it has ended, or it is stuck and its build recorded as ended),
// and the Secret of its secrets, if it had one: the garbage collector
// would delete that with its owner, but not as soon, and not where none
// runs. What is already gone is not an error.
func (e *Executor) Remove(ctx context.Context, id build.ID) error {
	zero := int64(0)
	err := e.client.CoreV1().Pods(e.cfg.Namespace).Delete(ctx, id.PodName(), metav1.DeleteOptions{GracePeriodSeconds: &zero})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("delete pod %s: %w", id.PodName(), err)
	}
	err = e.client.CoreV1().Secrets(e.cfg.Namespace).Delete(ctx, SecretName(id), metav1.DeleteOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("delete secret %s: %w", SecretName(id), err)
	}
	return nil
}

// Present returns the builds that have a Pod, ended or not.
func (e *Executor) Present(ctx context.Context) ([]build.ID, error) {
	var ids []build.ID
	opts := metav1.ListOptions{LabelSelector: LabelType + "=" + TypeBuild, Limit: 500}
	for {
		list, err := e.client.CoreV1().Pods(e.cfg.Namespace).List(ctx, opts)
		if err != nil {
			return nil, fmt.Errorf("list build pods: %w", err)
		}
		for i := range list.Items {
			p := &list.Items[i]
			if p.Labels[LabelType] != TypeBuild {
				continue
			}
			if id, err := podBuildID(p); err == nil {
				ids = append(ids, id)
			}
		}
		if list.Continue == "" {
			return ids, nil
		}
		opts.Continue = list.Continue
	}
}

// OpenLiveLog returns the build container's log so far, from the API
// server; build.ErrNotFound when the build has no Pod (or no log yet).
func (e *Executor) OpenLiveLog(id build.ID) (io.ReadCloser, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	rc, err := e.logStream(ctx, id, ContainerBuild, false)
	if err != nil {
		cancel()
		return nil, err
	}
	return &cancelOnClose{ReadCloser: rc, cancel: cancel}, nil
}

// FollowLiveLog streams the build container's log from its start until the
// container ends or ctx is done.
func (e *Executor) FollowLiveLog(ctx context.Context, id build.ID) (io.ReadCloser, error) {
	return e.logStream(ctx, id, ContainerBuild, true)
}

func (e *Executor) logStream(ctx context.Context, id build.ID, container string, follow bool) (io.ReadCloser, error) {
	rc, err := e.client.CoreV1().Pods(e.cfg.Namespace).GetLogs(id.PodName(), &corev1.PodLogOptions{Container: container, Follow: follow}).Stream(ctx)
	if apierrors.IsNotFound(err) || apierrors.IsBadRequest(err) {
		// BadRequest: the container has not started yet.
		return nil, fmt.Errorf("%w: no log of pod %s yet", build.ErrNotFound, id.PodName())
	}
	if err != nil {
		return nil, fmt.Errorf("log of pod %s: %w", id.PodName(), err)
	}
	return rc, nil
}

type cancelOnClose struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (c *cancelOnClose) Close() error {
	err := c.ReadCloser.Close()
	c.cancel()
	return err
}

// apiMessage is the API server's message of err, without Go error
// wrapping around it.
func apiMessage(err error) string {
	var status apierrors.APIStatus
	if errors.As(err, &status) {
		return status.Status().Message
	}
	return err.Error()
}
