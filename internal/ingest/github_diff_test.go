package ingest

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/decap-ci/decap/internal/build"
)

// decodePush replaced json.Unmarshal into a pushEvent (issue 15). These
// tests hold it to the old reading, body by body: the same pushEvent when
// encoding/json accepted the body; when it refused it, an ErrInvalid error
// that is encoding/json's own message for a syntax error and names the
// same field and JSON type for a field of the wrong type.

// decodePushStd is the reading decodePush replaced.
func decodePushStd(body []byte) (pushEvent, error) {
	var ev pushEvent
	err := json.Unmarshal(body, &ev)
	return ev, err
}

// jsonKinds maps encoding/json's UnmarshalTypeError.Value to decodePush's
// words for it.
var jsonKinds = map[string]string{
	"number": "a number", "string": "a string", "bool": "a boolean", "object": "an object", "array": "an array",
}

// sameReading fails t unless decodePush reads body as encoding/json did.
func sameReading(t *testing.T, body []byte) {
	t.Helper()
	want, wantErr := decodePushStd(body)
	got, err := decodePush(body)
	if wantErr == nil {
		if err != nil {
			t.Fatalf("body %q: decodePush: %v; encoding/json read it as %+v", body, err, want)
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Fatalf("body %q: decodePush read it otherwise than encoding/json (-json +decodePush):\n%s", body, diff)
		}
		return
	}
	if err == nil {
		t.Fatalf("body %q: decodePush read %+v; encoding/json refused it: %v", body, got, wantErr)
	}
	if !errors.Is(err, build.ErrInvalid) {
		t.Fatalf("body %q: decodePush: %v, not ErrInvalid", body, err)
	}
	var syntax *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(wantErr, &syntax):
		if want := fmt.Sprintf("%v: push payload: %v", build.ErrInvalid, wantErr); err.Error() != want {
			t.Fatalf("body %q: decodePush: %q, want encoding/json's %q", body, err, want)
		}
	case errors.As(wantErr, &typ):
		field := typ.Field
		if field == "" {
			field = "the payload"
		}
		if want := fmt.Sprintf("push payload: %s is %s, not ", field, jsonKinds[typ.Value]); !strings.Contains(err.Error(), want) {
			t.Fatalf("body %q: decodePush: %q, want it to say %q (encoding/json: %v)", body, err, want, wantErr)
		}
	default:
		t.Fatalf("body %q: encoding/json: %v (%T), which this test does not know", body, wantErr, wantErr)
	}
}

// webhookBodies returns GitHub's sample payloads (testdata/github-webhooks)
// by file name.
func webhookBodies(t testing.TB) map[string][]byte {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join("testdata", "github-webhooks", "*.json"))
	if err != nil || len(paths) == 0 {
		t.Fatalf("sample payloads: %v, %d files", err, len(paths))
	}
	bodies := make(map[string][]byte, len(paths))
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		bodies[filepath.Base(p)] = b
	}
	return bodies
}

// TestDecodePushReadsLikeEncodingJSON: every sample payload, every prefix
// of a push, and every seventh of its bytes replaced by each of a few that
// matter to JSON.
func TestDecodePushReadsLikeEncodingJSON(t *testing.T) {
	t.Parallel()
	bodies := webhookBodies(t)
	for name, body := range bodies {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			sameReading(t, body)
			if !strings.HasPrefix(name, "push") {
				return
			}
			for n := range len(body) {
				sameReading(t, body[:n])
			}
			step := 7 // bytes, so that the package's tests stay quick; the fuzzer goes further
			if testing.Short() {
				step = 23
			}
			mutated := make([]byte, len(body))
			for i := 0; i < len(body); i += step {
				for _, c := range []byte{'"', '\\', '{', '}', '[', ']', ',', ':', ' ', '0', '-', 'e', 'n', 'x', 0x00, 0xff} {
					copy(mutated, body)
					mutated[i] = c
					sameReading(t, mutated)
				}
			}
		})
	}
}

