package kube_test

import (
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/decap-ci/decap/internal/build"
	"github.com/decap-ci/decap/internal/kube"
)

// BenchmarkPodFor measures the build Pod's construction, once per launch
// (docs/BENCHMARKS.md).
func BenchmarkPodFor(b *testing.B) {
	job := build.Job{
		Request: build.Request{
			V: 1, BuildID: "01955187-c400-7000-8000-000000000001", Team: "decap-ci", Project: "hello", Ref: "feature/Locks",
			RefType: build.Branch, SHA: "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c", Trigger: build.TriggerPush,
			RequestedBy: "octocat", RequestedAt: time.Date(2025, time.March, 1, 12, 0, 0, 0, time.UTC),
			DeliveryID: "72d3162e-cc78-11e3-81ab-4c9367dc0958",
		},
		Descriptor:    build.Descriptor{BuildImage: "golang:1.26"},
		CatalogCommit: "4b825dc642cb6eb9a060e54bf8d69288fbee4904",
		Timeout:       30 * time.Minute,
	}
	spec := kube.PodSpec{
		Namespace: "decap", EntrypointImage: "ghcr.io/decap-ci/build:1.0.0",
		ScriptsRepo: "https://github.com/decap-ci/build-scripts.git", ServiceAccount: "decap-build",
		LogUploadURL:       "https://decap-logs.s3.amazonaws.com/logs/console.log.gz?X-Amz-Signature=log",
		ArtifactsUploadURL: "https://decap-logs.s3.amazonaws.com/artifacts/artifacts.tar.gz?X-Amz-Signature=art",
		CPURequest:         resource.MustParse("500m"), MemoryRequest: resource.MustParse("1Gi"), MemoryLimit: resource.MustParse("4Gi"),
	}
	b.ReportAllocs()
	for b.Loop() {
		if p := kube.PodFor(job, spec); p.Name == "" {
			b.Fatal("PodFor returned a Pod without a name")
		}
	}
}
