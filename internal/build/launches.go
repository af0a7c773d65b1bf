package build

import (
	"context"
	"time"
)

// Launches writes the two moments of a launch that a dispatcher otherwise
// writes in separate calls to Locks, Records and the queue, each in one
// write: the claim (the key's lock and a slot, and the record claimed for
// the launch) and the start (the running lease, the running record, and
// the delete of the request's message). Each does all of its parts or
// none, so a caller that gets an error finds the store as it was and may
// go on with the separate calls.
//
// The embedded store implements it (sqlite.Launches); a backend whose
// queue is not in its database (SQS beside DynamoDB) does not, and the
// dispatcher makes the separate calls there.
type Launches interface {
	// Claim takes l.Key for l.BuildID with a slot of cap, as
	// Locks.Acquire does, and saves rec, the record claimed for the
	// launch (Record.Launching), as Records.Save does; or neither. It
	// fails with ErrLocked or ErrCapReached when the lock is refused and
	// with ErrConflict when the stored record is further along than rec.
	Claim(ctx context.Context, l Lease, cap int, rec Record) error
	// Started extends the lease of rec's build on key to until, as
	// Locks.Extend does, saves rec, its running record (Record.Start),
	// and deletes the message whose delivery receipt is receipt; or does
	// none of it. It fails with ErrNotFound when the build holds no
	// unexpired lease on key and with ErrConflict when the stored record
	// is further along than rec. A stale or unknown receipt (or "") is no
	// error: the message was received again, and that delivery settles
	// it; deleted is false then.
	Started(ctx context.Context, key string, until time.Time, rec Record, receipt string) (deleted bool, err error)
}
