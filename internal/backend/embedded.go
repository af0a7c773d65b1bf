//go:build decap_embedded

package backend

import (
	"context"
	"fmt"
	"time"

	"github.com/decap-ci/decap/internal/build"
)

// A binary built with -tags decap_embedded (`make run` builds the services
// so) holds the embedded default only: no AWS SDK, no client-go, whose
// code and package initialisers made up most of a service's memory
// (docs/BENCHMARKS.md). It refuses the aws backend and the kubernetes
// executor at start, saying so.

// errEmbeddedOnly is the error of what such a binary lacks.
func errEmbeddedOnly(what string) error {
	return fmt.Errorf("%w: %s: this program was built for the embedded default only (go build -tags decap_embedded, as `make run` builds it); "+
		"use the services of `make build` (bin/), or build without the tag", build.ErrInvalid, what)
}

func (s *Set) openAWS(context.Context, func() time.Time) error {
	return errEmbeddedOnly("DECAP_BACKEND=aws")
}

func (s *Set) openAWSSecrets() (build.Secrets, error) {
	return nil, errEmbeddedOnly("the aws backend's secrets")
}

func (s *Set) openKube(func() time.Time) (Executor, error) {
	return nil, errEmbeddedOnly("DECAP_EXECUTOR=kubernetes (which needs DECAP_BACKEND=aws)")
}
