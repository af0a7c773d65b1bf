package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"time"
)

// profile records this process's CPU profile until the returned stop is
// called; stop returns the top entries of the profile (go tool pprof -top)
// without the load generator's goroutines (see clientSide), followed by
// where the SQLite writer goroutines' time went, and the CPU the whole
// process used per wall second meanwhile.
func (e *env) profile(name string) (stop func() (top string, cores float64)) {
	path := filepath.Join(e.tmp, name+".cpu.pprof")
	f, err := os.Create(path)
	if err != nil {
		return func() (string, float64) { return "(no profile: " + err.Error() + ")", 0 }
	}
	cpu0, wall0 := cpuTime(), time.Now()
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return func() (string, float64) { return "(no profile: " + err.Error() + ")", 0 }
	}
	return func() (string, float64) {
		pprof.StopCPUProfile()
		f.Close()
		cores := float64(cpuTime()-cpu0) / float64(time.Since(wall0))
		return pprofTop(path, 22) + "\n\n" + writerParts(path), cores
	}
}

// writerParts shows where the time of internal/sqlite's writer goroutines
// (group commit: every write of a process runs on one) went: preparing
// statements (parsing SQL), stepping them (the COMMIT's own step
// included), committing, and the fsync within the commit.
func writerParts(path string) string {
	var out bytes.Buffer
	cmd := exec.Command("go", "tool", "pprof", "-top", "-cum", "-tagignore=side=client",
		`-focus=sqlite\.\(\*DB\)\.writer$`,
		`-show=sqlite\.\(\*DB\)\.writer$|_sqlite3Prepare$|sqlite\.\(\*conn\)\.step$|sqlite\.\(\*tx\)\.Commit$|libc\.Xfsync$`, path)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Sprintf("(go tool pprof failed: %v)", err)
	}
	lines := []string{"The SQLite writer goroutines (internal/sqlite's group commit) and their parts, cumulative:"}
	on := false
	for _, l := range strings.Split(out.String(), "\n") {
		if strings.HasPrefix(strings.TrimSpace(l), "flat") {
			on = true
		}
		if on && strings.TrimSpace(l) != "" {
			lines = append(lines, l)
		}
	}
	return strings.Join(lines, "\n")
}

// pprofTop returns the first n entries of go tool pprof -top -cum of a
// profile: the subtrees the time goes to.
func pprofTop(path string, n int) string { return pprofTopBy(path, n, "-cum") }

// pprofTopBy is pprofTop ordered by "-cum" or "-flat" (the functions the
// time is spent in).
func pprofTopBy(path string, n int, order string) string {
	var out bytes.Buffer
	cmd := exec.Command("go", "tool", "pprof", "-top", order, "-tagignore=side=client", fmt.Sprintf("-nodecount=%d", n), path)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Sprintf("(go tool pprof failed: %v)\n%s", err, out.String())
	}
	// Drop the header lines naming the temporary file and the build.
	var keep []string
	for _, l := range strings.Split(out.String(), "\n") {
		if strings.HasPrefix(l, "File:") || strings.HasPrefix(l, "Build ID:") || strings.HasPrefix(l, "Type:") || strings.HasPrefix(l, "Time:") ||
			strings.HasPrefix(l, "TagIgnore expression matched no samples") {
			continue
		}
		keep = append(keep, l)
	}
	return strings.TrimSpace(strings.Join(keep, "\n"))
}

// cores formats a CPU use in cores.
func cores(c float64) string { return fmt.Sprintf("%.2f cores", c) }
