// Package reliability_test is the reliability suite of docs/RELIABILITY.md:
// it runs the services as real processes (like e2e/) at volume — bursts of
// signed webhooks with redeliveries, dispatchers and reapers SIGKILLed at
// random moments, a backend outage — while an invariant monitor samples the
// running builds every 50 ms, and checks DESIGN.md's invariants.
//
// It is skipped unless a scale is chosen, so `go test ./...` stays fast:
//
//	go test -count=1 -timeout 25m -v ./reliability/ -args -scale=small|full [-update-doc]
//
// or DECAP_RELIABILITY=small|full. `make test-reliability` runs it against a
// moto_server of its own (scripts/with-moto.sh), so the AWS scenarios run too;
// without AWS_ENDPOINT_URL they are skipped with a message. At the end it
// prints one summary table; -update-doc also writes it into the "last run"
// section of docs/RELIABILITY.md.
package reliability_test

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/decap-ci/decap/internal/proctest"
)

var (
	scaleFlag = flag.String("scale", "", "run the suite at this scale: small or full (default: $DECAP_RELIABILITY, else skip)")
	updateDoc = flag.Bool("update-doc", false, "write the summary table into docs/RELIABILITY.md's last-run section")
)

// scale is how much each scenario does.
type scale struct {
	name string
	// burst on the embedded backend: webhooks (redeliveries included) over branches.
	burstRequests, burstBranches int
	// burst on the AWS backend.
	awsBurstRequests, awsBurstBranches int
	// chaos: SIGKILLs of dispatchers and reapers.
	chaosKills int
	// outage: how long the store is unavailable.
	outage time.Duration
	// wait bounds how long a scenario waits for its builds to end.
	wait time.Duration
}

var scales = map[string]scale{
	"small": {name: "small", burstRequests: 500, burstBranches: 50, awsBurstRequests: 30, awsBurstBranches: 30,
		chaosKills: 10, outage: 10 * time.Second, wait: 3 * time.Minute},
	"full": {name: "full", burstRequests: 10000, burstBranches: 1000, awsBurstRequests: 150, awsBurstBranches: 120,
		chaosKills: 50, outage: 30 * time.Second, wait: 15 * time.Minute},
}

// Set once by TestMain, read-only afterwards.
var (
	cfg        scale
	binDir     string
	moduleRoot string
	skipReason string
)

func TestMain(m *testing.M) { os.Exit(runTests(m)) }

func runTests(m *testing.M) int {
	flag.Parse()
	name := *scaleFlag
	if name == "" {
		name = os.Getenv("DECAP_RELIABILITY")
	}
	s, ok := scales[name]
	switch {
	case name == "":
		skipReason = "the reliability suite runs only at a chosen scale: -args -scale=small|full or DECAP_RELIABILITY=small|full (make test-reliability)"
	case !ok:
		fmt.Fprintf(os.Stderr, "reliability: unknown scale %q, want small or full\n", name)
		return 2
	case testing.Short():
		skipReason = "the reliability suite starts real processes; skipped with -short"
	case runtime.GOOS != "linux":
		skipReason = "the reliability suite needs Linux: the local executor reads /proc"
	}
	if skipReason != "" {
		return m.Run()
	}
	if _, err := exec.LookPath("bash"); err != nil {
		fmt.Fprintln(os.Stderr, "reliability: build scripts need bash:", err)
		return 1
	}
	cfg = s
	root, err := proctest.ModuleRoot()
	if err != nil {
		fmt.Fprintln(os.Stderr, "reliability:", err)
		return 1
	}
	moduleRoot = root
	dir, err := os.MkdirTemp("", "decap-reliability-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "reliability: create binary directory:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	if err := proctest.BuildBinaries(root, dir); err != nil {
		fmt.Fprintln(os.Stderr, "reliability:", err)
		return 1
	}
	binDir = dir
	start := time.Now()
	code := m.Run()
	table := summaryTable(cfg.name, time.Since(start), code == 0)
	fmt.Println()
	fmt.Println(table)
	if *updateDoc {
		if err := writeDoc(table); err != nil {
			fmt.Fprintln(os.Stderr, "reliability: -update-doc:", err)
			if code == 0 {
				code = 1
			}
		} else {
			fmt.Println("reliability: wrote the table into docs/RELIABILITY.md")
		}
	}
	return code
}

// requireSuite skips t when the suite does not run (see TestMain).
func requireSuite(t *testing.T) {
	t.Helper()
	if skipReason != "" {
		t.Skip(skipReason)
	}
}

// Secrets of every cluster; only the suite knows them.
const (
	webhookSecret = "reliability-webhook-secret-6b1f3d9e"
	apiToken      = "reliability-api-token-3a7e5c1b9d2f"
)

// newCluster prepares a cluster of the binaries TestMain built, with the
// secrets above, after requireSuite; see proctest.NewCluster.
// RELIABILITY_DUMP=1 logs the dumps of passing tests too.
func newCluster(t *testing.T, opts proctest.Options) *proctest.Cluster {
	t.Helper()
	requireSuite(t)
	opts.Bin = binDir
	opts.WebhookSecret, opts.APIToken = webhookSecret, apiToken
	opts.AlwaysDump = os.Getenv("RELIABILITY_DUMP") != ""
	return proctest.NewCluster(t, opts)
}

// row is one scenario's line of the summary table.
type row struct {
	mu           sync.Mutex
	scenario     string
	backend      string
	requests     int // HTTP requests that ask for a build (webhooks, API)
	deliveries   int // unique webhook deliveries / API requests accepted
	redeliveries int
	kills        int
	buildKills   int // build.sh SIGKILLed from outside: infrastructure failures
	outages      int
	builds       int // builds that ran (trace start lines)
	superseded   int // requests a newer one superseded (invariant 8)
	retries      int // retries the reaper made after infrastructure failures
	samples      int // invariant monitor samples
	violations   int
	duration     time.Duration
	status       string // passed, failed, skipped
	started      time.Time
}

var (
	rowsMu sync.Mutex
	rows   []*row
)

// newRow starts a scenario's row; it is finished (duration, status) when t
// ends.
func newRow(t *testing.T, scenario, backend string) *row {
	r := &row{scenario: scenario, backend: backend, started: time.Now()}
	rowsMu.Lock()
	rows = append(rows, r)
	rowsMu.Unlock()
	t.Cleanup(func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.duration = time.Since(r.started)
		switch {
		case t.Skipped():
			r.status = "skipped"
		case t.Failed():
			r.status = "FAILED"
		default:
			r.status = "passed"
		}
	})
	return r
}

