package reliability_test

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"text/template"
	"time"

	"github.com/decap-ci/decap/internal/proctest"
)

const validDescriptor = `{"buildImage": "debian:bookworm-slim", "repoManager": "github"}`

var tracedTemplate = template.Must(template.ParseFiles(filepath.Join("testdata", "traced-build.sh.tmpl")))

// scriptsDir is a build-scripts directory whose projects append start and
// end lines to one trace file.
type scriptsDir struct {
	dir, trace string
}

func newScripts(t *testing.T) *scriptsDir {
	t.Helper()
	root := t.TempDir()
	s := &scriptsDir{dir: filepath.Join(root, "build-scripts"), trace: filepath.Join(root, "trace")}
	if err := os.MkdirAll(s.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	proctest.BuildWritable(t, s.trace) // builds may run under users of their own
	return s
}

// addTraced adds a project whose build sleeps a random time in [lo, hi].
func (s *scriptsDir) addTraced(t *testing.T, team, project string, lo, hi time.Duration) {
	t.Helper()
	s.addTracedWith(t, team, project, validDescriptor, lo, hi)
}

// addTracedWith is addTraced with the project.json descriptor.
func (s *scriptsDir) addTracedWith(t *testing.T, team, project, descriptor string, lo, hi time.Duration) {
	t.Helper()
	dir := filepath.Join(s.dir, team, project)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if err := tracedTemplate.Execute(&b, map[string]string{
		"Trace":     "'" + strings.ReplaceAll(s.trace, "'", `'\''`) + "'",
		"MinMillis": strconv.FormatInt(lo.Milliseconds(), 10),
		"MaxMillis": strconv.FormatInt(hi.Milliseconds(), 10),
	}); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "project.json"), []byte(descriptor), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "build.sh"), b.Bytes(), 0o755); err != nil {
		t.Fatal(err)
	}
}

// span is one build's run as the trace tells it.
type span struct {
	id, branch string
	start, end time.Time
	starts     int
}

// trace is the parsed trace file.
type trace map[string]*span

// apply adds one trace line; it returns the kind ("start"/"end") and span.
func (tr trace) apply(line string) (string, *span, error) {
	f := strings.Fields(line)
	if len(f) != 4 || (f[0] != "start" && f[0] != "end") {
		return "", nil, fmt.Errorf("trace line %q: want \"start|end <id> <branch> <unix-nanos>\"", line)
	}
	nanos, err := strconv.ParseInt(f[3], 10, 64)
	if err != nil {
		return "", nil, fmt.Errorf("trace line %q: %v", line, err)
	}
	sp := tr[f[1]]
	if sp == nil {
		sp = &span{id: f[1], branch: f[2]}
		tr[f[1]] = sp
	}
	at := time.Unix(0, nanos)
	if f[0] == "start" {
		sp.starts++
		if sp.start.IsZero() {
			sp.start = at
		}
	} else {
		sp.end = at
	}
	return f[0], sp, nil
}

func readTrace(path string) (trace, error) {
	tr := trace{}
	data, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return tr, nil
	}
	if err != nil {
		return nil, err
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		if _, _, err := tr.apply(sc.Text()); err != nil {
			return nil, err
		}
	}
	return tr, sc.Err()
}

func (tr trace) ended() int {
	n := 0
	for _, sp := range tr {
		if !sp.end.IsZero() {
			n++
		}
	}
	return n
}

