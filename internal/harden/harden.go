// Package harden hardens a Decap process against the build scripts that
// run on the same machine. Every command calls Process first thing in main.
package harden
