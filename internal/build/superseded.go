package build

// SupersedesOlder reports whether r, a newer request of a lock key, ends
// the older ones (project.json "supersede"): a rebuild does not (it repeats
// a past build on purpose, often of an older commit), nor does a retry (it
// repeats a failed build's commit, queued at the failure's time). Both are
// superseded by a later request themselves. See internal/supersede.
func (r Record) SupersedesOlder() bool { return r.RebuildOf == "" && r.RetryOf == "" }

// WaitingSuperseded returns, of list (a lock key's unfinished records) and
// accepted (a request of the key just recorded, which list may not show
// yet: a lagging index), the newest waiting request that supersedes
// (by Record.Older), and the waiting requests that newest makes
// unnecessary: those older than it that no dispatcher began to launch
// (LaunchingAt zero), in list order. accepted itself is among them when
// list holds a newer waiting request. A rebuild or a retry accepted
// supersedes nothing: newest is accepted, ended is empty.
//
// It is the decision of supersede.Older for waiting requests, shared by
// the stores that make it inside their own write (sqlite.Intake).
func WaitingSuperseded(list []Record, accepted Record) (newest Record, ended []Record) {
	newest = accepted
	if !accepted.SupersedesOlder() {
		return newest, nil
	}
	seen := false
	for _, r := range list {
		seen = seen || r.BuildID == accepted.BuildID
		if r.Waiting() && r.SupersedesOlder() && newest.Older(r) {
			newest = r
		}
	}
	if !seen {
		list = append(list[:len(list):len(list)], accepted)
	}
	for _, r := range list {
		if r.BuildID != newest.BuildID && r.Waiting() && r.Older(newest) && r.LaunchingAt.IsZero() {
			ended = append(ended, r)
		}
	}
	return newest, ended
}
