package sqlite_test

import (
	"testing"

	"github.com/decap-ci/decap/internal/build"
	"github.com/decap-ci/decap/internal/buildtest"
	"github.com/decap-ci/decap/internal/sqlite"
)

func TestPullRequests(t *testing.T) {
	t.Parallel()
	buildtest.TestPullRequests(t, func(t *testing.T) build.PullRequests {
		return sqlite.NewPullRequests(openDB(t, nil))
	})
}
