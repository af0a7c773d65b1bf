package proctest

import "syscall"

// serviceProcAttr makes a service die with the test binary (builds are
// detached by design; cleanup finds them in the data directory).
func serviceProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
