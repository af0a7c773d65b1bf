package proctest

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// killBuilds SIGKILLs every process (and its process group) whose command
// line names the data directory: decap-entrypoint runs with -run-dir
// <data>/run/build-<id>, the build script as bash <data>/run/.../build.sh,
// each in its own process group that holds the script's children. It
// returns how many such processes it found.
func killBuilds(dataDir string) int {
	needle := []byte(filepath.Join(dataDir, "run") + string(filepath.Separator))
	own := syscall.Getpgrp()
	killed := map[int]bool{}
	for range 50 {
		found := 0
		entries, _ := os.ReadDir("/proc")
		for _, e := range entries {
			pid, err := strconv.Atoi(e.Name())
			if err != nil || pid == os.Getpid() {
				continue
			}
			cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
			if err != nil || !bytes.Contains(cmdline, needle) {
				continue
			}
			found++
			killed[pid] = true
			if pgid, err := syscall.Getpgid(pid); err == nil && pgid > 1 && pgid != own {
				syscall.Kill(-pgid, syscall.SIGKILL)
			}
			syscall.Kill(pid, syscall.SIGKILL)
		}
		if found == 0 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	return len(killed)
}

// dump logs the tail of every service's log, the trace, and what is left
// in the run directory.
func (c *Cluster) dump(services []*Service) {
	const max = 24 << 10
	for _, s := range services {
		c.tb.Logf("==== %s log (%s) ====\n%s", s.Name, s.LogPath, tail(s.LogPath, max))
	}
	if trace := c.opts.Trace; trace != "" && fileExists(trace) {
		c.tb.Logf("==== trace (%s) ====\n%s", trace, tail(trace, max))
	}
	runs, _ := filepath.Glob(filepath.Join(c.dataDir, "run", "build-*"))
	sort.Strings(runs)
	for _, dir := range runs {
		var b strings.Builder
		for _, name := range []string{"pid", "script.pid", "result.json", "entrypoint.out", "console.log"} {
			p := filepath.Join(dir, name)
			if fileExists(p) {
				fmt.Fprintf(&b, "-- %s --\n%s\n", name, tail(p, 4<<10))
			}
		}
		c.tb.Logf("==== run directory %s ====\n%s", filepath.Base(dir), b.String())
	}
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// tail returns the last max bytes of a file, or why it cannot be read.
func tail(path string, max int64) string {
	f, err := os.Open(path)
	if err != nil {
		return "(" + err.Error() + ")"
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return "(" + err.Error() + ")"
	}
	prefix := ""
	if info.Size() > max {
		f.Seek(info.Size()-max, io.SeekStart)
		prefix = "…(cut)…\n"
	}
	data, _ := io.ReadAll(f)
	return prefix + string(data)
}
