//go:build !linux

package harden

// Process does nothing outside Linux, where Decap's services only run for
// development (the local executor needs Linux).
func Process() {}

// Dumpable reports true outside Linux: nothing was done.
func Dumpable() (bool, error) { return true, nil }