// TestDecodePushEdgeCases: the cases where a hand-written reader is likely
// to part from encoding/json, each named.
func TestDecodePushEdgeCases(t *testing.T) {
	t.Parallel()
	const ok = `{"ref":"refs/heads/main","after":"abc","repository":{"name":"hello","owner":{"login":"decap-ci"}},"pusher":{"name":"octo"}}`
	nested := func(n int, open, close string) string {
		return `{"ref":"refs/heads/main","x":` + strings.Repeat(open, n) + strings.Repeat(close, n) + `}`
	}
	for _, tc := range []struct{ name, body string }{
		{"minimal", ok},
		{"empty", ``},
		{"whitespace only", " \t\r\n"},
		{"null", `null`},
		{"null with space", ` null `},
		{"array", `[1]`},
		{"string", `"push"`},
		{"number", `-1.5e+3`},
		{"true", `true`},
		{"trailing garbage", ok + `x`},
		{"two objects", ok + ok},
		{"trailing whitespace", ok + " \n\t\r"},
		{"form feed is not whitespace", ok + "\f"},
		{"byte order mark", "\xef\xbb\xbf" + ok},
		{"duplicate ref, last wins", `{"ref":"refs/heads/a","ref":"refs/heads/b"}`},
		{"duplicate ref then null", `{"ref":"refs/heads/a","ref":null}`},
		{"duplicate repository merges", `{"repository":{"name":"a","owner":{"login":"x"}},"repository":{"owner":{"name":"y"}}}`},
		{"repository then null", `{"repository":{"name":"a"},"repository":null}`},
		{"deleted twice", `{"deleted":true,"deleted":false}`},
		{"deleted true then null", `{"deleted":true,"deleted":null}`},
		{"keys in another case", `{"REF":"refs/heads/x","Repository":{"NAME":"n","Owner":{"LoGiN":"o"}},"Pusher":{"Name":"p"},"SENDER":{"LOGIN":"s"},"Deleted":true}`},
		{"exact key then folded key", `{"ref":"refs/heads/a","REF":"refs/heads/b"}`},
		{"long s folds to s", `{"ſender":{"login":"s"},"puſher":{"name":"p"},"repoſitory":{"name":"r"}}`},
		{"kelvin sign is not a k here", `{"ref":"refs/heads/\u212a"}`},
		{"escaped key", `{"\u0072ef":"refs/heads/x","repo\u0073itory":{"n\u0061me":"n"}}`},
		{"escapes in values", `{"ref":"refs/heads/a\/b\"c\\d\b\f\n\r\t\u00e9\u20ac"}`},
		{"surrogate pair", `{"ref":"refs/heads/\ud83d\ude00"}`},
		{"lone high surrogate", `{"ref":"refs/heads/\ud83dx"}`},
		{"high surrogate then escape", `{"ref":"refs/heads/\ud83d\n"}`},
		{"high surrogate then non-low", `{"ref":"refs/heads/\ud83d\u0041"}`},
		{"two high surrogates", `{"ref":"refs/heads/\ud83d\ud83d\ude00"}`},
		{"lone low surrogate", `{"ref":"refs/heads/\ude00"}`},
		{"surrogate at end", `{"ref":"\ud83d"}`},
		{"surrogate then bad hex", `{"ref":"\ud83d\u12g4"}`},
		{"bad hex", `{"ref":"\u12G4"}`},
		{"bad escape", `{"ref":"\x"}`},
		{"escape at end", `{"ref":"\`},
		{"control character", "{\"ref\":\"a\nb\"}"},
		{"NUL in string", "{\"ref\":\"a\x00b\"}"},
		{"DEL in string", "{\"ref\":\"refs/heads/a\x7fb\"}"},
		{"invalid UTF-8", "{\"ref\":\"refs/heads/a\xffb\",\"pusher\":{\"name\":\"\xc3\x28\xe2\x82\"}}"},
		{"invalid UTF-8 in a key", "{\"r\xffef\":\"x\",\"\xff\":1}"},
		{"truncated UTF-8 at end of string", "{\"ref\":\"\xe2\x82\"}"},
		{"ref a number", `{"ref":123}`},
		{"ref huge number", `{"ref":1e400}`},
		{"ref an array", `{"ref":["refs/heads/main"]}`},
		{"ref an object", `{"ref":{}}`},
		{"ref true", `{"ref":true}`},
		{"deleted a string", `{"deleted":"false"}`},
		{"deleted a number", `{"deleted":0}`},
		{"repository a string", `{"repository":"hello"}`},
		{"repository an array", `{"repository":[]}`},
		{"owner a number", `{"repository":{"owner":1}}`},
		{"owner login an object", `{"repository":{"owner":{"login":{"login":"x"}}}}`},
		{"pusher false", `{"pusher":false}`},
		{"sender login a number", `{"sender":{"login":7}}`},
		{"two type errors, first reported", `{"ref":1,"after":true}`},
		{"type error then syntax error", `{"ref":1,"after":x}`},
		{"type error then truncated", `{"ref":1,"after":"`},
		{"type error inside a skipped value is none", `{"x":{"ref":1}}`},
		{"mismatched value not JSON", `{"ref":x}`},
		{"mismatched value truncated", `{"ref":[1,`},
		{"numbers", `{"a":0,"b":-0,"c":1.5,"d":1e5,"e":1E+5,"f":-1.25e-10,"g":[0,1,2]}`},
		{"leading zero", `{"a":01}`},
		{"leading zero in array", `[01]`},
		{"minus alone", `{"a":-}`},
		{"minus at end", `-`},
		{"dot without digits", `{"a":1.}`},
		{"dot at end", `1.`},
		{"exponent without digits", `{"a":1e}`},
		{"exponent sign without digits", `{"a":1e+}`},
		{"exponent at end", `1e`},
		{"plus sign", `{"a":+1}`},
		{"literals", `{"a":true,"b":false,"c":null,"d":[true,false,null]}`},
		{"bad true", `{"a":tru}`},
		{"bad false", `{"a":fals3}`},
		{"bad null", `{"a":nul}`},
		{"bad null in a field", `{"ref":nuLL}`},
		{"bad true in a bool field", `{"deleted":trUe}`},
		{"truncated literal", `{"a":fa`},
		{"missing colon", `{"ref" "x"}`},
		{"missing value", `{"ref":}`},
		{"trailing comma in object", `{"ref":"x",}`},
		{"trailing comma in array", `{"a":[1,]}`},
		{"comma only", `{"a":[,]}`},
		{"empty key", `{"":1}`},
		{"key not a string", `{1:1}`},
		{"single quotes", `{'ref':'x'}`},
		{"object closed by bracket", `{"a":{]}`},
		{"array closed by brace", `{"a":[}`},
		{"unclosed object", `{"ref":"x"`},
		{"unclosed array", `{"a":[1`},
		{"nested 10000 deep", nested(9999, "[", "]")},
		{"nested 10001 deep", nested(10000, "[", "]")},
		{"nested objects 10000 deep", `{"x":` + strings.Repeat(`{"a":`, 9998) + `{}` + strings.Repeat(`}`, 9998) + `}`},
		{"nested objects 10001 deep", `{"x":` + strings.Repeat(`{"a":`, 9999) + `{}` + strings.Repeat(`}`, 9999) + `}`},
		{"repository nested 10001 deep", `{"repository":{"owner":{"x":` + strings.Repeat("[", 9998) + strings.Repeat("]", 9998) + `}}}`},
		{"repository nested 10000 deep", `{"repository":{"owner":{"x":` + strings.Repeat("[", 9997) + strings.Repeat("]", 9997) + `}}}`},
		{"mismatch nested 10001 deep", `{"ref":` + strings.Repeat("[", 10000) + strings.Repeat("]", 10000) + `}`},
		{"top-level array 10001 deep", strings.Repeat("[", 10001) + strings.Repeat("]", 10001)},
		{"top-level array 10000 deep", strings.Repeat("[", 10000) + strings.Repeat("]", 10000)},
		{"quote in error", `{"a":1'}`},
		{"non-ASCII in error", "{\"a\":1\xc3\xa9}"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			sameReading(t, []byte(tc.body))
		})
	}
}

// TestParsePushErrorsAreClear: what a sender of a bad push reads.
func TestParsePushErrorsAreClear(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ name, body, want string }{
		{"truncated", `{"ref":`, "push payload: unexpected end of JSON input"},
		{"not JSON", `ref=main`, "push payload: invalid character 'r' looking for beginning of value"},
		{"an array", `[1]`, "push payload: the payload is an array, not an object"},
		{"ref a number", `{"ref":1}`, "push payload: ref is a number, not a string"},
		{"owner login an object", `{"repository":{"owner":{"login":{}}}}`, "push payload: repository.owner.login is an object, not a string"},
		{"deleted a string", `{"deleted":"no"}`, "push payload: deleted is a string, not a boolean"},
		{"pusher an array", `{"pusher":[]}`, "push payload: pusher is an array, not an object"},
		{"too deep", strings.Repeat("[", 10001), "push payload: invalid character '[' exceeded max depth"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := parsePush([]byte(tc.body))
			if !errors.Is(err, build.ErrInvalid) || !strings.HasSuffix(err.Error(), tc.want) {
				t.Fatalf("parsePush(%q): %v, want an ErrInvalid ending %q", tc.body, err, tc.want)
			}
		})
	}
}