// maxErrors bounds how many violations of one scenario are spelled out.
const maxErrors = 25

// violate counts a violation of an invariant and reports it (the first
// maxErrors of each scenario in full).
func (r *row) violate(t *testing.T, format string, args ...any) {
	t.Helper()
	r.mu.Lock()
	r.violations++
	n := r.violations
	r.mu.Unlock()
	switch {
	case n <= maxErrors:
		t.Errorf("VIOLATION: "+format, args...)
	case n == maxErrors+1:
		t.Errorf("VIOLATION: more violations; only the first %d are shown", maxErrors)
	}
}

func (r *row) add(field *int, n int) {
	r.mu.Lock()
	*field += n
	r.mu.Unlock()
}

func summaryTable(scaleName string, total time.Duration, passed bool) string {
	rowsMu.Lock()
	defer rowsMu.Unlock()
	var b strings.Builder
	result := "passed"
	if !passed {
		result = "FAILED"
	}
	fmt.Fprintf(&b, "Reliability suite, scale %s, %s, %s on %d CPUs, %s in %s\n\n",
		scaleName, time.Now().UTC().Format("2006-01-02 15:04 MST"), runtime.Version(), runtime.NumCPU(), result, total.Round(time.Second))
	fmt.Fprintln(&b, "| scenario | backend | requests | deliveries | redeliveries | kills | build kills | outages | builds run | superseded | retries | monitor samples | violations | duration | result |")
	fmt.Fprintln(&b, "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|")
	var sum row
	for _, r := range rows {
		r.mu.Lock()
		fmt.Fprintf(&b, "| %s | %s | %d | %d | %d | %d | %d | %d | %d | %d | %d | %d | %d | %s | %s |\n",
			r.scenario, r.backend, r.requests, r.deliveries, r.redeliveries, r.kills, r.buildKills, r.outages, r.builds, r.superseded, r.retries,
			r.samples, r.violations, r.duration.Round(100*time.Millisecond), r.status)
		sum.requests += r.requests
		sum.deliveries += r.deliveries
		sum.redeliveries += r.redeliveries
		sum.kills += r.kills
		sum.buildKills += r.buildKills
		sum.outages += r.outages
		sum.builds += r.builds
		sum.superseded += r.superseded
		sum.retries += r.retries
		sum.samples += r.samples
		sum.violations += r.violations
		sum.duration += r.duration
		r.mu.Unlock()
	}
	fmt.Fprintf(&b, "| **total** | | %d | %d | %d | %d | %d | %d | %d | %d | %d | %d | %d | %s | %s |\n",
		sum.requests, sum.deliveries, sum.redeliveries, sum.kills, sum.buildKills, sum.outages, sum.builds, sum.superseded, sum.retries,
		sum.samples, sum.violations, sum.duration.Round(100*time.Millisecond), result)
	return b.String()
}

// Markers of the last-run section of docs/RELIABILITY.md.
const (
	docBegin = "<!-- reliability:last-run:begin -->"
	docEnd   = "<!-- reliability:last-run:end -->"
)

func writeDoc(table string) error {
	path := filepath.Join(moduleRoot, "docs", "RELIABILITY.md")
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	doc := string(data)
	i, j := strings.Index(doc, docBegin), strings.Index(doc, docEnd)
	if i < 0 || j < i {
		return fmt.Errorf("%s lacks the markers %s … %s", path, docBegin, docEnd)
	}
	doc = doc[:i+len(docBegin)] + "\n" + table + doc[j:]
	return os.WriteFile(path, []byte(doc), 0o644)
}