// checkExact checks the whole trace, not samples of it: no two builds of a
// branch overlap, never more than capacity run at once (at equal times an
// end counts first), and every build started once.
func (tr trace) checkExact(t *testing.T, r *row, capacity int) {
	t.Helper()
	byBranch := map[string][]*span{}
	type event struct {
		at    time.Time
		delta int
	}
	var evs []event
	forever := time.Unix(1<<40, 0)
	for _, sp := range tr {
		if sp.starts != 1 {
			r.violate(t, "build %s (%s) started %d times, want once", sp.id, sp.branch, sp.starts)
		}
		byBranch[sp.branch] = append(byBranch[sp.branch], sp)
		end := sp.end
		if end.IsZero() {
			end = forever
		}
		evs = append(evs, event{sp.start, +1}, event{end, -1})
	}
	for branch, spans := range byBranch {
		slices.SortFunc(spans, func(a, b *span) int { return a.start.Compare(b.start) })
		for i := 1; i < len(spans); i++ {
			prev, next := spans[i-1], spans[i]
			if prev.end.IsZero() || next.start.Before(prev.end) {
				r.violate(t, "branch %s: build %s started at %s before build %s ended (%s): two running builds of one lock key",
					branch, next.id, next.start.Format("15:04:05.000000"), prev.id, prev.end.Format("15:04:05.000000"))
			}
		}
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
	if capacity > 0 && most > capacity {
		r.violate(t, "the trace shows %d builds running at once, above the cap of %d", most, capacity)
	}
	t.Logf("trace: %d builds, at most %d running at once (cap %d)", len(tr), most, capacity)
}

// monitor samples the running builds every 50 ms while a scenario runs:
// the builds the trace shows running (started, not yet ended) and the held
// locks of GET /api/v1/locks. A lock key with two running builds, or more
// running builds (or held leases) than the cap, is a violation.
type monitor struct {
	t        *testing.T
	c        *proctest.Cluster
	r        *row
	capacity int
	stop     chan struct{}
	done     chan struct{}

	mu      sync.Mutex
	tr      trace
	offset  int64
	partial []byte
	running map[string]*span // build ID → span
}

const sampleEvery = 50 * time.Millisecond

func startMonitor(t *testing.T, c *proctest.Cluster, r *row, capacity int) *monitor {
	m := &monitor{t: t, c: c, r: r, capacity: capacity, stop: make(chan struct{}), done: make(chan struct{}),
		tr: trace{}, running: map[string]*span{}}
	go m.loop()
	t.Cleanup(m.halt)
	return m
}

func (m *monitor) loop() {
	defer close(m.done)
	tick := time.NewTicker(sampleEvery)
	defer tick.Stop()
	for {
		select {
		case <-m.stop:
			m.sample() // a last one
			return
		case <-tick.C:
			m.sample()
		}
	}
}

// halt stops sampling (idempotent) and waits for the loop to end.
func (m *monitor) halt() {
	select {
	case <-m.stop:
	default:
		close(m.stop)
	}
	<-m.done
}

func (m *monitor) sample() {
	m.r.add(&m.r.samples, 1)
	m.readTrace()
	m.mu.Lock()
	perBranch := map[string][]string{}
	for id, sp := range m.running {
		perBranch[sp.branch] = append(perBranch[sp.branch], id)
	}
	n := len(m.running)
	m.mu.Unlock()
	for branch, ids := range perBranch {
		if len(ids) > 1 {
			m.r.violate(m.t, "monitor: branch %s has %d running builds at once: %v", branch, len(ids), ids)
		}
	}
	if m.capacity > 0 && n > m.capacity {
		m.r.violate(m.t, "monitor: %d builds running at once, above the cap of %d", n, m.capacity)
	}
	// The lock table, when ingest answers (it may be restarting or the
	// backend may be down: then there is nothing to sample).
	leases, err := m.c.Locks()
	if err != nil {
		return
	}
	keys := map[string]bool{}
	for _, l := range leases {
		if keys[l.LockKey] {
			m.r.violate(m.t, "monitor: lock key %s is held twice in GET /api/v1/locks", l.LockKey)
		}
		keys[l.LockKey] = true
	}
	if m.capacity > 0 && len(leases) > m.capacity {
		m.r.violate(m.t, "monitor: %d locks held at once, above the cap of %d", len(leases), m.capacity)
	}
}

// readTrace reads the lines appended since the last sample.
func (m *monitor) readTrace() {
	f, err := os.Open(m.c.Trace())
	if err != nil {
		return
	}
	defer f.Close()
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, err := f.Seek(m.offset, io.SeekStart); err != nil {
		return
	}
	data, _ := io.ReadAll(f)
	m.offset += int64(len(data))
	data = append(m.partial, data...)
	last := bytes.LastIndexByte(data, '\n')
	if last < 0 {
		m.partial = data
		return
	}
	m.partial = append([]byte(nil), data[last+1:]...)
	for _, line := range strings.Split(string(data[:last]), "\n") {
		kind, sp, err := m.tr.apply(line)
		if err != nil {
			m.r.violate(m.t, "monitor: %v", err)
			continue
		}
		if kind == "start" {
			m.running[sp.id] = sp
		} else {
			delete(m.running, sp.id)
		}
	}
}
