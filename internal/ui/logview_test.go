package ui_test

import (
	"strings"
	"testing"

	"github.com/decap-ci/decap/internal/ui"
)

// The build page carries the log view's controls: a search box, a
// follow-the-end toggle while the build runs, links to the raw log, and
// the bounds of what the page loads and keeps.
func TestBuildPageLogView(t *testing.T) {
	t.Parallel()
	f := newFixture(t, ui.Config{LogTailBytes: 4096, LogMaxLines: 500})
	tests := []struct {
		name, build string
		follow      bool
	}{
		{"running", "running", true},
		{"finished", "ok0", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			body := checkHTML(t, get(t, f.e, "/ui/builds/"+string(f.ids[tt.build])))
			for _, want := range []string{
				`<input type="search" id="log-search"`,
				`<input type="checkbox" id="log-only">`,
				`data-log-expand="open"`,
				`<div id="log" class="log" tabindex="0" role="log" data-tail="4096" data-max-lines="500">`,
				`href="/api/v1/builds/` + string(f.ids[tt.build]) + `/log">raw log</a>`,
				`<p id="log-notice" class="small muted" hidden>`,
				`The page keeps the last 500 lines`,
			} {
				if !strings.Contains(body, want) {
					t.Errorf("build page lacks %q", want)
				}
			}
			follow := `<label id="log-follow-label"><input type="checkbox" id="log-follow" checked>`
			if got := strings.Contains(body, follow); got != tt.follow {
				t.Errorf("follow toggle shown: %v, want %v", got, tt.follow)
			}
			if !tt.follow && !strings.Contains(body, `<label id="log-follow-label" hidden>`) {
				t.Errorf("a finished build's page lacks the hidden follow toggle (shown should it run again)")
			}
		})
	}
}

// A waiting build's page carries its progress bar, hidden, with the
// project's average: the page shows it once it sees the build start.
func TestWaitingBuildPageHasItsProgressBar(t *testing.T) {
	t.Parallel()
	f := newFixture(t, ui.Config{})
	body := checkHTML(t, get(t, f.e, "/ui/builds/"+string(f.ids["deferred"])))
	want := `<p class="progress" data-field="progress" hidden>`
	if !strings.Contains(body, want) {
		t.Fatalf("a deferred build's page lacks %q", want)
	}
	if !strings.Contains(body, `data-elapsed-ms="0" data-average-ms="60000"`) {
		t.Errorf("its bar lacks the project's average:\n%s", excerpt(body, want))
	}
	body = checkHTML(t, get(t, f.e, "/ui/builds/"+string(f.ids["ok0"])))
	if strings.Contains(body, `data-field="progress"`) {
		t.Errorf("a finished build's page has a progress bar")
	}
}
