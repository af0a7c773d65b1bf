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

// TestSupersedeAndRetries checks project.json's supersede and retries: the
// defaults of DESIGN.md when absent, what each field changes, the anchored
// exceptRefRegex under the same size bound as managedRefRegex, and the
// bounds of retries.infra and of the operator's cap.
func TestSupersedeAndRetries(t *testing.T) {
	t.Parallel()
	none := build.SupersedePolicy{}
	queued := build.SupersedePolicy{Queued: true}
	both := build.SupersedePolicy{Queued: true, Running: true}
	tests := []struct {
		name      string
		json      string
		wantErr   string
		supersede map[string]build.SupersedePolicy
		retries   map[int]int // operator's cap → InfraRetries
	}{
		{name: "defaults", json: `{"buildImage":"x"}`,
			supersede: map[string]build.SupersedePolicy{"main": queued, "feature/x": queued},
			retries:   map[int]int{-1: 2, 5: 2, 1: 1, 0: 0}},
		{name: "empty objects take the defaults", json: `{"buildImage":"x","supersede":{},"retries":{}}`,
			supersede: map[string]build.SupersedePolicy{"main": queued}, retries: map[int]int{-1: 2}},
		{name: "running too", json: `{"buildImage":"x","supersede":{"running":true}}`,
			supersede: map[string]build.SupersedePolicy{"main": both}},
		{name: "off", json: `{"buildImage":"x","supersede":{"queued":false}}`,
			supersede: map[string]build.SupersedePolicy{"main": none}},
		{name: "running only", json: `{"buildImage":"x","supersede":{"queued":false,"running":true}}`,
			supersede: map[string]build.SupersedePolicy{"main": {Running: true}}},
		{name: "exempt refs, anchored", json: `{"buildImage":"x","supersede":{"running":true,"exceptRefRegex":"main|release/.*"}}`,
			supersede: map[string]build.SupersedePolicy{"main": none, "release/1.2": none, "mainly": both, "feature/main": both}},
		{name: "retries", json: `{"buildImage":"x","retries":{"infra":5}}`, retries: map[int]int{-1: 5, 3: 3, 10: 5}},
		{name: "no retries", json: `{"buildImage":"x","retries":{"infra":0}}`, retries: map[int]int{-1: 0, 3: 0}},
		{name: "most retries", json: `{"buildImage":"x","retries":{"infra":10}}`, retries: map[int]int{-1: 10}},
		{name: "too many retries", json: `{"buildImage":"x","retries":{"infra":11}}`, wantErr: "retries.infra must be between 0 and 10"},
		{name: "negative retries", json: `{"buildImage":"x","retries":{"infra":-1}}`, wantErr: "retries.infra must be between 0 and 10"},
		{name: "retries not a number", json: `{"buildImage":"x","retries":{"infra":"2"}}`, wantErr: "retries.infra: a string where a number belongs"},
		{name: "typo in supersede", json: `{"buildImage":"x","supersede":{"queue":true}}`, wantErr: "unknown field"},
		{name: "typo in retries", json: `{"buildImage":"x","retries":{"infrastructure":1}}`, wantErr: "unknown field"},
		{name: "bad exceptRefRegex", json: `{"buildImage":"x","supersede":{"exceptRefRegex":"(main"}}`, wantErr: "supersede.exceptRefRegex does not compile"},
		{name: "exceptRefRegex closing the anchor", json: `{"buildImage":"x","supersede":{"exceptRefRegex":"x)|(.*"}}`, wantErr: "supersede.exceptRefRegex does not compile"},
		{name: "exceptRefRegex bomb", json: `{"buildImage":"x","supersede":{"exceptRefRegex":"` + strings.Repeat(".{0,1000}", 100) + `"}}`,
			wantErr: "supersede.exceptRefRegex is too large"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			d, err := build.ParseDescriptor([]byte(tt.json))
			if tt.wantErr != "" {
				if err == nil || !errors.Is(err, build.ErrInvalid) || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseDescriptor: got %v, want ErrInvalid containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseDescriptor: %v", err)
			}
			for ref, want := range tt.supersede {
				if got := d.SupersedeFor(ref); got != want {
					t.Errorf("SupersedeFor(%q) = %+v, want %+v", ref, got, want)
				}
			}
			for limit, want := range tt.retries {
				if got := d.InfraRetries(limit); got != want {
					t.Errorf("InfraRetries(%d) = %d, want %d", limit, got, want)
				}
			}
		})
	}
}

