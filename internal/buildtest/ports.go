// Package buildtest holds stateful in-memory fakes of Decap's storage ports
// and of its executor, and the contract suites that the fakes and every real
// adapter (SQLite, AWS; the local and Kubernetes executors) must pass, so
// fakes cannot drift from the adapters they stand in for.
package buildtest

import "github.com/decap-ci/decap/internal/build"

// The ports the suites check, defined in package build.
type (
	Queue       = build.Queue
	Locks       = build.Locks
	Idempotency = build.Idempotency
	Records     = build.Records
	Blobs       = build.Blobs
	Gate        = build.Gate
	Sessions    = build.Sessions
	Secrets     = build.Secrets
)
