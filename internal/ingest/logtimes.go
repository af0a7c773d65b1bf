package ingest

import (
	"bufio"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/decap-ci/decap/internal/api"
	"github.com/decap-ci/decap/internal/build"
)

// LiveTimes is a LiveLogs that can also read the line-time index of a
// running build's log as far as it is written (build.LogTimes as JSON;
// the local executor's). build.ErrNotFound when there is none (yet).
type LiveTimes interface {
	OpenLiveTimes(id build.ID) (io.ReadCloser, error)
}

// logTimes answers GET .../log?times=1: when the log's lines began
// (api.LogTimes). An ended build's index is the object under
// build.LogTimesKey, a key of Decap's making, never one the build
// reported; a running build's is its executor's live index, where it
// keeps one (the local executor), 404 elsewhere (the kubernetes
// executor's builds upload it when they end). Either was written where
// the build runs, so it is read like any input: at most
// build.MaxLogTimesSize bytes of JSON (however well it compresses),
// validated, and read a few at a time (it shares the log tails' turns).
func (s *Server) logTimes(c echo.Context, rec build.Record) error {
	ctx := c.Request().Context()
	var r io.Reader
	complete := true
	switch {
	case rec.LogKey == "" && !rec.Status.Final():
		live, ok := s.deps.LiveLogs.(LiveTimes)
		if !ok {
			return fmt.Errorf("%w: build %s has no line times yet: they are stored when it ends", build.ErrNotFound, rec.BuildID)
		}
		f, err := live.OpenLiveTimes(rec.BuildID)
		if err != nil {
			return fmt.Errorf("line times of %s: %w", rec.BuildID, err)
		}
		defer f.Close()
		r, complete = f, false
	case rec.LogKey == "":
		return fmt.Errorf("%w: build %s has no stored log (status %s)", build.ErrNotFound, rec.BuildID, rec.Status)
	default:
		obj, err := s.deps.Blobs.Open(ctx, build.LogTimesKey(rec.BuildID))
		if errors.Is(err, build.ErrNotFound) {
			return fmt.Errorf("%w: build %s stored no line times with its log", build.ErrNotFound, rec.BuildID)
		}
		if err != nil {
			return fmt.Errorf("open line times of %s: %w", rec.BuildID, err)
		}
		defer obj.Close()
		zr, err := gzip.NewReader(bufio.NewReader(obj))
		if err != nil {
			return fmt.Errorf("%w: the line times of build %s are not gzip", build.ErrNotFound, rec.BuildID)
		}
		defer zr.Close()
		r = zr
	}
	select {
	case s.tails <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	times, err := readLogTimes(r)
	<-s.tails
	if err != nil {
		return fmt.Errorf("%w: build %s has no valid line times: %v", build.ErrNotFound, rec.BuildID, err)
	}
	return c.JSON(http.StatusOK, api.LogTimesOf(times, complete))
}

// readLogTimes decodes and validates an index of at most
// build.MaxLogTimesSize bytes.
func readLogTimes(r io.Reader) (build.LogTimes, error) {
	data, err := io.ReadAll(io.LimitReader(r, build.MaxLogTimesSize+1))
	if err != nil {
		return build.LogTimes{}, fmt.Errorf("read: %w", err)
	}
	if len(data) > build.MaxLogTimesSize {
		return build.LogTimes{}, fmt.Errorf("more than %d bytes", build.MaxLogTimesSize)
	}
	var t build.LogTimes
	if err := json.Unmarshal(data, &t); err != nil {
		return build.LogTimes{}, fmt.Errorf("not JSON of line times: %w", err)
	}
	if err := t.Validate(); err != nil {
		return build.LogTimes{}, err
	}
	return t, nil
}
