package entrypoint

import (
	"bytes"
	"encoding/base64"
	"math/rand/v2"
	"net/url"
	"strings"
	"testing"
)

// maskAll is the masking of input written at once: every byte of an
// occurrence of a pattern is covered, a covered run is one Mask.
func maskAll(patterns [][]byte, input []byte) []byte {
	cover := make([]bool, len(input))
	for _, p := range patterns {
		for s := 0; s+len(p) <= len(input); s++ {
			if bytes.HasPrefix(input[s:], p) {
				for j := s; j < s+len(p); j++ {
					cover[j] = true
				}
			}
		}
	}
	var out []byte
	run := false
	for i, c := range input {
		if cover[i] {
			if !run {
				out = append(out, Mask...)
			}
			run = true
			continue
		}
		run = false
		out = append(out, c)
	}
	return out
}

func maskedInPieces(values [][]byte, pieces ...[]byte) []byte {
	var out bytes.Buffer
	m := newMasker(&out, values)
	for _, p := range pieces {
		m.Write(p)
	}
	m.Flush()
	return out.Bytes()
}

// TestMaskerSplitAtEveryPosition writes logs that hold secrets (and their
// encodings, overlapping, adjacent, at the edges) in two and in three
// pieces split at every position: the result is always that of one write,
// and no form of a secret is left.
func TestMaskerSplitAtEveryPosition(t *testing.T) {
	t.Parallel()
	secret := []byte("hunter2-s3cr3t")
	key := []byte("-----BEGIN KEY-----\nMIIEow-line-two\n-----END KEY-----\n")
	overlap := []byte("abcabcX")
	values := [][]byte{secret, key, overlap}
	b64 := base64.StdEncoding.EncodeToString(secret)
	for _, input := range []string{
		"token=" + string(secret) + "\n",
		string(secret),
		string(secret) + string(secret) + " " + string(secret),
		"before " + b64 + " after; url " + url.QueryEscape(string(key)),
		"key:\n" + string(key) + "only a line: MIIEow-line-two!",
		"abcabcabcX abcabcX abcab",
		"hunter2-s3cr3 (one byte short) hunter2-s3cr3t",
		"no secret here at all",
		"h",
		"",
	} {
		want := maskAll(maskedForms(values), []byte(input))
		for i := 0; i <= len(input); i++ {
			if got := maskedInPieces(values, []byte(input[:i]), []byte(input[i:])); !bytes.Equal(got, want) {
				t.Fatalf("input %q split at %d: got %q, want %q", input, i, got, want)
			}
			for j := i; j <= len(input) && len(input) < 80; j++ {
				if got := maskedInPieces(values, []byte(input[:i]), []byte(input[i:j]), []byte(input[j:])); !bytes.Equal(got, want) {
					t.Fatalf("input %q split at %d and %d: got %q, want %q", input, i, j, got, want)
				}
			}
		}
		for _, v := range values {
			for _, f := range maskForms(v) {
				if bytes.Contains(want, f) {
					t.Errorf("input %q masked to %q still holds %q", input, want, f)
				}
			}
		}
	}
	if got := string(maskedInPieces(values, []byte("a "+string(secret)+" b"))); got != "a *** b" {
		t.Errorf("masked = %q, want %q", got, "a *** b")
	}
}

func maskedForms(values [][]byte) [][]byte {
	var out [][]byte
	for _, v := range values {
		out = append(out, maskForms(v)...)
	}
	return out
}

// TestMaskerByteAtATime: a log written one byte at a time, with random
// text around secrets, masks as one write does.
func TestMaskerByteAtATime(t *testing.T) {
	t.Parallel()
	r := rand.New(rand.NewPCG(1, 2))
	values := [][]byte{[]byte("s3cret-value-x"), []byte("aaaa")}
	for range 50 {
		var in []byte
		for range 40 {
			switch r.IntN(4) {
			case 0:
				in = append(in, values[r.IntN(2)]...)
			case 1:
				in = append(in, values[0][:r.IntN(len(values[0]))]...)
			default:
				in = append(in, "abc s\n"[r.IntN(6)])
			}
		}
		var pieces [][]byte
		for i := range in {
			pieces = append(pieces, in[i:i+1])
		}
		want := maskAll(maskedForms(values), in)
		if got := maskedInPieces(values, pieces...); !bytes.Equal(got, want) {
			t.Fatalf("%q byte by byte: got %q, want %q", in, got, want)
		}
	}
}

// TestMaskerPassesOnWhatCannotBeASecret: text that cannot begin a secret
// is written at once, not held until the end (a followed log must not
// lag); only a possible beginning waits.
func TestMaskerPassesOnWhatCannotBeASecret(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	m := newMasker(&out, [][]byte{[]byte("s3cret")})
	m.Write([]byte("compiling...\n"))
	if out.String() != "compiling...\n" {
		t.Errorf("after a line without a secret: %q written, want all of it", out.String())
	}
	m.Write([]byte("token s3c"))
	if out.String() != "compiling...\ntoken " {
		t.Errorf("after a possible beginning: %q written, want it held", out.String())
	}
	m.Write([]byte("ret\n"))
	m.Flush()
	if out.String() != "compiling...\ntoken ***\n" {
		t.Errorf("got %q", out.String())
	}
}

func TestMaskForms(t *testing.T) {
	t.Parallel()
	forms := func(v string) []string {
		var out []string
		for _, f := range maskForms([]byte(v)) {
			out = append(out, string(f))
		}
		return out
	}
	got := forms("pa ss/wd+\n")
	for _, want := range []string{"pa ss/wd+\n", "pa ss/wd+", base64.RawStdEncoding.EncodeToString([]byte("pa ss/wd+")),
		base64.RawURLEncoding.EncodeToString([]byte("pa ss/wd+\n")), "pa+ss%2Fwd%2B", "pa%20ss%2Fwd+"} {
		if !strings.Contains("\x00"+strings.Join(got, "\x00")+"\x00", "\x00"+want+"\x00") {
			t.Errorf("maskForms() = %q, want it to hold %q", got, want)
		}
	}
	if got := forms("ab"); len(got) != 0 {
		t.Errorf("maskForms(\"ab\") = %q, want none: too short to mask", got)
	}
}
