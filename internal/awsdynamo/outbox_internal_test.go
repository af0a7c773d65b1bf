package awsdynamo

import (
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/decap-ci/decap/internal/build"
)

// TestRecordTooLargeForAnItem checks DynamoDB's 400 KB item limit, which
// moto does not enforce, before any call (the store has no client): a
// record that with its own event passes it is build.ErrInvalid; one that
// passes it only with the events not yet forwarded is
// build.ErrUnavailable (it fits once a forwarder catches up); one just
// under it is put.
func TestRecordTooLargeForAnItem(t *testing.T) {
	t.Parallel()
	base := time.Date(2025, time.March, 1, 12, 0, 0, 0, time.UTC)
	s := NewRecords(nil, "builds").WithEvents()
	r := build.Record{BuildID: build.NewID(base), Team: "t", Project: "p", Ref: "main", Status: build.StatusFailed, QueuedAt: base}

	r.Reason = strings.Repeat("x", maxItemBytes/2)
	if _, err := s.putWithEvent(r, nil, "token", base); !errors.Is(err, build.ErrInvalid) {
		t.Errorf("putWithEvent() of a %d-byte reason (twice in the item) error = %v, want ErrInvalid", len(r.Reason), err)
	}

	r.Reason = strings.Repeat("x", maxItemBytes/2-2048)
	in, err := s.putWithEvent(r, nil, "token", base)
	if err != nil {
		t.Fatalf("putWithEvent() of a record just under the limit error = %v", err)
	}
	if n := itemSize(in.Item); n > maxItemBytes || n < maxItemBytes-8192 {
		t.Errorf("the item just under the limit counts %d bytes, want %d to %d", n, maxItemBytes-8192, maxItemBytes)
	}

	// A build with many changes not forwarded: each a snapshot more.
	r.Reason = strings.Repeat("y", 4096)
	prev := storedRecord{outbox: outboxState{Version: 0, Pending: map[string]pendingEvent{}}}
	for v := 1; ; v++ {
		in, err := s.putWithEvent(r, &prev, "token", base)
		if errors.Is(err, build.ErrUnavailable) {
			if v < 50 {
				t.Errorf("refused at version %d with %d pending events of ~4 KB, want ~95", v, len(prev.outbox.Pending)+1)
			}
			break
		}
		if err != nil {
			t.Fatalf("putWithEvent() version %d error = %v", v, err)
		}
		if n := itemSize(in.Item); n > maxItemBytes {
			t.Fatalf("an item of %d bytes passed the check", n)
		}
		prev.outbox.Version = v
		prev.outbox.Pending[strconv.Itoa(v)] = pendingEvent{At: base.UnixNano(), Record: itemFor(r)}
	}
}
