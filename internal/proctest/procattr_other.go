//go:build !linux

package proctest

import "syscall"

// serviceProcAttr is nil where there is no parent-death signal; the tests
// that use the package skip themselves there anyway.
func serviceProcAttr() *syscall.SysProcAttr { return nil }
