package entrypoint

import (
	"fmt"
	"strings"
	"syscall"

	"github.com/decap-ci/decap/internal/build"
)

// killSignals are the signals that stop a process from outside (a person,
// a supervisor, the OOM killer): a script ended by one while Run neither
// cancelled nor timed it out was killed by someone other than Decap. The
// signals of a crash (SIGSEGV, SIGABRT, …) are the script's own failure.
var killSignals = map[syscall.Signal]bool{
	syscall.SIGKILL: true, syscall.SIGTERM: true, syscall.SIGINT: true, syscall.SIGHUP: true, syscall.SIGQUIT: true,
}

// Infra returns the infrastructure failure a result tells of (see
// build.InfraCause), or "" when the script's own run decided the result:
// build.InfraUpload when the script succeeded but its log or artifacts
// could not be stored; build.InfraKilled when build.sh was ended by a kill
// signal that Run did not send (Run sends them only to cancel or time a
// build out, and then reports cancelled or timed_out). A result with no
// status (none was written) is the caller's to judge.
func (r Result) Infra() build.InfraCause {
	switch r.Status {
	case build.StatusErrored:
		if r.ExitCode != nil && *r.ExitCode == 0 && (r.LogKey == "" || r.ArtifactsKey == "") {
			return build.InfraUpload
		}
	case build.StatusFailed:
		// The reason starts with exitCode's words for a signalled script.
		var sig int
		if _, err := fmt.Sscanf(r.Reason, "killed by signal %d", &sig); err == nil &&
			strings.HasPrefix(r.Reason, "killed by signal ") && killSignals[syscall.Signal(sig)] {
			return build.InfraKilled
		}
	}
	return ""
}
