package awsdynamo_test

import (
	"sync"
	"testing"

	"github.com/decap-ci/decap/internal/awsdynamo"
	"github.com/decap-ci/decap/internal/build"
	"github.com/decap-ci/decap/internal/buildtest"
)

// The outbox's contract suite on moto, its calls taking turns (see
// serialized: moto checks a transaction's conditions and then writes,
// and rolls a cancelled one back by restoring copies of whole tables,
// so racing requests there can undo each other's writes; DynamoDB
// isolates transactions).

func TestEventOutbox(t *testing.T) {
	t.Parallel()
	client := newClient(t)
	var mu sync.Mutex
	buildtest.TestEventOutbox(t, func(t *testing.T) (buildtest.Records, build.EventOutbox) {
		tables := newTables(t, client, buildsAndOutbox)
		s := awsdynamo.NewRecords(serialized{&mu, client}, tables.Builds).WithOutbox(tables.EventsOutbox)
		return s, s.Outbox()
	})
}

// TestEventOutboxWithRetriedWrites runs the suite with every write sent
// twice: each retried transaction must still be one change, one event.
func TestEventOutboxWithRetriedWrites(t *testing.T) {
	t.Parallel()
	client := newClient(t)
	var mu sync.Mutex
	buildtest.TestEventOutbox(t, func(t *testing.T) (buildtest.Records, build.EventOutbox) {
		tables := newTables(t, client, buildsAndOutbox)
		s := awsdynamo.NewRecords(serialized{&mu, retriedWrites{client}}, tables.Builds).WithOutbox(tables.EventsOutbox)
		return s, s.Outbox()
	})
}
