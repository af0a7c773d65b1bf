//go:build unix

package cli

import (
	"io/fs"
	"os"
	"syscall"
)

// ownedByMe reports whether fi is a file of this process's user: a secret
// found by looking upward from the current directory is taken only then,
// not from a .decap/ another user left in a shared directory.
func ownedByMe(fi fs.FileInfo) bool {
	st, ok := fi.Sys().(*syscall.Stat_t)
	return ok && int(st.Uid) == os.Getuid()
}
