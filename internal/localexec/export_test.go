package localexec

import (
	"errors"
	"time"
)

// CrashAfterStart makes e's launches stop right after starting the
// entrypoint, as a launcher that dies there would: nothing recorded,
// nothing waited for.
func CrashAfterStart(e *Executor) { e.crashAfterStart = true }

// FailPIDWrite makes e's launches fail to record the entrypoint's pid,
// after a while, as a slow and failing disk would.
func FailPIDWrite(e *Executor, after time.Duration) {
	e.pidWriteHook = func() error {
		time.Sleep(after)
		return errors.New("pid write failed (test)")
	}
}

// OwnedByNobody is ownedByNobody, for a passwd file of the test's.
var OwnedByNobody = ownedByNobody

// WatchDir is the run directory's directory of watchers' sockets.
const WatchDir = watchDir
