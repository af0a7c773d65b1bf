package build_test

import (
	"testing"
	"time"

	"github.com/decap-ci/decap/internal/build"
)

// benchRequest is a webhook's build request, as ingest publishes it.
func benchRequest() build.Request {
	return build.Request{
		V: build.MessageVersion, BuildID: "01936f4e-7a3b-7c1d-9e2f-0a1b2c3d4e5f", Team: "Codertocat", Project: "Hello-World",
		Ref: "master", RefType: build.Branch, SHA: "6113728f27ae82c7b1a177c8d03f9e96e0adf246",
		Trigger: build.TriggerPush, RequestedBy: "Codertocat",
		RequestedAt: time.Date(2026, 11, 27, 3, 0, 0, 0, time.UTC), DeliveryID: "72d3162e-cc78-11e3-81ab-4c9367dc0958",
	}
}

// BenchmarkEncode measures ingest's side of every queue message: validate
// and marshal (docs/BENCHMARKS.md).
func BenchmarkEncode(b *testing.B) {
	req := benchRequest()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := build.Encode(req); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecode measures the dispatcher's side: parse and validate.
func BenchmarkDecode(b *testing.B) {
	body, err := build.Encode(benchRequest())
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := build.Decode(body); err != nil {
			b.Fatal(err)
		}
	}
}
