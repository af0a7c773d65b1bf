package entrypoint

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/decap-ci/decap/internal/build"
)

// TimesResolution is the line-time index's first resolution: a new pair
// is kept only when at least this long passed since the one before.
const TimesResolution = 100 * time.Millisecond

// liveTimesEvery is how often, at most, the live index file is rewritten.
const liveTimesEvery = time.Second

// lineTimes is the line-time index of a console log (build.LogTimes): fed
// every write to the log with the time it was made, it keeps a [line, ms]
// pair for the first line begun in a write when at least step passed since
// the last pair. Whatever the script prints, it holds at most max pairs:
// when full, step doubles and pairs closer than that are merged, as often
// as it takes to halve them. Work per write is a count of its line breaks.
// A write costs no file I/O except the live file's, at most once per
// liveTimesEvery. It is safe for concurrent use.
type lineTimes struct {
	mu      sync.Mutex
	start   time.Time
	step    time.Duration
	max     int
	lines   int64 // lines begun so far
	midLine bool  // the last byte written was not a line break
	times   [][2]int64

	// live, if set, is the file the index is written to as it grows
	// (the same JSON as the uploaded object), through live+".tmp".
	live    string
	written time.Time
	timer   *time.Timer
	closed  bool // no live write after close
	liveErr error
}

func newLineTimes(start time.Time, live string) *lineTimes {
	return &lineTimes{start: start, step: TimesResolution, max: build.MaxLogTimes, live: live}
}

// wrote records that p was written to the log at now.
func (x *lineTimes) wrote(p []byte, now time.Time) {
	if len(p) == 0 {
		return
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	begun := int64(bytes.Count(p, []byte{'\n'}))
	if p[len(p)-1] == '\n' {
		begun-- // that break begins no line in p
	}
	if !x.midLine {
		begun++ // p's first byte begins a line
	}
	x.midLine = p[len(p)-1] != '\n'
	if begun == 0 {
		return
	}
	first := x.lines + 1
	x.lines += begun
	ms := max(now.Sub(x.start).Milliseconds(), 0)
	if n := len(x.times); n > 0 {
		last := x.times[n-1][1]
		if ms < last+x.step.Milliseconds() {
			return // the clock went back, or too soon: the last pair stands for it
		}
	}
	x.times = append(x.times, [2]int64{first, ms})
	if len(x.times) > x.max {
		x.coarsen()
	}
	x.liveUpdate(now)
}

// coarsen doubles step and merges pairs closer than it until at most half
// of max are left. The first pair always stays.
func (x *lineTimes) coarsen() {
	for len(x.times) > x.max/2 {
		x.step *= 2
		kept := x.times[:1]
		for _, p := range x.times[1:] {
			if p[1] >= kept[len(kept)-1][1]+x.step.Milliseconds() {
				kept = append(kept, p)
			}
		}
		x.times = kept
	}
}

// snapshot returns the index as it stands. The caller holds mu.
func (x *lineTimes) snapshot() build.LogTimes {
	return build.LogTimes{
		Start:        x.start.UTC(),
		ResolutionMs: x.step.Milliseconds(),
		Lines:        x.lines,
		Times:        append([][2]int64{}, x.times...),
	}
}

// liveUpdate writes the live file now, or schedules it if it was written
// less than liveTimesEvery ago. The caller holds mu.
func (x *lineTimes) liveUpdate(now time.Time) {
	if x.live == "" || x.timer != nil {
		return
	}
	if wait := liveTimesEvery - now.Sub(x.written); wait > 0 && !x.written.IsZero() {
		x.timer = time.AfterFunc(wait, func() {
			x.mu.Lock()
			defer x.mu.Unlock()
			x.timer = nil
			if !x.closed {
				x.writeLive(time.Now())
			}
		})
		return
	}
	x.writeLive(now)
}

// writeLive replaces the live file with the index. The caller holds mu.
// The first error is kept for close; the build goes on without.
func (x *lineTimes) writeLive(now time.Time) {
	if x.liveErr != nil {
		return
	}
	x.written = now
	data, err := json.Marshal(x.snapshot())
	if err == nil {
		tmp := x.live + ".tmp"
		if err = os.WriteFile(tmp, data, 0o600); err == nil {
			err = os.Rename(tmp, x.live)
		}
	}
	if err != nil {
		x.liveErr = fmt.Errorf("write live line times: %w", err)
	}
}

// close stops the live file's updates, writes it a last time, and returns
// the index and the live file's first error.
func (x *lineTimes) close() (build.LogTimes, error) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.timer != nil {
		x.timer.Stop()
		x.timer = nil
	}
	x.closed = true
	if x.live != "" {
		x.writeLive(time.Now())
	}
	return x.snapshot(), x.liveErr
}

// writeTimes writes t as gzipped JSON, the object under build.LogTimesKey.
func writeTimes(w io.Writer, t build.LogTimes) error {
	zw := gzip.NewWriter(w)
	if err := json.NewEncoder(zw).Encode(t); err != nil {
		return fmt.Errorf("encode line times: %w", err)
	}
	if err := zw.Close(); err != nil {
		return fmt.Errorf("compress line times: %w", err)
	}
	return nil
}
