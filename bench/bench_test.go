package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/decap-ci/decap/internal/kubetest"
)

// TestSmoke runs the embedded scenarios at a tiny scale and checks that the
// report has their rows. It measures nothing worth reading and asserts no
// figure: the benchmarks are `make bench`.
func TestSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("a few seconds of load; skipped under -short")
	}
	report := runBench(t,
		"-scale", "quick", "-aws", "off", "-only", "^(ingest|launch|dispatch|reap)$",
		"-ingest-round", "200ms", "-ingest-rounds", "1", "-ingest-clients", "2", "-ingest-rate", "20", "-ingest-rate-for", "250ms",
		"-light-rate", "10", "-light-for", "300ms", "-heavy-rate", "20", "-heavy-for", "250ms",
		"-dispatch-n", "40", "-dispatch-keys", "4", "-reap-n", "5", "-reap-rate", "50",
	)
	for _, want := range []string{"| ingest | signed push webhooks", "| launch | push → Launch, light", "| dispatch | dispatcher: 40 queued", "| reap | reaper lag"} {
		if !strings.Contains(report, want) {
			t.Errorf("the report has no row %q:\n%s", want, report)
		}
	}
	if strings.Contains(report, "failed:") {
		t.Errorf("a scenario failed:\n%s", report)
	}
}

// TestSmokeKubeAPI runs the scenario on a real API server at a tiny scale
// and checks that the report has its rows; without the control plane's
// binaries, TestKubeAPINotRun checks the report says why instead.
func TestSmokeKubeAPI(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a Kubernetes control plane; skipped under -short")
	}
	if why := kubetest.Missing(); why != "" {
		t.Skip(why)
	}
	report := runKubeAPI(t)
	for _, want := range []string{
		"| launch-kubeapi | push → Launch, light load 10/s for 300ms (3 webhooks), embedded (SQLite) + kubernetes executor on kube-apiserver",
		"| launch-kubeapi | push → Launch, heavy load 20/s for 250ms (5 webhooks)",
		"client QPS ", " / Burst ",
		"| launch-kubeapi | push → Pod Running (kwok), heavy load 20/s",
	} {
		if !strings.Contains(report, want) {
			t.Errorf("the report has no %q:\n%s", want, report)
		}
	}
	if strings.Contains(report, "failed:") || strings.Contains(report, "not seen Running") || strings.Contains(report, "not launched within") {
		t.Errorf("a build was lost or the scenario failed:\n%s", report)
	}
}

func TestKubeAPINotRun(t *testing.T) {
	t.Setenv("DECAP_KUBE_BIN", t.TempDir()) // no binaries there
	report := runKubeAPI(t)
	if want := "- Not run: launch-kubeapi: the Kubernetes control plane"; !strings.Contains(report, want) {
		t.Errorf("the report does not say %q:\n%s", want, report)
	}
	if strings.Contains(report, "| launch-kubeapi |") {
		t.Errorf("the report has rows of a scenario that did not run:\n%s", report)
	}
}

// runKubeAPI runs the launch-kubeapi scenario at a tiny scale and returns
// the report.
func runKubeAPI(t *testing.T) string {
	t.Helper()
	return runBench(t, "-scale", "quick", "-aws", "off", "-only", "^launch-kubeapi$",
		"-light-rate", "10", "-light-for", "300ms", "-kubeapi-rate", "20", "-heavy-for", "250ms")
}

// runBench runs the bench with args, its temporary files and its report
// in a directory of the test's, and returns the report.
func runBench(t *testing.T, args ...string) string {
	t.Helper()
	tmp := t.TempDir()
	out := filepath.Join(tmp, "BENCHMARKS.md")
	getenv := func(k string) string {
		if k == "TMPDIR" {
			return tmp
		}
		return os.Getenv(k)
	}
	var stderr bytes.Buffer
	if err := run(context.Background(), append(args, "-out", out), getenv, io.Discard, &stderr); err != nil {
		t.Fatalf("run: %v\n%s", err, stderr.String())
	}
	report, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return string(report)
}

func TestQuantile(t *testing.T) {
	t.Parallel()
	l := latencies{5, 1, 4, 2, 3, 6, 7, 8, 9, 10}
	for _, tc := range []struct {
		q    float64
		want time.Duration
	}{{0, 1}, {0.5, 5}, {0.9, 9}, {0.99, 10}, {1, 10}} {
		if got := l.quantile(tc.q); got != tc.want {
			t.Errorf("quantile(%v) = %v, want %v", tc.q, got, tc.want)
		}
	}
	if got := (latencies{}).quantile(0.5); got != 0 {
		t.Errorf("quantile of no sample = %v, want 0", got)
	}
}

func TestScaleFlags(t *testing.T) {
	t.Parallel()
	var s scale
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	s.flags(fs)
	if err := fs.Parse([]string{"-dispatch-n", "7", "-light-for", "2s"}); err != nil {
		t.Fatal(err)
	}
	base := scales["quick"]
	got := s.over(base, fs)
	if got.DispatchN != 7 || got.LightFor != 2*time.Second || got.ReapN != base.ReapN {
		t.Errorf("over: DispatchN %d, LightFor %s, ReapN %d; want 7, 2s, %d", got.DispatchN, got.LightFor, got.ReapN, base.ReapN)
	}
	if args := got.args(base); args != "-light-for=2s -dispatch-n=7" {
		t.Errorf("args = %q, want %q", args, "-light-for=2s -dispatch-n=7")
	}
}

// distinctPush gives every seed a push of its own: the same payload with
// another after commit, still valid JSON, the rest of the bytes as they
// were.
func TestDistinctPush(t *testing.T) {
	t.Parallel()
	sample, err := os.ReadFile(filepath.Join("..", samplePush))
	if err != nil {
		t.Fatal(err)
	}
	e := &env{push: sample}
	for _, push := range [][]byte{sample, e.pushFor("feature/x")} {
		a, b := distinctPush(push, "a"), distinctPush(push, "b")
		var ma, mb, orig map[string]any
		for _, x := range []struct {
			body []byte
			m    *map[string]any
		}{{a, &ma}, {b, &mb}, {push, &orig}} {
			if err := json.Unmarshal(x.body, x.m); err != nil {
				t.Fatalf("not JSON: %v", err)
			}
		}
		if ma["after"] == mb["after"] || ma["after"] == orig["after"] || len(ma["after"].(string)) != 40 {
			t.Errorf("after commits %v, %v (sample %v): want two new 40-digit commits", ma["after"], mb["after"], orig["after"])
		}
		if ma["ref"] != orig["ref"] || ma["before"] != orig["before"] || len(a) != len(push) {
			t.Errorf("distinctPush changed more than the after commit")
		}
	}
}
