//go:build !decap_embedded

package backend

import (
	"fmt"
	"time"

	"k8s.io/client-go/kubernetes"

	"github.com/decap-ci/decap/internal/build"
	"github.com/decap-ci/decap/internal/catalog"
	"github.com/decap-ci/decap/internal/kube"
)

func (s *Set) openKube(now func() time.Time) (Executor, error) {
	k := s.cfg.Kube
	if s.uploads == nil {
		return nil, fmt.Errorf("%w: DECAP_EXECUTOR=kubernetes needs DECAP_BACKEND=aws: build pods upload logs and artifacts to S3 through presigned URLs", build.ErrInvalid)
	}
	repo, err := catalog.GitURL(s.cfg.BuildScripts)
	if err != nil {
		return nil, fmt.Errorf("DECAP_BUILD_SCRIPTS: %w", err)
	}
	rc, err := kube.RESTConfig(k.Kubeconfig, k.QPS, k.Burst)
	if err != nil {
		return nil, err
	}
	client, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	ex, err := kube.New(kube.Config{
		Client: client, Namespace: k.Namespace, EntrypointImage: k.EntrypointImage, ScriptsRepo: repo,
		CPURequest: k.CPURequest, MemoryRequest: k.MemoryRequest, MemoryLimit: k.MemoryLimit,
		Uploads: s.uploads, PendingTimeout: k.PendingTimeout, Blobs: s.Blobs,
		Logger: s.log.With("component", "executor"), Now: now,
	})
	if err != nil {
		return nil, err
	}
	s.Executor = ex
	return ex, nil
}
