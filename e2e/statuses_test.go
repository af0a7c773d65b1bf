package e2e_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/decap-ci/decap/internal/proctest"
)

// hangingGitHub is GitHub's commit statuses endpoint, which can be down:
// a status posted while it is down hangs until it is up again (or 5 s
// pass), and is then answered 503. It records the statuses it took, in
// order, as "<sha> <state> <description>".
type hangingGitHub struct {
	*httptest.Server
	mu       sync.Mutex
	up       chan struct{} // closed while up
	tried    int           // status posts while down
	statuses []string
}

func newHangingGitHub(t *testing.T) *hangingGitHub {
	t.Helper()
	gh := &hangingGitHub{up: make(chan struct{})}
	path := regexp.MustCompile(`^/repos/[^/]+/[^/]+/statuses/([0-9a-f]+)$`)
	gh.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "application/json")
		m := path.FindStringSubmatch(r.URL.Path)
		if r.Method != http.MethodPost || m == nil {
			w.WriteHeader(http.StatusNotFound)
			io.WriteString(w, `{"message":"Not Found"}`)
			return
		}
		gh.mu.Lock()
		up := gh.up
		select {
		case <-up:
		default:
			gh.tried++
		}
		gh.mu.Unlock()
		select {
		case <-up:
		case <-time.After(5 * time.Second):
		case <-r.Context().Done():
		}
		select {
		case <-up:
		default:
			w.WriteHeader(http.StatusServiceUnavailable)
			io.WriteString(w, `{"message":"Service Unavailable"}`)
			return
		}
		var st struct{ State, Description string }
		_ = json.Unmarshal(body, &st)
		gh.mu.Lock()
		gh.statuses = append(gh.statuses, m[1]+" "+st.State+" "+st.Description)
		gh.mu.Unlock()
		w.WriteHeader(http.StatusCreated)
		io.WriteString(w, `{"id":1}`)
	}))
	t.Cleanup(gh.Close)
	return gh
}

func (gh *hangingGitHub) setUp() {
	gh.mu.Lock()
	defer gh.mu.Unlock()
	close(gh.up)
}

func (gh *hangingGitHub) snapshot() (tried int, statuses []string) {
	gh.mu.Lock()
	defer gh.mu.Unlock()
	return gh.tried, slices.Clone(gh.statuses)
}

// TestCommitStatusesFromTheEventStream: with GitHub hanging, ingest still
// answers a push at once and the build runs to its end; the commit
// statuses wait. When GitHub is back, the build's statuses arrive, each
// once, in order: pending (queued), pending (running), success. The
// reaper posts them from the build-event stream (consumer group
// github-statuses), not ingest or the reaper inline.
func TestCommitStatusesFromTheEventStream(t *testing.T) {
	t.Parallel()
	requireE2E(t)
	gh := newHangingGitHub(t)
	s := newScripts(t)
	s.add("e2e", "statuses", validDescriptor, "#!/usr/bin/env bash\necho built\n")
	c := newCluster(t, proctest.Options{Scripts: s.dir, Env: []string{
		"DECAP_GITHUB_TOKEN=ghp_e2e-statuses-token",
		"DECAP_GITHUB_API_URL=" + gh.URL + "/",
	}})
	c.Start("reaper")
	c.Start("dispatcher")
	c.Start("ingest")

	payload := proctest.PushPayload("e2e", "statuses", "main")
	var push struct{ After string }
	if err := json.Unmarshal(payload, &push); err != nil {
		t.Fatal(err)
	}
	// The client's bound is far below the 5 s GitHub hangs for each try:
	// an answer that waited on GitHub would fail here.
	client := &http.Client{Timeout: 4 * time.Second}
	id, err := c.SendPush(client, proctest.NewDelivery(), payload)
	if err != nil {
		t.Fatalf("push while GitHub hangs: %v", err)
	}
	c.WaitSucceeded(id)
	c.WaitFor(proctest.BuildTimeout, "a status tried while GitHub is down", func() (bool, string) {
		tried, _ := gh.snapshot()
		return tried > 0, ""
	})
	if _, got := gh.snapshot(); len(got) != 0 {
		t.Fatalf("statuses taken while GitHub was down: %v", got)
	}

	gh.setUp()
	short := id[:8] + "…"
	want := []string{
		push.After + " pending build " + short + " queued",
		push.After + " pending build " + short + " running",
		push.After + " success build " + short + " succeeded in ",
	}
	var got []string
	c.WaitFor(2*time.Minute, "every commit status once GitHub is back", func() (bool, string) {
		_, got = gh.snapshot()
		return len(got) >= len(want), strings.Join(got, "; ")
	})
	time.Sleep(time.Second) // a status posted twice would come now
	_, got = gh.snapshot()
	if len(got) != len(want) {
		t.Fatalf("statuses: got %q, want %q", got, want)
	}
	for i := range want {
		if !strings.HasPrefix(got[i], want[i]) {
			t.Errorf("status %d: got %q, want %q…", i, got[i], want[i])
		}
	}
}
