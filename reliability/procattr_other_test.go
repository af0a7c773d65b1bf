//go:build !linux

package reliability_test

import "syscall"

// serviceProcAttr is nil where there is no parent-death signal; the tests
// skip themselves there anyway (see TestMain).
func serviceProcAttr() *syscall.SysProcAttr { return nil }
