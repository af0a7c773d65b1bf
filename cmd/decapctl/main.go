// Command decapctl is Decap's operator command line: builds, logs,
// requests and cancellations, the queue, locks and the dispatch gate, and
// signed test webhooks, all through ingest's HTTP API. It is configured by
// DECAP_URL and DECAP_TOKEN; "decapctl --help" lists the commands and the
// exit codes.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/decap-ci/decap/internal/cli"
	"github.com/decap-ci/decap/internal/harden"
)

func main() {
	harden.Process()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := cli.RunIO(ctx, os.Args[1:], os.Getenv, os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(report(os.Stderr, err))
}

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	return cli.Run(ctx, args, getenv, stdout, stderr)
}

// report prints err as one line on stderr and returns the exit code.
func report(stderr io.Writer, err error) int {
	if err != nil {
		fmt.Fprintln(stderr, "decapctl:", err)
	}
	return cli.ExitCode(err)
}
