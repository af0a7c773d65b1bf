package build

import "time"

// UploadGrace is how long a build's upload grants (presigned PUT URLs) stay
// valid past its deadline, and how long past it a build Pod may live: time
// for decap-entrypoint to stop the script, record timed_out and upload the
// log and artifacts. The executors request the grants for the build's
// timeout plus UploadGrace (plus, for a Pod, the time it may wait to
// start), so that no grant outlives its build by more.
const UploadGrace = 5 * time.Minute
