package entrypoint

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/decap-ci/decap/internal/build"
)

var t0 = time.Date(2026, 12, 6, 5, 0, 0, 0, time.UTC)

// timeOf returns the time the index gives line n: that of the last pair
// at or before it.
func timeOf(t *testing.T, x build.LogTimes, n int64) int64 {
	t.Helper()
	i := sort.Search(len(x.Times), func(i int) bool { return x.Times[i][0] > n })
	if i == 0 {
		t.Fatalf("line %d: no pair at or before it in %v", n, x.Times[:min(len(x.Times), 5)])
	}
	return x.Times[i-1][1]
}

// TestLineTimesIndex feeds writes of known times and checks each line's
// time from the index.
func TestLineTimesIndex(t *testing.T) {
	t.Parallel()
	x := newLineTimes(t0, "")
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	x.wrote([]byte("decap: build\n"), at(0)) // line 1
	x.wrote([]byte("a\nb\n"), at(10))        // 2, 3: too soon for a pair
	x.wrote([]byte("c"), at(500))            // 4 begins
	x.wrote([]byte(" still c\nd"), at(2000)) // 5 begins
	x.wrote([]byte("\n"), at(3000))          // ends 5, begins nothing
	x.wrote([]byte("\n\n"), at(4000))        // 6 and 7, empty
	x.wrote([]byte("late\n"), at(3900))      // 8: the clock went back
	x.wrote([]byte("e\nf\ng\n"), at(12_345)) // 9, 10, 11
	x.wrote([]byte("h\n"), at(12_345+99))    // 12: within the resolution
	got, err := x.close()
	if err != nil {
		t.Fatal(err)
	}
	want := build.LogTimes{Start: t0, ResolutionMs: 100, Lines: 12, Times: [][2]int64{{1, 0}, {4, 500}, {5, 2000}, {6, 4000}, {9, 12_345}}}
	gotJSON, _ := json.Marshal(got)
	wantJSON, _ := json.Marshal(want)
	if !bytes.Equal(gotJSON, wantJSON) {
		t.Errorf("index %s\nwant  %s", gotJSON, wantJSON)
	}
	if err := got.Validate(); err != nil {
		t.Errorf("Validate: %v", err)
	}
}

// TestLineTimesHostileOutput: however many lines a build prints, and
// however it prints them, the index stays within build.MaxLogTimes pairs
// and build.MaxLogTimesSize bytes, valid, and each line's time is within
// twice the final resolution of when it began.
func TestLineTimesHostileOutput(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(1, 2))
	for _, tc := range []struct {
		name  string
		write func(i int) []byte
		every time.Duration // between writes
		n     int           // writes
	}{
		{"a million tiny lines", func(int) []byte { return []byte("x\n") }, 3 * time.Millisecond, 1_000_000},
		{"bursts of many lines", func(int) []byte { return bytes.Repeat([]byte("y\n"), 1000) }, 150 * time.Millisecond, 5000},
		{"no line breaks", func(int) []byte { return []byte(strings.Repeat("z", 4096)) }, time.Millisecond, 100_000},
		{"binary junk", func(int) []byte {
			b := make([]byte, 512)
			for i := range b {
				b[i] = byte(rng.UintN(256))
			}
			return b
		}, 40 * time.Millisecond, 100_000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			x := newLineTimes(t0, "")
			var starts []int32 // when each line began, in ms
			mid := false
			for i := range tc.n {
				p := tc.write(i)
				now := t0.Add(time.Duration(i) * tc.every)
				ms := int32(now.Sub(t0).Milliseconds())
				for _, c := range p {
					if !mid {
						starts = append(starts, ms)
					}
					mid = c != '\n'
				}
				x.wrote(p, now)
			}
			got, err := x.close()
			if err != nil {
				t.Fatal(err)
			}
			if err := got.Validate(); err != nil {
				t.Fatalf("Validate: %v", err)
			}
			if got.Lines != int64(len(starts)) {
				t.Errorf("index covers %d lines, the output has %d", got.Lines, len(starts))
			}
			if len(got.Times) > build.MaxLogTimes {
				t.Errorf("%d pairs, want at most %d", len(got.Times), build.MaxLogTimes)
			}
			data, _ := json.Marshal(got)
			if len(data) > build.MaxLogTimesSize {
				t.Errorf("%d bytes of JSON, want at most %d", len(data), build.MaxLogTimesSize)
			}
			for n := int64(1); n <= got.Lines; n += 1 + n/50 {
				began := int64(starts[n-1])
				if at := timeOf(t, got, n); at > began || began-at >= 2*got.ResolutionMs {
					t.Fatalf("line %d began at %d ms, the index says %d (resolution %d ms)", n, began, at, got.ResolutionMs)
				}
			}
			t.Logf("%d lines, %d pairs, resolution %d ms, %d bytes", got.Lines, len(got.Times), got.ResolutionMs, len(data))
		})
	}
}

// TestLineTimesSizeBound: a full index of the largest numbers fits
// build.MaxLogTimesSize.
func TestLineTimesSizeBound(t *testing.T) {
	t.Parallel()
	x := build.LogTimes{Start: t0, ResolutionMs: 1 << 62, Lines: 1<<63 - 1}
	for i := range build.MaxLogTimes {
		x.Times = append(x.Times, [2]int64{1<<63 - 1 - int64(build.MaxLogTimes-i), 1<<62 + int64(i)})
	}
	data, _ := json.Marshal(x)
	if len(data) > build.MaxLogTimesSize {
		t.Errorf("%d bytes, want at most %d", len(data), build.MaxLogTimesSize)
	}
}

// TestLineTimesLive: the live file is written at once, then at most once
// per liveTimesEvery, and last when the index is closed.
func TestLineTimesLive(t *testing.T) {
	t.Parallel()
	live := filepath.Join(t.TempDir(), "console.times.json")
	x := newLineTimes(time.Now(), live)
	read := func() build.LogTimes {
		t.Helper()
		data, err := os.ReadFile(live)
		if err != nil {
			t.Fatalf("live file: %v", err)
		}
		var got build.LogTimes
		if err := json.Unmarshal(data, &got); err != nil {
			t.Fatalf("live file: %v", err)
		}
		return got
	}
	x.wrote([]byte("one\n"), time.Now())
	if got := read(); got.Lines != 1 || len(got.Times) != 1 {
		t.Fatalf("live index after the first line: %+v", got)
	}
	time.Sleep(2 * TimesResolution)
	x.wrote([]byte("two\n"), time.Now()) // within liveTimesEvery: scheduled
	if got := read(); got.Lines != 1 {
		t.Errorf("live index rewritten %v after the last write: %+v", 2*TimesResolution, got)
	}
	deadline := time.Now().Add(10 * liveTimesEvery)
	for read().Lines != 2 {
		if time.Now().After(deadline) {
			t.Fatalf("live index not rewritten after %v: %+v", 10*liveTimesEvery, read())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if got := read(); len(got.Times) != 2 {
		t.Errorf("live index: %+v, want two pairs", got)
	}
	x.wrote([]byte("three\n"), time.Now().Add(time.Second))
	final, err := x.close()
	if err != nil {
		t.Fatal(err)
	}
	if got := read(); got.Lines != 3 || len(got.Times) != len(final.Times) {
		t.Errorf("live index after close: %+v, want %+v", got, final)
	}
}
