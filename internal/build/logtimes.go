package build

import (
	"errors"
	"fmt"
	"time"
)

// LogTimesKey is the object key of a build's line-time index (LogTimes,
// gzipped JSON), beside its console log. Like LogKey it is derived from
// the build ID alone: a build cannot point its record at another object.
func LogTimesKey(id ID) string { return "logs/" + string(id) + "/console.times.json.gz" }

// Bounds of a line-time index. The entrypoint keeps at most MaxLogTimes
// pairs, whatever the build prints (see LogTimes); a reader refuses more,
// and JSON longer than MaxLogTimesSize, since on Kubernetes the build's
// own container uploads the object and may have written anything.
const (
	MaxLogTimes = 4096
	// MaxLogTimesSize is MaxLogTimes pairs of the largest numbers
	// (19 digits each), and room for the rest.
	MaxLogTimesSize = MaxLogTimes*44 + 1024
)

// LogTimes says when the lines of a console log began: the line-time
// index the entrypoint keeps while it writes the log. Times is a list of
// [line, ms] pairs, lines counted from 1 as the raw log numbers them (the
// text after the (n-1)th line break is line n), both ascending: line
// `line` began ms milliseconds after Start. A line without a pair of its
// own began at the time of the last pair before it or up to about twice
// ResolutionMs later: a pair is kept only when at least ResolutionMs
// passed since the one before, so a burst of lines costs one pair. Lines
// is how many lines the index covers (a line after it has no known time
// yet).
type LogTimes struct {
	Start        time.Time  `json:"start"`
	ResolutionMs int64      `json:"resolutionMs"`
	Lines        int64      `json:"lines"`
	Times        [][2]int64 `json:"times"`
}

// Validate checks what a reader of a stored index relies on: at most
// MaxLogTimes pairs, lines from 1 to Lines and ascending, times from 0
// and not decreasing. Its errors wrap ErrInvalid.
func (t LogTimes) Validate() error {
	err := t.validate()
	if err != nil {
		return fmt.Errorf("%w: line times: %v", ErrInvalid, err)
	}
	return nil
}

func (t LogTimes) validate() error {
	switch {
	case len(t.Times) > MaxLogTimes:
		return fmt.Errorf("%d pairs, at most %d allowed", len(t.Times), MaxLogTimes)
	case t.ResolutionMs < 0 || t.Lines < 0:
		return errors.New("negative resolution or line count")
	}
	var line, ms int64
	for i, p := range t.Times {
		if p[0] <= line || p[0] > t.Lines {
			return fmt.Errorf("pair %d: line %d out of order or past line %d", i, p[0], t.Lines)
		}
		if p[1] < ms {
			return fmt.Errorf("pair %d: time %d ms before the one before it or negative", i, p[1])
		}
		line, ms = p[0], p[1]
	}
	return nil
}
