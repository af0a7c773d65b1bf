package metrics_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/decap-ci/decap/internal/build"
	"github.com/decap-ci/decap/internal/dispatch"
	"github.com/decap-ci/decap/internal/metrics"
)

// TestSupersedesCounted checks decap_supersedes_total where requests are
// accepted: ingest's Superseded and the dispatcher's decisions (requests
// of other producers), and the dispatcher's drop of a superseded request.
func TestSupersedesCounted(t *testing.T) {
	t.Parallel()
	want := func(n1, n2 float64) string {
		return strings.NewReplacer("{W}", ftoa(n1), "{R}", ftoa(n2)).Replace(`
# HELP decap_supersedes_total Requests a newer request of their lock key made unnecessary, counted where the newer one was accepted, by what: waiting (a queued or deferred request ended superseded) or running (a running build asked to stop; it ends superseded; project.json supersede.running).
# TYPE decap_supersedes_total counter
decap_supersedes_total{what="running"} {R}
decap_supersedes_total{what="waiting"} {W}
`)
	}
	reg := metrics.NewRegistry()
	in := metrics.NewIngest(reg)
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want(0, 0)), "decap_supersedes_total"); err != nil {
		t.Errorf("ingest before any: %v", err)
	}
	in.Superseded(2, 1)
	in.Superseded(1, 0)
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want(3, 1)), "decap_supersedes_total"); err != nil {
		t.Errorf("ingest: %v", err)
	}

	reg = metrics.NewRegistry()
	d := metrics.NewDispatch(reg, 0)
	d.Decided(dispatch.Decision{Action: dispatch.Deferred, Cause: dispatch.CauseLocked, SupersededWaiting: 2})
	d.Decided(dispatch.Decision{Action: dispatch.Launched, Cause: dispatch.CauseStarted, SupersededRunning: 1})
	d.Decided(dispatch.Decision{Action: dispatch.Dropped, Cause: dispatch.CauseSuperseded})
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want(2, 1)), "decap_supersedes_total"); err != nil {
		t.Errorf("dispatcher: %v", err)
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, f := range families {
		if f.GetName() != "decap_dispatch_decisions_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["outcome"] == "dropped" && labels["reason"] == "superseded" {
				found = true
				if got := m.GetCounter().GetValue(); got != 1 {
					t.Errorf("decisions dropped/superseded = %v, want 1", got)
				}
			}
		}
	}
	if !found {
		t.Errorf("no decap_dispatch_decisions_total{outcome=\"dropped\",reason=\"superseded\"}")
	}
}

func ftoa(f float64) string { return fmt.Sprintf("%g", f) }

// TestRetriesCountedByCause checks decap_build_retries_total: every cause
// from the start, at zero, and each retry under its cause.
func TestRetriesCountedByCause(t *testing.T) {
	t.Parallel()
	reg := metrics.NewRegistry()
	m := metrics.NewReap(reg)
	m.Retried(build.InfraEvicted)
	m.Retried(build.InfraEvicted)
	m.Retried(build.InfraKilled)
	want := `
# HELP decap_build_retries_total Retries the reaper started (each a new build, a new attempt), by the infrastructure failure that ended the attempt before (deleted, evicted, node_lost, image_pull, launch_interrupted, upload_failed, killed).
# TYPE decap_build_retries_total counter
decap_build_retries_total{cause="deleted"} 0
decap_build_retries_total{cause="evicted"} 2
decap_build_retries_total{cause="image_pull"} 0
decap_build_retries_total{cause="killed"} 1
decap_build_retries_total{cause="launch_interrupted"} 0
decap_build_retries_total{cause="node_lost"} 0
decap_build_retries_total{cause="upload_failed"} 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "decap_build_retries_total"); err != nil {
		t.Error(err)
	}
}