// TestSupersedeHandBuilt checks that a Descriptor built without
// ParseDescriptor compiles exceptRefRegex with the same limits, and that
// one it cannot compile exempts every ref: superseding too little only
// costs build time, superseding too much loses builds.
func TestSupersedeHandBuilt(t *testing.T) {
	t.Parallel()
	yes := true
	d := build.Descriptor{BuildImage: "x", Supersede: &build.Supersede{Running: &yes, ExceptRefRegex: "main"}}
	if got, want := d.SupersedeFor("main"), (build.SupersedePolicy{}); got != want {
		t.Errorf("SupersedeFor(main) = %+v, want %+v", got, want)
	}
	if got, want := d.SupersedeFor("dev"), (build.SupersedePolicy{Queued: true, Running: true}); got != want {
		t.Errorf("SupersedeFor(dev) = %+v, want %+v", got, want)
	}
	bomb := build.Descriptor{BuildImage: "x", Supersede: &build.Supersede{ExceptRefRegex: strings.Repeat(".{0,1000}", 100)}}
	if got := bomb.SupersedeFor("dev"); got.Any() {
		t.Errorf("SupersedeFor(dev) = %+v with an exceptRefRegex over the size bound, want nothing superseded", got)
	}
}

// TestDescriptorFieldNamesExact checks that project.json's field names
// match exactly, at every level: encoding/json matches them regardless of
// case, so "buildimage" was taken for buildImage although unknown fields are
// promised to be errors, and of two spellings of one field the last won.
// Errors say where (line and column), and a near miss says what was meant.
func TestDescriptorFieldNamesExact(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, json string
		wantErr    string // "" for a valid descriptor
	}{
		{name: "exact names", json: `{"buildImage": "x", "supersede": {"running": true}, "retries": {"infra": 1},
			"sidecars": [{"name": "db", "image": "postgres", "env": [{"name": "A", "value": "b"}]}]}`},
		{name: "lower case", json: `{"buildimage": "x"}`,
			wantErr: `project.json: line 1, column 2: unknown field "buildimage" (did you mean "buildImage"?)`},
		{name: "upper case", json: "{\n  \"buildImage\": \"x\",\n  \"ManagedRefRegex\": \"main\"\n}",
			wantErr: `line 3, column 3: unknown field "ManagedRefRegex" (did you mean "managedRefRegex"?)`},
		{name: "two spellings of one field", json: `{"buildImage": "x", "BuildImage": "y"}`,
			wantErr: `unknown field "BuildImage" (did you mean "buildImage"?)`},
		{name: "a field twice", json: `{"buildImage": "x", "buildImage": "y"}`,
			wantErr: `line 1, column 21: field "buildImage" is given twice`},
		{name: "in supersede", json: `{"buildImage": "x", "supersede": {"Running": true}}`,
			wantErr: `unknown field "supersede.Running" (did you mean "running"?)`},
		{name: "in retries", json: `{"buildImage": "x", "retries": {"INFRA": 1}}`,
			wantErr: `unknown field "retries.INFRA" (did you mean "infra"?)`},
		{name: "in a sidecar", json: `{"buildImage": "x", "sidecars": [{"name": "db", "Image": "postgres"}]}`,
			wantErr: `unknown field "sidecars[0].Image" (did you mean "image"?)`},
		{name: "in a sidecar's env", json: `{"buildImage": "x", "sidecars": [{"name": "db", "image": "p", "env": [{"name": "A", "Value": "b"}]}]}`,
			wantErr: `unknown field "sidecars[0].env[0].Value" (did you mean "value"?)`},
		{name: "unknown", json: `{"buildImage": "x", "bogus": 1}`,
			wantErr: `line 1, column 21: unknown field "bogus"`},
		{name: "syntax error", json: "{\n  \"buildImage\": \"x\",\n}\n",
			wantErr: `project.json: line 3, column 1: invalid character '}' looking for beginning of object key string`},
		{name: "a list where an object belongs", json: `{"buildImage": "x", "sidecars": [{"name": "db", "image": "p", "env": {"A": "b"}}]}`,
			wantErr: `line 1, column 70: sidecars[0].env: an object where an array belongs`},
		{name: "not an object", json: `["buildImage"]`,
			wantErr: `project.json: line 1, column 1: an array where an object belongs`},
		{name: "a fraction for seconds", json: `{"buildImage": "x", "buildTimeoutSeconds": 1.5}`,
			wantErr: `line 1, column 44: buildTimeoutSeconds: 1.5 where a whole number belongs`},
		{name: "wrong type", json: "{\n  \"buildImage\": \"x\",\n  \"buildTimeoutSeconds\": \"60\"\n}",
			wantErr: `project.json: line 3, column 26: buildTimeoutSeconds: a string where a number belongs`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := build.ParseDescriptor([]byte(tt.json))
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("ParseDescriptor: %v", err)
			case tt.wantErr != "" && (err == nil || !errors.Is(err, build.ErrInvalid) || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("ParseDescriptor: got %v, want ErrInvalid containing %q", err, tt.wantErr)
			}
		})
	}
}
