package build_test

import (
	"errors"
	"fmt"
	"runtime"
	"strings"
	"testing"

	"github.com/decap-ci/decap/internal/build"
)

// TestManagedRefRegexSize checks that managedRefRegex is limited by the size
// of its compiled program (build.MaxRegexInsts), not by its text: regexes
// projects really use pass, repetition bombs are refused with an error that
// says why.
func TestManagedRefRegexSize(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		regex   string
		wantErr string
		manages map[string]bool
	}{
		{name: "realistic", regex: `main|release/.*|feature/[A-Z]+-[0-9]+`,
			manages: map[string]bool{"main": true, "release/1.2": true, "feature/ABC-12": true, "feature/abc-12": false, "mainly": false}},
		{name: "semver tags", regex: `v[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}(-(alpha|beta|rc)\.[0-9]{1,3})?`,
			manages: map[string]bool{"v1.2.3": true, "v1.2.3-rc.1": true, "v1.2": false}},
		// Long text, small program: the text's length is not the limit.
		{name: "long literal alternation", regex: manyBranches(200),
			manages: map[string]bool{"branch-0199": true, "branch-0200": false}},
		{name: "at the bound's edge", regex: `.{0,1000}[^/]{0,1000}`,
			manages: map[string]bool{strings.Repeat("a", 2000): true, strings.Repeat("a", 2001): false}},
		// Issue 12: 900 bytes that compiled to 200,004 instructions.
		{name: "repetition bomb", regex: strings.Repeat(".{0,1000}", 100), wantErr: "managedRefRegex is too large: it compiles to more than 4096 instructions"},
		{name: "nested repeats", regex: `((a|b){0,40}c){0,25}`, wantErr: "managedRefRegex is too large"},
		// Under the estimate's margin, over the bound once compiled.
		{name: "just over the bound", regex: `.{0,1000}.{0,1000}.{0,100}`, wantErr: "compiles to 4204 instructions, more than 4096"},
		{name: "beyond Go's repeat limit", regex: `.{0,1001}`, wantErr: "does not compile"},
		{name: "closing the anchor", regex: `x)|(.*`, wantErr: "does not compile"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			data := fmt.Sprintf(`{"buildImage":"x","managedRefRegex":%q}`, tt.regex)
			d, err := build.ParseDescriptor([]byte(data))
			if tt.wantErr != "" {
				if err == nil || !errors.Is(err, build.ErrInvalid) || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseDescriptor: got %v, want ErrInvalid containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseDescriptor: %v", err)
			}
			for ref, want := range tt.manages {
				if got := d.Manages(ref); got != want {
					t.Errorf("Manages(%q) = %v, want %v", truncated(ref), got, want)
				}
			}
		})
	}
}

// TestManagesHandBuiltBomb checks that a Descriptor built without
// ParseDescriptor gets the same limit: an oversized regex manages nothing.
func TestManagesHandBuiltBomb(t *testing.T) {
	t.Parallel()
	d := build.Descriptor{BuildImage: "x", ManagedRefRegex: strings.Repeat(".{0,1000}", 100)}
	if d.Manages("main") {
		t.Errorf("Manages(main) = true for a regex over the size bound, want false")
	}
}

// TestRegexBombMemory reads the heap counters around parsing issue 12's
// bomb: before the bound it allocated about 150 MiB per parse, refused it
// allocates well under 1 MiB. The 8 MiB threshold is generous; the figures
// are in BenchmarkParseDescriptorRegexBomb.
func TestRegexBombMemory(t *testing.T) {
	data := []byte(regexBomb)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	if _, err := build.ParseDescriptor(data); err == nil {
		t.Fatalf("ParseDescriptor accepted the repetition bomb")
	}
	runtime.ReadMemStats(&after)
	if got := after.TotalAlloc - before.TotalAlloc; got > 8<<20 {
		t.Errorf("parsing the bomb allocated %d bytes, want under 8 MiB", got)
	}
}

// manyBranches is a regex naming n branches: long text, small program.
func manyBranches(n int) string {
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("branch-%04d", i)
	}
	return strings.Join(names, "|")
}

func truncated(s string) string {
	if len(s) > 20 {
		return s[:20] + "…"
	}
	return s
}
