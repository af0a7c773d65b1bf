package e2e_test

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"text/template"
	"time"

	"github.com/decap-ci/decap/internal/proctest"
)

// validDescriptor is a project.json every test project may use.
const validDescriptor = `{"buildImage": "debian:bookworm-slim", "repoManager": "github"}`

// scriptsDir is a build-scripts directory generated for one test, whose
// traced projects append to one trace file.
type scriptsDir struct {
	t     *testing.T
	dir   string
	trace string
}

// newScripts creates an empty build-scripts directory in t's temporary
// directory and names the trace file its traced projects write to.
func newScripts(t *testing.T) *scriptsDir {
	t.Helper()
	root := t.TempDir()
	s := &scriptsDir{t: t, dir: filepath.Join(root, "build-scripts"), trace: filepath.Join(root, "trace")}
	if err := os.MkdirAll(s.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	proctest.BuildWritable(t, s.trace) // builds may run under users of their own
	return s
}

// add writes <team>/<project>/build.sh and project.json.
func (s *scriptsDir) add(team, project, descriptor, script string) {
	s.t.Helper()
	dir := filepath.Join(s.dir, team, project)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		s.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "project.json"), []byte(descriptor), 0o644); err != nil {
		s.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "build.sh"), []byte(script), 0o755); err != nil {
		s.t.Fatal(err)
	}
}

// addTraced adds a valid project whose build.sh traces its start and end
// and sleeps for sleep in between.
func (s *scriptsDir) addTraced(team, project string, sleep time.Duration) {
	s.t.Helper()
	s.add(team, project, validDescriptor, tracedScript(s.t, s.trace, sleep, 0))
}

// companyWait is how long the first build of a test that wants builds side
// by side waits for a second to start (see traced-build.sh.tmpl): far
// longer than a launch takes, even on a loaded emulator, and short of the
// harness's build timeout.
const companyWait = 60 * time.Second

var tracedTemplate = template.Must(template.ParseFiles(filepath.Join("testdata", "traced-build.sh.tmpl")))

// tracedScript renders traced-build.sh.tmpl: the build sleeps for sleep;
// with a company wait, the first build to start first waits up to that long
// for a second one.
func tracedScript(t *testing.T, trace string, sleep, company time.Duration) string {
	t.Helper()
	var b bytes.Buffer
	err := tracedTemplate.Execute(&b, map[string]any{
		"Trace":   shellQuote(trace),
		"Sleep":   strconv.FormatFloat(sleep.Seconds(), 'f', 3, 64),
		"Company": int(company.Seconds()),
	})
	if err != nil {
		t.Fatalf("render build script: %v", err)
	}
	return b.String()
}

// shellQuote quotes s for bash.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// span is one build's run as the trace tells it.
type span struct {
	id, branch string
	start, end time.Time // end is zero while the build has not ended
	starts     int       // how many times the build started
}

func (s span) overlaps(o span) bool {
	return s.start.Before(o.endOrForever()) && o.start.Before(s.endOrForever())
}

func (s span) endOrForever() time.Time {
	if s.end.IsZero() {
		return time.Unix(1<<40, 0)
	}
	return s.end
}

// buildTrace is the parsed trace file of a test.
type buildTrace struct {
	spans map[string]*span
}

// readTrace parses the trace file; a missing file is an empty trace.
func (s *scriptsDir) readTrace() buildTrace {
	s.t.Helper()
	tr := buildTrace{spans: map[string]*span{}}
	data, err := os.ReadFile(s.trace)
	if os.IsNotExist(err) {
		return tr
	}
	if err != nil {
		s.t.Fatalf("read trace: %v", err)
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		f := strings.Fields(sc.Text())
		if len(f) != 4 {
			s.t.Fatalf("trace line %d: got %q, want \"start|end <id> <branch> <unix-nanos>\"", n, sc.Text())
		}
		nanos, err := strconv.ParseInt(f[3], 10, 64)
		if err != nil {
			s.t.Fatalf("trace line %d: %q: %v", n, sc.Text(), err)
		}
		at := time.Unix(0, nanos)
		sp := tr.spans[f[1]]
		if sp == nil {
			sp = &span{id: f[1], branch: f[2]}
			tr.spans[f[1]] = sp
		}
		switch f[0] {
		case "start":
			sp.starts++
			if sp.start.IsZero() {
				sp.start = at
			}
		case "end":
			sp.end = at
		default:
			s.t.Fatalf("trace line %d: got %q, want start or end", n, sc.Text())
		}
	}
	return tr
}

