package main

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"regexp"
	"strings"
)

// microBenchmarks are the hot paths' `go test -bench` benchmarks, in the
// *_bench_test.go files next to the code, by package.
var microBenchmarks = []struct {
	pkg   string
	names []string
}{
	{"./internal/ingest", []string{"VerifySignature", "ParsePush", "ParsePushStd", "GitHubHook"}},
	{"./internal/build", []string{"Encode", "Decode"}},
	{"./internal/kube", []string{"PodFor"}},
	{"./internal/sqlite", []string{"StoreWebhook", "StoreLaunch"}},
}

// microWhat says what each micro-benchmark measures.
var microWhat = map[string]string{
	"VerifySignature": "X-Hub-Signature-256 check of GitHub's 8.8 KB sample push",
	"ParsePush":       "push payload parse (the few fields a build request needs) of the same",
	"ParsePushStd":    "the same read by encoding/json, as before tuning 6",
	"GitHubHook":      "the whole webhook through echo (middleware, verify, parse, catalog, claim, record, publish) on in-memory fakes",
	"Encode":          "queue message: validate and marshal (ingest, per publish)",
	"Decode":          "queue message: parse and validate (dispatcher, per message)",
	"PodFor":          "the build Pod's construction (kube executor, per launch)",
	// The store's share, one at a time (each write its own fsync), with
	// the tunings' before and after (issue 15).
	"StoreWebhook/steps":   "an accepted push's writes on SQLite in separate calls (claims, record, publish), as before tuning 3",
	"StoreWebhook/intake":  "the same in one write (sqlite.Intake)",
	"StoreLaunch/steps":    "a build's store life on SQLite, launch and end in separate calls, as before tuning 4",
	"StoreLaunch/combined": "the same with a write for the claim, the start and the end each (sqlite.Launches, sqlite.Ends)",
}

var benchLine = regexp.MustCompile(`^Benchmark([\w/]+?)(-\d+)?\s+(\d+)\s+(.*)$`)

// benchMicro runs the micro-benchmarks with -benchmem and reports each
// one's ns/op, B/op and allocs/op with the command that measures it alone.
func benchMicro(ctx context.Context, e *env) (result, error) {
	var res result
	var raw, table strings.Builder
	table.WriteString("| benchmark | measures | ns/op | CPU ns/op | B/op | allocs/op | throughput | command |\n|---|---|---|---|---|---|---|---|\n")
	for _, p := range microBenchmarks {
		pattern := "^Benchmark(" + strings.Join(p.names, "|") + ")$"
		args := []string{"test", "-run", "^$", "-bench", pattern, "-benchmem", "-benchtime", e.scale.BenchTime, "-count", "1", p.pkg}
		cmd := exec.CommandContext(ctx, "go", args...)
		cmd.Dir = e.root
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Run(); err != nil {
			return res, fmt.Errorf("go %s: %w\n%s", strings.Join(args, " "), err, out.String())
		}
		fmt.Fprintf(&raw, "$ go %s\n", quoteArgs(args))
		for _, l := range strings.Split(out.String(), "\n") {
			m := benchLine.FindStringSubmatch(strings.TrimSpace(l))
			if m == nil {
				if strings.HasPrefix(l, "goos") || strings.HasPrefix(l, "goarch") || strings.HasPrefix(l, "pkg") || strings.HasPrefix(l, "cpu") {
					raw.WriteString(l + "\n")
				}
				continue
			}
			raw.WriteString(l + "\n")
			f := map[string]string{}
			fields := strings.Fields(m[4])
			for i := 0; i+1 < len(fields); i += 2 {
				f[fields[i+1]] = fields[i]
			}
			fmt.Fprintf(&table, "| Benchmark%s (%s) | %s | %s | %s | %s | %s | %s | `go test -run '^$' -bench '^Benchmark%s$' -benchmem %s` |\n",
				m[1], strings.TrimPrefix(p.pkg, "./"), microWhat[m[1]], f["ns/op"], orDash(f["cpu-ns/op"]), f["B/op"], f["allocs/op"], orDash(mbs(f["MB/s"])), m[1], p.pkg)
		}
	}
	res.details = append(res.details, "`go test -bench` with -benchmem, in the *_bench_test.go files next to the code; no target, "+
		"no baseline: they show where a webhook's and a launch's CPU and allocations go.", table.String(),
		"The output (-benchtime "+e.scale.BenchTime+"):", codeBlock(raw.String()))
	return res, nil
}

func quoteArgs(args []string) string {
	out := make([]string, len(args))
	for i, a := range args {
		if strings.ContainsAny(a, "^$|()* ") {
			a = "'" + a + "'"
		}
		out[i] = a
	}
	return strings.Join(out, " ")
}

func mbs(v string) string {
	if v == "" {
		return ""
	}
	return v + " MB/s"
}
