package ingest

import (
	"os"
	"path/filepath"
	"testing"
)

// The webhook's hot path before any I/O, on GitHub's sample push payload
// (docs/BENCHMARKS.md). parsePush is unexported, so these benchmarks live in
// the package itself.

func benchPush(b *testing.B) []byte {
	b.Helper()
	body, err := os.ReadFile(filepath.Join("testdata", "github-webhooks", "push-with-new-branch.json"))
	if err != nil {
		b.Fatal(err)
	}
	return body
}

// BenchmarkVerifySignature checks X-Hub-Signature-256 over the payload.
func BenchmarkVerifySignature(b *testing.B) {
	body := benchPush(b)
	secret := []byte("It's a Secret to Everybody")
	sig := Sign(secret, body)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if err := VerifySignature(secret, body, sig); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkParsePush reads the few fields a build request needs.
func BenchmarkParsePush(b *testing.B) {
	body := benchPush(b)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		p, err := parsePush(body)
		if err != nil || p.ignored != "" {
			b.Fatalf("parsePush: %+v, %v", p, err)
		}
	}
}

// BenchmarkParsePushStd is BenchmarkParsePush with the payload decoded by
// encoding/json, as it was before decodePush (issue 15): run both in one
// binary to compare them.
func BenchmarkParsePushStd(b *testing.B) {
	body := benchPush(b)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		ev, err := decodePushStd(body)
		if err != nil {
			b.Fatal(err)
		}
		p, err := pushFrom(ev)
		if err != nil || p.ignored != "" {
			b.Fatalf("parsePush: %+v, %v", p, err)
		}
	}
}