// FuzzDecodePush holds decodePush to encoding/json's reading of any body.
// Seeds: GitHub's sample payloads and the edge cases above
// (testdata/fuzz/FuzzDecodePush adds what the fuzzer finds).
func FuzzDecodePush(f *testing.F) {
	for _, body := range webhookBodies(f) {
		f.Add(body)
	}
	for _, s := range []string{
		`{"ref":"refs/heads/a","ref":null,"REF":"refs/heads/b","repository":{"name":"x"},"repository":{"owner":{"ſ":1,"login":"\ud83d\ude00"}}}`,
		`{"deleted":true,"deleted":"x","pusher":[{"name":1}],"sender":{"login":-0.5e-3}}`,
		"{\"ref\":\"\xff\\ud83d\\u0041\"}",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		sameReading(t, body)
	})
}

// TestPlainASCII checks the table str0's fast path reads.
func TestPlainASCII(t *testing.T) {
	t.Parallel()
	if len(plainASCII) != 256 {
		t.Fatalf("plainASCII has %d entries, want 256", len(plainASCII))
	}
	for c := range 256 {
		want := c >= ' ' && c < 0x80 && c != '"' && c != '\\'
		if got := plainASCII[c] == '1'; got != want {
			t.Errorf("plainASCII[%#x] says %v, want %v", c, got, want)
		}
	}
}
