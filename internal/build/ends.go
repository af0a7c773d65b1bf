package build

import "context"

// Ends writes a build's end in one write where the store can: its final
// record, the release of its lock and the wake-up of the request deferred
// behind that lock, which a reaper otherwise writes in separate calls to
// Records, Locks and the queue. It does all of it or none, so a caller
// that gets an error finds the store as it was and may go on with the
// separate calls.
//
// The embedded store implements it (sqlite.Ends); a backend whose queue
// is not in its database (SQS beside DynamoDB) does not, and the reaper
// makes the separate calls there.
type Ends interface {
	// Ended saves rec, a final record, as Records.Save does; releases
	// key if rec's build holds it, as Locks.Release does; and makes the
	// message whose receipt Locks.Await recorded on the released lease
	// visible at once, as Queue.ChangeVisibility(receipt, 0) does (a
	// stale receipt is skipped). It fails with ErrConflict when the
	// stored record is final already, writing nothing. released is false
	// when another build holds key (the build's lease ran out and the key
	// was taken): the record is written and the key left as it is.
	Ended(ctx context.Context, rec Record, key string) (released bool, err error)
}
