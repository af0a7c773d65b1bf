// Command bench measures Decap against the targets of DESIGN.md ("Targets to
// design for") and writes docs/BENCHMARKS.md: each figure next to a baseline
// measured in the same run on the same machine, their ratio, the target, and
// the command behind the row. Ratios, not absolute figures, are what carry
// over between runs on a shared machine.
//
//	go run ./bench -out docs/BENCHMARKS.md        # everything; make bench
//	go run ./bench -scale quick -only '^ingest$'  # one scenario, small
//	scripts/with-moto.sh go run ./bench -only aws # the AWS rows, on moto
//
// The scenarios on the AWS backend run when AWS_ENDPOINT_URL is set (make
// bench runs the program under scripts/with-moto.sh); without it their rows
// say they were not run. Likewise the one on a real API server
// (launch-kubeapi) runs when the control plane's binaries are built
// (scripts/kube-controlplane.sh build, make kube-controlplane). Every server binds 127.0.0.1, every scenario is
// bounded in count and time, and nothing here is a test: no figure fails
// anything.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"regexp"
	"syscall"
	"time"

	"github.com/decap-ci/decap/internal/kubetest"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// scenario is one measurement: it returns rows for the summary table and
// the details behind them.
type scenario struct {
	name string
	// aws scenarios need AWS_ENDPOINT_URL.
	aws bool
	// kube scenarios need the Kubernetes control plane's binaries
	// (scripts/kube-controlplane.sh build).
	kube bool
	run  func(ctx context.Context, e *env) (result, error)
}

func scenarios() []scenario {
	return []scenario{
		{name: "ingest", run: benchIngest},
		{name: "launch", run: benchLaunch},
		{name: "launch-kube", run: benchLaunchKube},
		{name: "launch-kubeapi", kube: true, run: benchLaunchKubeAPI},
		{name: "launch-aws", aws: true, run: benchLaunchAWS},
		{name: "dispatch", run: benchDispatch},
		{name: "dispatch-aws", aws: true, run: benchDispatchAWS},
		{name: "reap", run: benchReap},
		{name: "end", run: benchEnd},
		{name: "webhooks", run: benchWebhooks},
		{name: "memory", run: benchMemory},
		{name: "idle", run: benchIdle},
		{name: "abuse", run: benchAbuse},
		{name: "micro", run: benchMicro},
	}
}

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	out := fs.String("out", "", "write the report to this file (default: stdout)")
	scaleName := fs.String("scale", "full", "full (make bench, ~10 minutes) or quick (a smoke run of a minute or two)")
	only := fs.String("only", "", "run only the scenarios whose name matches this regexp: "+scenarioNames())
	awsMode := fs.String("aws", "auto", "AWS scenarios: auto (when AWS_ENDPOINT_URL is set) or off")
	keep := fs.Bool("keep", false, "keep the temporary directory (data, logs, profiles) and print its path")
	var s scale
	s.flags(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	base, ok := scales[*scaleName]
	if !ok {
		return fmt.Errorf("-scale %q: want full or quick", *scaleName)
	}
	s = s.over(base, fs)
	var pick *regexp.Regexp
	if *only != "" {
		var err error
		if pick, err = regexp.Compile(*only); err != nil {
			return fmt.Errorf("-only: %w", err)
		}
	}
	if *awsMode != "auto" && *awsMode != "off" {
		return fmt.Errorf("-aws %q: want auto or off", *awsMode)
	}

	e, err := newEnv(getenv, *scaleName, s, stderr)
	if err != nil {
		return err
	}
	defer func() {
		if *keep {
			fmt.Fprintln(stderr, "bench: kept", e.tmp)
			return
		}
		os.RemoveAll(e.tmp)
	}()

	e.useAWS = *awsMode == "auto" && getenv("AWS_ENDPOINT_URL") != ""
	defer e.destroyWorld()
	rep := &report{started: time.Now(), scale: *scaleName, scaleArgs: s.args(base), machine: e.machine()}
	for _, sc := range scenarios() {
		if pick != nil && !pick.MatchString(sc.name) {
			continue
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if sc.aws && !e.useAWS {
			rep.skipped = append(rep.skipped, sc.name)
			continue
		}
		if why := kubetest.Missing(); sc.kube && why != "" {
			rep.notRun = append(rep.notRun, sc.name+": "+why)
			continue
		}
		e.logf("== %s", sc.name)
		start, u := time.Now(), startUsage()
		res, err := sc.run(ctx, e)
		if err == nil {
			res.details = append(res.details, u.String())
		}
		e.logf("== %s done in %s", sc.name, time.Since(start).Round(100*time.Millisecond))
		if err != nil && ctx.Err() != nil {
			return ctx.Err()
		}
		rep.add(sc.name, res, err)
	}
	rep.finished = time.Now()

	w := stdout
	if *out != "" {
		f, err := os.Create(*out)
		if err != nil {
			return err
		}
		defer f.Close()
		w = f
	}
	if err := rep.write(w); err != nil {
		return err
	}
	if rep.failed > 0 {
		return errors.New("some scenarios failed; their rows say why")
	}
	return nil
}

func scenarioNames() string {
	s := ""
	for i, sc := range scenarios() {
		if i > 0 {
			s += ", "
		}
		s += sc.name
	}
	return s
}
