package buildtest_test

import (
	"testing"

	"github.com/decap-ci/decap/internal/build"
	"github.com/decap-ci/decap/internal/buildtest"
)

func TestFakePullRequests(t *testing.T) {
	t.Parallel()
	buildtest.TestPullRequests(t, func(t *testing.T) build.PullRequests { return buildtest.NewPullRequests() })
}
