package build_test

import (
	"strings"
	"testing"

	"github.com/decap-ci/decap/internal/build"
)

// regexBomb is issue 12's 900-byte managedRefRegex: each .{0,1000} is within
// Go's repeat limit, but a hundred of them compile to hundreds of thousands of
// instructions.
var regexBomb = `{"buildImage":"x","managedRefRegex":"` + strings.Repeat(".{0,1000}", 100) + `"}`

// BenchmarkParseDescriptorRegexBomb measures what parsing the bomb costs
// (run with -benchmem: B/op is the memory one catalog refresh spent on it).
func BenchmarkParseDescriptorRegexBomb(b *testing.B) {
	data := []byte(regexBomb)
	b.ReportAllocs()
	for b.Loop() {
		d, err := build.ParseDescriptor(data)
		if err == nil {
			d.Manages("main")
		}
	}
}

// BenchmarkParseDescriptorRealistic is the same for a branch filter a
// project really uses.
func BenchmarkParseDescriptorRealistic(b *testing.B) {
	data := []byte(`{"buildImage":"golang:1.26","managedRefRegex":"main|release/.*|feature/[A-Z]+-[0-9]+"}`)
	b.ReportAllocs()
	for b.Loop() {
		d, err := build.ParseDescriptor(data)
		if err != nil {
			b.Fatal(err)
		}
		d.Manages("feature/ABC-12")
	}
}

// BenchmarkParseDescriptorLargestRegex is the same for a regex just under
// build.MaxRegexInsts: the most one accepted project.json can cost.
func BenchmarkParseDescriptorLargestRegex(b *testing.B) {
	data := []byte(`{"buildImage":"x","managedRefRegex":".{0,1000}[^/]{0,1000}"}`)
	b.ReportAllocs()
	for b.Loop() {
		d, err := build.ParseDescriptor(data)
		if err != nil {
			b.Fatal(err)
		}
		d.Manages(strings.Repeat("a", 250))
	}
}
