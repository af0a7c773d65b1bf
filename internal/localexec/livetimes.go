package localexec

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/decap-ci/decap/internal/build"
)

// ConsoleTimesFile, in a build's directory, is its console log's
// line-time index (build.LogTimes as JSON) as it grows: decap-entrypoint
// replaces it at most once a second while the build runs.
const ConsoleTimesFile = "console.times.json"

// OpenLiveTimes opens the line-time index of the build's console log as
// the entrypoint last wrote it (build.LogTimes as JSON; it is replaced,
// never written in place, so a reader sees one whole version). It gives
// build.ErrNotFound when there is no such build or no index yet.
func (e *Executor) OpenLiveTimes(id build.ID) (io.ReadCloser, error) {
	dir, err := e.dir(id)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(filepath.Join(dir, ConsoleTimesFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("open live line times %s: %w", id, build.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("open live line times %s: %w", id, err)
	}
	return f, nil
}
