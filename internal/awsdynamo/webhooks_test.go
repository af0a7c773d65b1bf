package awsdynamo_test

import (
	"testing"

	"github.com/decap-ci/decap/internal/awsdynamo"
	"github.com/decap-ci/decap/internal/buildtest"
)

// TestWebhooks runs the Webhooks contract on the builds table (moto).
func TestWebhooks(t *testing.T) {
	t.Parallel()
	client := newClient(t)
	buildtest.TestWebhooks(t, func(t *testing.T, clock *buildtest.Clock) buildtest.Webhooks {
		return awsdynamo.NewWebhooks(client, newTables(t, client, buildsOnly).Builds, clock.Now)
	})
}
