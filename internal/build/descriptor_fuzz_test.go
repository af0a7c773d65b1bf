package build

import (
	"bytes"
	"encoding/json"
	"errors"
	"regexp"
	"regexp/syntax"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// closerAfterValue reports whether the first JSON value in data is followed,
// after white space, by a ']' or '}': what json.Decoder.More does not count
// as more data.
func closerAfterValue(data []byte) bool {
	dec := json.NewDecoder(bytes.NewReader(data))
	var v json.RawMessage
	if err := dec.Decode(&v); err != nil {
		return false
	}
	rest := bytes.TrimLeft(data[dec.InputOffset():], " \t\r\n")
	return len(rest) > 0 && (rest[0] == ']' || rest[0] == '}')
}

// wholeMatch compiles expr so that it matches only whole strings, by
// anchoring its parsed syntax tree rather than its text: the meaning of
// "managedRefRegex is anchored" written independently of ParseDescriptor.
func wholeMatch(expr string) (*regexp.Regexp, error) {
	re, err := syntax.Parse(expr, syntax.Perl)
	if err != nil {
		return nil, err
	}
	anchored := &syntax.Regexp{Op: syntax.OpConcat, Flags: syntax.Perl, Sub: []*syntax.Regexp{
		{Op: syntax.OpBeginText}, {Op: syntax.OpCapture, Sub: []*syntax.Regexp{re}}, {Op: syntax.OpEndText},
	}}
	return regexp.Compile(anchored.String())
}

// FuzzParseDescriptor feeds arbitrary project.json content to
// ParseDescriptor: anyone who can push to the build-scripts repository
// writes it. It must never panic and must reject with an error wrapping
// ErrInvalid. A descriptor it accepts comes from one JSON value and has its managedRefRegex compiled
// (Manages never compiles again, never panics, and matches exactly the
// refs the regex matches as a whole, as documented), a timeout within bounds, and survives a JSON
// round trip unchanged.
//
// It is an internal test so that it can see the compiled regex. The seeds
// (testdata/fuzz/FuzzParseDescriptor) start from the example repository's
// descriptors and run with every plain `go test`.
func FuzzParseDescriptor(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte, ref string) {
		d, err := ParseDescriptor(data)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("ParseDescriptor(%q): error %v does not wrap ErrInvalid", data, err)
			}
			return
		}
		if !json.Valid(data) {
			if closerAfterValue(data) {
				// Reported, not fixed yet: as in Decode, dec.More() is
				// false before a ']' or '}', so `{"buildImage":"x"}}` is
				// accepted.
				t.Fatalf("regression (fixed bug, see docs/FUZZING.md): ParseDescriptor(%q) accepts data after the JSON object that starts with ] or }", data)
			}
			t.Fatalf("ParseDescriptor(%q) accepted data that is not one JSON value", data)
		}
		if d.BuildImage == "" {
			t.Fatalf("ParseDescriptor(%q) accepted a descriptor without buildImage", data)
		}
		if (d.managed == nil) != (d.ManagedRefRegex == "") {
			t.Fatalf("ParseDescriptor(%q): managedRefRegex %q, compiled %v; want it compiled exactly when set", data, d.ManagedRefRegex, d.managed)
		}
		if d.Supersede != nil && (d.Supersede.except == nil) != (d.Supersede.ExceptRefRegex == "") {
			t.Fatalf("ParseDescriptor(%q): supersede.exceptRefRegex %q, compiled %v; want it compiled exactly when set", data, d.Supersede.ExceptRefRegex, d.Supersede.except)
		}
		if n := d.InfraRetries(-1); n < 0 || n > MaxInfraRetries {
			t.Fatalf("ParseDescriptor(%q): InfraRetries() = %d, want within [0, %d]", data, n, MaxInfraRetries)
		}
		if d.TimeoutSeconds > int(MaxBuildTimeout/time.Second) {
			// Reported, not fixed yet: validate multiplies the seconds into
			// a time.Duration, which overflows above 9223372036 seconds,
			// so {"buildTimeoutSeconds": 9223372036854775807} passes and
			// Timeout() is -1s.
			t.Fatalf("regression (fixed bug, see docs/FUZZING.md): ParseDescriptor(%q) accepts buildTimeoutSeconds %d, over the maximum %d; Timeout() = %s",
				data, d.TimeoutSeconds, int(MaxBuildTimeout/time.Second), d.Timeout())
		}
		if to := d.Timeout(); to <= 0 || to > MaxBuildTimeout {
			t.Fatalf("ParseDescriptor(%q): Timeout() = %s, want within (0, %s]", data, to, MaxBuildTimeout)
		}
		if len(d.Sidecars) > 8 {
			t.Fatalf("ParseDescriptor(%q) accepted %d sidecars", data, len(d.Sidecars))
		}
		got := d.Manages(ref)
		if d.ManagedRefRegex == "" {
			if !got {
				t.Fatalf("Manages(%q) = false without a managedRefRegex, want every ref managed", ref)
			}
		} else {
			whole, err := wholeMatch(d.ManagedRefRegex)
			if err != nil {
				// Reported, not fixed yet: validate compiles only
				// "^(?:" + regex + ")$", so a regex that does not compile
				// on its own but closes that group, such as "main)|(.*",
				// is accepted and is no longer anchored: it manages every
				// ref.
				t.Fatalf("regression (fixed bug, see docs/FUZZING.md): ParseDescriptor(%q) accepts managedRefRegex %q, which does not compile on its own: %v", data, d.ManagedRefRegex, err)
			}
			if want := whole.MatchString(ref); got != want {
				t.Fatalf("managedRefRegex %q: Manages(%q) = %t, want %t (the whole ref must match)", d.ManagedRefRegex, ref, got, want)
			}
			// A descriptor built by hand compiles on demand; it must agree.
			byHand := d
			byHand.managed = nil
			if byHand.Manages(ref) != got {
				t.Fatalf("managedRefRegex %q: Manages(%q) differs between a parsed and a hand-built descriptor", d.ManagedRefRegex, ref)
			}
		}

		out, err := json.Marshal(d)
		if err != nil {
			t.Fatalf("ParseDescriptor(%q) accepted %+v, which does not marshal: %v", data, d, err)
		}
		back, err := ParseDescriptor(out)
		if err != nil {
			t.Fatalf("ParseDescriptor(%q) accepted it, but not its re-encoding %s: %v", data, out, err)
		}
		if diff := cmp.Diff(d, back, cmpopts.IgnoreUnexported(Descriptor{}, Supersede{}), cmpopts.EquateEmpty()); diff != "" {
			t.Fatalf("ParseDescriptor(%q), Marshal, ParseDescriptor changed it (-first +second):\n%s", data, diff)
		}
	})
}
