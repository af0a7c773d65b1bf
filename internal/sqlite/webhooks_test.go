package sqlite_test

import (
	"testing"

	"github.com/decap-ci/decap/internal/buildtest"
	"github.com/decap-ci/decap/internal/sqlite"
)

func TestWebhooks(t *testing.T) {
	t.Parallel()
	buildtest.TestWebhooks(t, func(t *testing.T, clock *buildtest.Clock) buildtest.Webhooks {
		return sqlite.NewWebhooks(openDB(t, clock))
	})
}