// started returns how many builds started, each counted once.
func (tr buildTrace) started() int { return len(tr.spans) }

// ended returns how many builds wrote their end line.
func (tr buildTrace) ended() int {
	n := 0
	for _, sp := range tr.spans {
		if !sp.end.IsZero() {
			n++
		}
	}
	return n
}

// maxOverlap returns the largest number of builds that ran at one moment.
// At equal timestamps an end counts before a start.
func (tr buildTrace) maxOverlap() int {
	type event struct {
		at    time.Time
		delta int
	}
	var evs []event
	for _, sp := range tr.spans {
		evs = append(evs, event{sp.start, +1}, event{sp.endOrForever(), -1})
	}
	slices.SortFunc(evs, func(a, b event) int {
		if c := a.at.Compare(b.at); c != 0 {
			return c
		}
		return a.delta - b.delta
	})
	cur, most := 0, 0
	for _, e := range evs {
		cur += e.delta
		most = max(most, cur)
	}
	return most
}

// checkStartedOnce reports every build in ids that did not start exactly
// once, and every started build not in ids.
func (tr buildTrace) checkStartedOnce(t *testing.T, ids ...string) {
	t.Helper()
	for _, id := range ids {
		if sp := tr.spans[id]; sp == nil || sp.starts != 1 {
			n := 0
			if sp != nil {
				n = sp.starts
			}
			t.Errorf("build %s: started %d times, want exactly once", id, n)
		}
	}
	for id := range tr.spans {
		if !slices.Contains(ids, id) {
			t.Errorf("build %s started, but it is none of the accepted builds %v", id, ids)
		}
	}
}

// checkSerialized reports builds of one branch that overlapped or ran out of
// request order; ids are in request order.
func (tr buildTrace) checkSerialized(t *testing.T, ids ...string) {
	t.Helper()
	for i := 1; i < len(ids); i++ {
		prev, next := tr.spans[ids[i-1]], tr.spans[ids[i]]
		if prev == nil || next == nil {
			t.Errorf("builds %s and %s: not both in the trace", ids[i-1], ids[i])
			continue
		}
		if prev.end.IsZero() || next.start.Before(prev.end) {
			t.Errorf("branch %s: build %s started at %s, before build %s (requested earlier) ended at %s; want one after the other, in request order",
				next.branch, next.id, fmtTime(next.start), prev.id, fmtTime(prev.end))
		}
	}
}

// checkBranchesSerialized reports any two builds of one branch that ran at
// the same moment.
func (tr buildTrace) checkBranchesSerialized(t *testing.T) {
	t.Helper()
	var spans []*span
	for _, sp := range tr.spans {
		spans = append(spans, sp)
	}
	for i, a := range spans {
		for _, b := range spans[i+1:] {
			if a.branch == b.branch && a.overlaps(*b) {
				t.Errorf("branch %s: builds %s [%s, %s] and %s [%s, %s] overlap; want at most one running build per branch",
					a.branch, a.id, fmtTime(a.start), fmtTime(a.end), b.id, fmtTime(b.start), fmtTime(b.end))
			}
		}
	}
}

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "(never)"
	}
	return t.Format("15:04:05.000000")
}

func (tr buildTrace) String() string {
	var lines []string
	for _, sp := range tr.spans {
		lines = append(lines, fmt.Sprintf("%s %s %s..%s starts=%d", fmtTime(sp.start), sp.branch, sp.id, fmtTime(sp.end), sp.starts))
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}

// cluster returns a cluster on these build scripts, dumping their trace on
// failure; capacity is DECAP_MAX_RUNNING_BUILDS (0: no cap).
func (s *scriptsDir) cluster(capacity int) *proctest.Cluster {
	s.t.Helper()
	return newCluster(s.t, proctest.Options{Scripts: s.dir, Trace: s.trace, Cap: capacity})
}
