package build

// InfraCause names the infrastructure failure that ended a build: the build
// did not end by its own run's verdict (its script's exit code, its
// deadline, a cancel someone asked for) but because something around it
// failed, so running it again may well succeed. The empty InfraCause means
// the build's own run decided its end.
//
// Executors set Outcome.Infra from what they see: Watch in internal/kube
// from the Pod (its deletion, its eviction or disruption, its node, its
// image pulls, the result its entrypoint reported), Watch in
// internal/localexec from the run directory (the entrypoint's result, a
// cancel file, the process that vanished). A stop Decap asked for
// (Record.RequestCancel) is never an infrastructure failure, however it
// looked to the executor: use Record.EndedByInfra to read an outcome
// together with the record End made of it.
type InfraCause string

// Infrastructure causes.
const (
	// InfraDeleted: the build Pod was deleted (or its entrypoint stopped by
	// SIGTERM) before it ended, and nothing in the Pod says why. Decap's
	// own Cancel looks the same to the executor; the record tells them
	// apart (CancelRequestedAt).
	InfraDeleted InfraCause = "deleted"
	// InfraEvicted: the Pod was evicted (node pressure, the eviction API),
	// preempted, or otherwise disrupted (its DisruptionTarget condition).
	InfraEvicted InfraCause = "evicted"
	// InfraNodeLost: the Pod's node went away or shut down (Pod reason
	// NodeLost, Shutdown or Terminated).
	InfraNodeLost InfraCause = "node_lost"
	// InfraImagePull: an image of the Pod could not be pulled before
	// DECAP_POD_PENDING_TIMEOUT (ErrImagePull, ImagePullBackOff). An image
	// name that can never be pulled (InvalidImageName) is not one.
	InfraImagePull InfraCause = "image_pull"
	// InfraLaunchInterrupted: the launch was interrupted (its launcher died
	// before the build started, and it was not completed within the local
	// executor's LaunchGrace).
	InfraLaunchInterrupted InfraCause = "launch_interrupted"
	// InfraUpload: the script succeeded, but its log or artifacts could not
	// be stored; the build is errored for that alone.
	InfraUpload InfraCause = "upload_failed"
	// InfraKilled: a process of the build was killed by a signal Decap did
	// not send: the entrypoint died without a result or was stopped with
	// no cancel asked for, or build.sh itself was ended by SIGKILL,
	// SIGTERM, SIGINT, SIGHUP or SIGQUIT (the OOM killer included) while
	// Decap neither cancelled nor timed it out.
	InfraKilled InfraCause = "killed"
)

// EndedByInfra returns the infrastructure failure that ended the build, as
// End recorded o into r: o.Infra, or InfraDeleted for a stop nobody asked
// for that the executor did not name, when r is errored; "" otherwise. So a
// cancel someone asked for, a timeout, the script's own failure, a success,
// and a build dropped before it ran are never infrastructure failures.
// Call it on the record End returned, with the outcome End was given.
func (r Record) EndedByInfra(o Outcome) InfraCause {
	if r.Status != StatusErrored || o.BuildID != r.BuildID {
		return ""
	}
	if o.Infra == "" && o.Status == StatusCancelled {
		return InfraDeleted
	}
	return o.Infra
}
