package buildtest_test

import (
	"testing"

	"github.com/decap-ci/decap/internal/buildtest"
)

func TestFakeWebhooks(t *testing.T) {
	t.Parallel()
	buildtest.TestWebhooks(t, func(t *testing.T, clock *buildtest.Clock) buildtest.Webhooks {
		return buildtest.NewWebhooks(clock.Now)
	})
}
