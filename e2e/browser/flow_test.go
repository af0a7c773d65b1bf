package browser_test

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/page"
	cdpruntime "github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
)

// flowBudget bounds one whole flow: browser start, two builds, screenshots.
const flowBudget = 150 * time.Second

// pauseReason is what the flow answers the "Pause dispatching?" prompt.
const pauseReason = "paused by the browser test"

// target is what a flow runs against.
type target struct {
	// base is the UI's origin, http://host:port.
	base  string
	token string
	// quick and slow are "team/project" keys. The quick project's build
	// succeeds within seconds, prints quickLastLine last and leaves
	// artifactName among its artifacts; the slow one prints slowLine early
	// and runs long enough to be cancelled.
	quick, slow   string
	quickLastLine string
	artifactName  string
	slowLine      string
	// shots is the directory of the screenshots.
	shots string
	// docs copies the dashboard and build page screenshots to
	// docs/screenshots/.
	docs bool
	// guarded says the pages need a session (ingest's sessions; the fake
	// API's pages are public): a page before signing in and after signing
	// out leads to the sign-in page.
	guarded bool
	// badges says the server serves status badges (ingest; not the fake
	// API); paging that its history fills more than one page of all
	// builds.
	badges, paging bool
	// live says the server streams the build events (GET /api/v1/events;
	// ingest, not the fake API): the pages update from them.
	live bool
	// times says the server answers the logs' line times (GET
	// .../log?times=1; ingest over the local executor, which also keeps a
	// running build's): the log view shows each line's elapsed time.
	times bool
}

// session is one headless Chromium with one tab.
type session struct {
	t   *testing.T
	tg  target
	ctx context.Context
	n   int // screenshots taken

	mu       sync.Mutex
	dialogs  []string // messages of the dialogs accepted
	problems []string // script exceptions and security (CSP) errors
	out      *os.File // the browser's stdout and stderr
}

// startSession starts Chromium as the machine's notes prescribe (headless,
// no sandbox as root, no background networking, a fresh profile) and
// accepts every dialog it opens.
func startSession(t *testing.T, tg target) *session {
	t.Helper()
	if err := os.MkdirAll(tg.shots, 0o755); err != nil {
		t.Fatal(err)
	}
	old, _ := filepath.Glob(filepath.Join(tg.shots, "*.png"))
	for _, p := range old {
		os.Remove(p)
	}
	out, err := os.Create(filepath.Join(t.TempDir(), "chromium.log"))
	if err != nil {
		t.Fatal(err)
	}
	s := &session{t: t, tg: tg, out: out}

	bound, cancelBound := context.WithTimeout(context.Background(), flowBudget)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(bound,
		chromedp.ExecPath(chromium),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 900),
		chromedp.CombinedOutput(out),
	)
	ctx, cancelCtx := chromedp.NewContext(allocCtx)
	t.Cleanup(func() {
		cancelCtx()
		cancelAlloc()
		cancelBound()
		out.Close()
		if t.Failed() {
			t.Logf("==== chromium output ====\n%s", readTail(out.Name()))
		}
	})
	s.ctx = ctx
	// The first action starts the browser; the time it takes counts
	// against the flow's budget.
	if err := chromedp.Do(ctx, chromedp.Navigate("about:blank")); err != nil {
		t.Fatalf("start chromium (%s): %v\n%s", chromium, err, readTail(out.Name()))
	}
	if _, err := chromedp.Call(ctx, cdplog.Enable, cdp.Empty{}); err != nil {
		t.Fatalf("enable the log domain: %v", err)
	}
	dialogs := chromedp.Events(ctx, page.JavascriptDialogOpening)
	go func() {
		for ev, err := range dialogs {
			if err != nil {
				return
			}
			s.note(&s.dialogs, ev.Message)
			answer := page.HandleJavaScriptDialogParams{Accept: true}
			if ev.Type == page.DialogTypePrompt {
				answer.PromptText = pauseReason
			}
			chromedp.Call(ctx, page.HandleJavaScriptDialog, answer)
		}
	}()
	exceptions := chromedp.Events(ctx, cdpruntime.ExceptionThrown)
	go func() {
		for ev, err := range exceptions {
			if err != nil {
				return
			}
			d := ev.ExceptionDetails
			msg := d.Text
			if d.Exception != nil && d.Exception.Description != "" {
				msg += " " + d.Exception.Description
			}
			s.note(&s.problems, fmt.Sprintf("script exception at %s:%d: %s", d.URL, d.LineNumber+1, msg))
		}
	}()
	entries := chromedp.Events(ctx, cdplog.EntryAdded)
	go func() {
		for ev, err := range entries {
			if err != nil {
				return
			}
			if e := ev.Entry; e.Source == cdplog.EntrySourceSecurity || e.Source == cdplog.EntrySourceJavascript && e.Level == cdplog.EntryLevelError {
				s.note(&s.problems, fmt.Sprintf("%s %s: %s (%s)", e.Source, e.Level, e.Text, e.URL))
			}
		}
	}()
	return s
}

func (s *session) note(list *[]string, msg string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	*list = append(*list, msg)
}

func (s *session) noted(list *[]string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(*list)
}

// do runs actions, failing the test with the page's state on error.
func (s *session) do(what string, actions ...chromedp.Action[chromedp.Void]) {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(s.ctx, 20*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		s.fatalf("%s: %v", what, err)
	}
}

func (s *session) navigate(path string) {
	s.t.Helper()
	s.do("open "+path, chromedp.Navigate(s.tg.base+path))
}

// eval evaluates a script that returns a string; a failure (say, while the
// page navigates) gives "" and the error.
func (s *session) eval(script string) (string, error) {
	ctx, cancel := context.WithTimeout(s.ctx, 5*time.Second)
	defer cancel()
	return chromedp.Run(ctx, chromedp.Evaluate[string](script))
}

// poll evaluates script until it returns a non-empty string, which it
// returns; "fail:…" fails the test at once. After timeout it returns "",
// false.
func (s *session) poll(timeout time.Duration, script string) (string, bool) {
	s.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		v, err := s.eval(script)
		if err == nil && v != "" {
			if msg, ok := strings.CutPrefix(v, "fail:"); ok {
				s.fatalf("%s", msg)
			}
			return v, true
		}
		if s.ctx.Err() != nil {
			s.fatalf("the flow's budget of %s is spent", flowBudget)
		}
		if time.Now().After(deadline) {
			return "", false
		}
		time.Sleep(150 * time.Millisecond)
	}
}

// waitFor is poll that fails the test on timeout.
func (s *session) waitFor(what string, timeout time.Duration, script string) string {
	s.t.Helper()
	v, ok := s.poll(timeout, script)
	if !ok {
		s.fatalf("timed out after %s waiting for %s", timeout, what)
	}
	return v
}

// shot saves a full-page PNG as NN-name.png and returns its path.
func (s *session) shot(name string) string {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(s.ctx, 15*time.Second)
	defer cancel()
	var png []byte
	var err error
	for {
		// A page between two documents (a click that navigates, a live
		// page reloading) has no layout yet: Chromium refuses to capture
		// it with "0 width". Capture again once it has one.
		png, err = chromedp.Run(ctx, chromedp.FullScreenshot(100))
		if err == nil || !strings.Contains(err.Error(), "0 width") || ctx.Err() != nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		s.t.Fatalf("screenshot %s: %v", name, err)
	}
	s.n++
	path := filepath.Join(s.tg.shots, fmt.Sprintf("%02d-%s.png", s.n, name))
	if err := os.WriteFile(path, png, 0o644); err != nil {
		s.t.Fatal(err)
	}
	return path
}

// pageState describes the page for a failure message.
const pageState = `(() => {
  const text = (sel) => { const el = document.querySelector(sel); return el ? el.textContent.trim() : ''; };
  const log = text('#log');
  return 'at ' + location.href + '; status: ' + text('h1 [data-field="status"]') +
    '; message: ' + text('#flash') + '; log state: ' + text('#log-state') +
    '; log tail: ' + JSON.stringify(log.slice(-400));
})()`

// fatalf fails the test with what the page showed, and a screenshot.
func (s *session) fatalf(format string, args ...any) {
	s.t.Helper()
	state, err := s.eval(pageState)
	if err != nil {
		state = "(page state unreadable: " + err.Error() + ")"
	}
	shot := "(none)"
	if s.ctx.Err() == nil {
		ctx, cancel := context.WithTimeout(s.ctx, 10*time.Second)
		if png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100)); err == nil {
			shot = filepath.Join(s.tg.shots, "failure.png")
			os.WriteFile(shot, png, 0o644)
		}
		cancel()
	}
	s.t.Fatalf("%s\npage %s\nscreenshot: %s\nproblems: %q", fmt.Sprintf(format, args...), state, shot, s.noted(&s.problems))
}

// js quotes s as a JavaScript string literal.
func js(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// buildState is a script that reports "ok" once the build page shows
// status want and a log containing line, and "fail:…" when the build ended
// otherwise.
func buildState(want, line string) string {
	return `(() => {
  const el = document.querySelector('h1 [data-field="status"]');
  const log = document.getElementById('log');
  if (!el || !log) return '';
  const s = el.textContent.trim();
  if (s === ` + js(want) + ` && log.textContent.includes(` + js(line) + `)) return 'ok';
  const final = ['succeeded', 'failed', 'timed_out', 'cancelled', 'errored', 'expired', 'skipped'];
  if (final.includes(s) && s !== ` + js(want) + `) return 'fail:the build ended ' + s + ', want ' + ` + js(want) + `;
  return '';
})()`
}

// runFlow is the whole browser flow against tg.
func runFlow(t *testing.T, tg target) {
	s := startSession(t, tg)

	// Without a session a page leads to the sign-in page, which comes
	// back to it.
	if tg.guarded {
		s.navigate("/ui/queue")
		s.waitFor("the sign-in page instead of the queue", 10*time.Second,
			`location.pathname === '/ui/login' && new URLSearchParams(location.search).get('next') === '/ui/queue' && document.getElementById('login') ? 'ok' : ''`)
	}

	// Sign in with the token; the session cookie then offers "Sign out".
	s.navigate("/ui/login?next=/")
	s.waitFor("the sign-in form", 10*time.Second, `document.getElementById('login') ? 'ok' : ''`)
	s.do("type the token", chromedp.SendKeys(chromedp.CSS(`#login input[name="token"]`), tg.token))
	s.shot("sign-in")
	s.do("sign in", chromedp.Click(chromedp.CSS(`#login button[type="submit"]`)))
	s.waitFor("the dashboard after signing in", 15*time.Second, `(() => {
  const flash = document.querySelector('#flash:not([hidden])');
  if (location.pathname === '/ui/login' && flash) return 'fail:sign-in failed: ' + flash.textContent;
  return location.pathname === '/' && document.querySelector('[data-action="logout"]') ? 'ok' : '';
})()`)
	s.shot("dashboard")

	// Pause dispatching (answering the prompt for a reason) and resume it.
	s.do("click Pause", chromedp.Click(chromedp.CSS(`button[data-action="pause"]`)))
	s.waitFor("the dispatch gate to show paused", 10*time.Second,
		`document.querySelector('button[data-action="resume"]') && document.querySelector('.gate').textContent.includes(`+js(pauseReason)+`) ? 'ok' : ''`)
	s.shot("dispatch-paused")
	s.do("click Resume", chromedp.Click(chromedp.CSS(`button[data-action="resume"]`)))
	s.waitFor("the dispatch gate to show running", 10*time.Second, `document.querySelector('button[data-action="pause"]') ? 'ok' : ''`)

	// Build the quick project from its page and watch the log to the end.
	quickID := s.requestBuild(tg.quick, "quick")
	s.waitFor("the quick build to succeed with its whole log", 45*time.Second, buildState("succeeded", tg.quickLastLine))
	if tg.times {
		s.waitFor("the log's line times", 10*time.Second, `document.getElementById('log').dataset.times === 'complete' ? 'ok' : ''`)
	}
	buildShot := s.shot("build-succeeded")

	// Its artifacts: the link appears once they are stored.
	href := s.waitFor("the artifacts link", 10*time.Second,
		`(() => { const a = document.getElementById('artifacts'); return a && !a.hidden ? a.href : ''; })()`)
	if want := tg.base + "/api/v1/builds/" + quickID + "/artifacts"; href != want {
		t.Errorf("artifacts link = %q, want %q", href, want)
	}
	checkTarball(t, href, tg.token, tg.artifactName)
	s.checkLogView(quickID)

	// Build the slow project, watch it stream, look around, cancel it.
	slowID := s.requestBuild(tg.slow, "slow")
	s.waitFor("the slow build to run and stream its log", 30*time.Second, buildState("running", tg.slowLine))
	s.waitFor("the follow toggle of a running build", 5*time.Second, `(() => {
  const label = document.getElementById('log-follow-label'), box = document.getElementById('log-follow');
  return label && !label.hidden && box && box.checked ? 'ok' : '';
})()`)
	if tg.times {
		// The live index: a tick printed 0.5 s after the one before
		// shows a later time, while the build runs.
		s.waitFor("elapsed times of a running build's lines", 15*time.Second, `(() => {
  const secs = (text) => {
    const line = [...document.querySelectorAll('#log .ln')].find((l) => l.querySelector('.t').textContent === text);
    const el = line && line.querySelector('.el[data-el]');
    const m = el && /([0-9.]+) s after the log began/.exec(el.title);
    return m ? Number(m[1]) : NaN;
  };
  const a = secs('slow tick 2 of 240'), b = secs('slow tick 4 of 240');
  if (isNaN(a) || isNaN(b)) return '';
  return b - a >= 0.8 && b - a < 5 ? 'ok' : 'fail:ticks 2 and 4 began ' + a + ' s and ' + b + ' s after the log began';
})()`)
	}
	s.shot("build-running")
	s.navigate("/")
	s.waitFor("the slow build among the running builds", 10*time.Second,
		`document.querySelector('table.running a[href="/ui/builds/`+slowID+`"]') ? 'ok' : ''`)
	dashboardShot := s.shot("dashboard-running")
	s.navigate("/ui/queue")
	s.shot("queue")
	s.navigate("/ui/locks")
	s.shot("locks")

	s.navigate("/ui/builds/" + slowID)
	s.waitFor("the cancel button", 10*time.Second, `(() => {
  const b = document.getElementById('cancel');
  return b && !b.hidden && document.querySelector('#log').textContent.includes(`+js(tg.slowLine)+`) ? 'ok' : '';
})()`)
	s.markPage()
	s.do("click Cancel", chromedp.Click(chromedp.CSS(`#cancel`)))
	s.waitFor("the slow build to end cancelled", 30*time.Second, buildState("cancelled", tg.slowLine))
	s.checkLive("the build page")
	s.waitFor("the log stream to end", 10*time.Second, `document.getElementById('build').dataset.logDone ? 'ok' : ''`)
	s.waitFor("no follow toggle once the build ended", 5*time.Second, `document.getElementById('log-follow-label').hidden ? 'ok' : ''`)
	s.shot("build-cancelled")
	projectShot := s.checkLists(quickID, slowID)
	if tg.live {
		s.checkLiveDashboard()
	}
	if d := s.noted(&s.dialogs); !slices.ContainsFunc(d, func(m string) bool { return strings.HasPrefix(m, "Cancel build") }) {
		t.Errorf("dialogs shown %q, want the confirmation of Cancel", d)
	}

	// Sign out: the session ends on the server, pages lead to sign in.
	s.do("click Sign out", chromedp.Click(chromedp.CSS(`button[data-action="logout"]`)))
	if tg.guarded {
		s.waitFor("the sign-in page after signing out", 10*time.Second, `location.pathname === '/ui/login' ? 'ok' : ''`)
		s.navigate("/ui/builds/" + slowID)
		s.waitFor("the sign-in page instead of a build", 10*time.Second, `location.pathname === '/ui/login' ? 'ok' : ''`)
		s.waitFor("a read refused without a session", 10*time.Second,
			`(() => { const x = new XMLHttpRequest(); x.open('GET', '/api/v1/builds/`+slowID+`', false); x.send(); return x.status === 401 ? 'ok' : ''; })()`)
	} else {
		s.waitFor("the sign-in link after signing out", 10*time.Second, `document.querySelector('[data-login]') ? 'ok' : ''`)
	}

	if p := s.noted(&s.problems); len(p) > 0 {
		t.Errorf("the pages had problems:\n%s", strings.Join(p, "\n"))
	}
	t.Logf("screenshots in %s", tg.shots)
	if tg.docs {
		for src, dst := range map[string]string{dashboardShot: "dashboard.png", buildShot: "build.png", projectShot: "project.png"} {
			copyFile(t, src, filepath.Join(moduleRoot, "docs", "screenshots", dst))
		}
	}
}

// markPage marks the page, so that checkLive tells whether it was
// reloaded since; with a live target it first waits for the page to
// listen to the build events.
func (s *session) markPage() {
	s.t.Helper()
	if s.tg.live {
		s.waitFor("the page to listen to the build events", 10*time.Second, `document.documentElement.dataset.live === 'on' ? 'ok' : ''`)
	}
	if _, err := s.eval(`window.decapMark = 'unreloaded'; ''`); err != nil {
		s.fatalf("mark the page: %v", err)
	}
}

// checkLive checks that the page marked by markPage was not reloaded,
// and, with a live target, that the build events reached it.
func (s *session) checkLive(page string) {
	s.t.Helper()
	s.waitFor(page+" changed in place, not reloaded", 5*time.Second, `(() => {
  if (window.decapMark !== 'unreloaded') return 'fail:the page was reloaded';
  if (`+js(fmt.Sprint(s.tg.live))+` === 'true' && !(Number(document.documentElement.dataset.liveEvents) > 0)) return 'fail:no build event reached the page';
  return 'ok';
})()`)
}

// checkLiveDashboard watches the dashboard while a build is requested and
// cancelled through the API: it shows the build and its end without being
// reloaded, from the build events.
func (s *session) checkLiveDashboard() {
	s.t.Helper()
	s.navigate("/")
	s.markPage()
	id := s.waitFor("a build requested from the dashboard", 15*time.Second, `(() => {
  if (window.decapRequested) return window.decapRequested;
  if (window.decapRequesting) return '';
  window.decapRequesting = true;
  fetch('/api/v1/projects/`+s.tg.slow+`/builds', { method: 'POST', credentials: 'same-origin',
    headers: { 'X-Decap-CSRF': '1', 'Content-Type': 'application/json' }, body: JSON.stringify({ ref: 'main' }) })
    .then((r) => r.ok ? r.json() : Promise.reject(new Error('HTTP ' + r.status)))
    .then((b) => { window.decapRequested = b.id; }, (e) => { window.decapRequested = 'fail:' + e.message; });
  return '';
})()`)
	s.waitFor("the dashboard to show the new build running", 30*time.Second,
		`document.querySelector('table.running a[href="/ui/builds/`+id+`"]') ? 'ok' : ''`)
	if _, err := s.eval(`fetch('/api/v1/builds/` + id + `', { method: 'DELETE', credentials: 'same-origin', headers: { 'X-Decap-CSRF': '1' } }); ''`); err != nil {
		s.fatalf("cancel the build: %v", err)
	}
	s.waitFor("the dashboard to show the build cancelled", 30*time.Second, `(() => {
  const a = document.querySelector('table.builds a[href="/ui/builds/`+id+`"]');
  const st = a && a.closest('tr').querySelector('[data-field="status"]');
  return st && st.textContent === 'cancelled' && !document.querySelector('table.running a[href="/ui/builds/`+id+`"]') ? 'ok' : '';
})()`)
	s.shot("dashboard-live")
	s.checkLive("the dashboard")
}

// checkLogView looks at a finished build's log view: numbered lines, the
// colours of ANSI codes, sections and groups, markup shown as text, each
// line's elapsed time (where the target has them), the search box, and a
// link to a line.
func (s *session) checkLogView(id string) {
	s.t.Helper()
	s.waitFor("the log's sections, groups and colours", 10*time.Second, `(() => {
  const log = document.getElementById('log');
  if (log.querySelector('b, script, img')) return 'fail:text of the log became an element';
  const sec = [...log.querySelectorAll('details.sec > summary')].map((e) => e.textContent);
  if (!sec.some((t) => t.includes('--- compile')) || !sec.some((t) => t.includes('--- package'))) return '';
  const grp = log.querySelector('details.grp');
  if (!grp || grp.open || !grp.querySelector('summary').textContent.includes('steps')) return '';
  const green = log.querySelector('.a32.ab');
  if (!green || green.textContent !== 'compiled') return 'fail:no bold green "compiled"';
  const line = green.closest('.ln');
  if (!line.textContent.endsWith('compiled with <b>markup</b> & escapes')) return 'fail:the coloured line reads ' + JSON.stringify(line.textContent);
  const num = line.querySelector('a.n');
  if (!num || num.getAttribute('href') !== '#' + line.id || !/^L\d+$/.test(line.id)) return 'fail:the line has no link to itself';
  return 'ok';
})()`)
	if s.tg.times {
		s.checkElapsed()
	}
	s.do("search the log", chromedp.SendKeys(chromedp.CSS(`#log-search`), "all done"))
	s.waitFor("the search to find the last line", 5*time.Second, `(() => {
  const hits = document.querySelectorAll('#log .ln.hit');
  return hits.length === 1 && hits[0].textContent.includes(`+js(s.tg.quickLastLine)+`) &&
    document.getElementById('log-hits').textContent === '1 matching line' ? 'ok' : '';
})()`)
	s.do("show matching lines only", chromedp.Click(chromedp.CSS(`#log-only`)))
	s.waitFor("only the matching line shown", 5*time.Second, `(() => {
  const shown = [...document.querySelectorAll('#log .ln')].filter((e) => e.getClientRects().length > 0);
  return shown.length === 1 && shown[0].classList.contains('hit') ? 'ok' : '';
})()`)
	s.shot("build-log-search")
	anchor := s.waitFor("the coloured line's number", 5*time.Second, `document.querySelector('#log .a32').closest('.ln').id`)
	s.navigate("/")
	s.navigate("/ui/builds/" + id + "#" + anchor)
	s.waitFor("the linked line highlighted and in view", 10*time.Second, `(() => {
  const el = document.getElementById(`+js(anchor)+`);
  if (!el || !el.classList.contains('target')) return '';
  const r = el.getBoundingClientRect(), box = document.getElementById('log').getBoundingClientRect();
  return r.top >= box.top - 1 && r.bottom <= box.bottom + 1 ? 'ok' : '';
})()`)
	s.shot("build-log-line")
}

// checkElapsed looks at the elapsed-time gutter of the quick build's
// log: every line shows +M:SS, its title the time in tenths of a second,
// which grows with the script's sleeps; the toggle hides and shows it.
func (s *session) checkElapsed() {
	s.t.Helper()
	s.waitFor("the elapsed time of every line", 10*time.Second, `(() => {
  const log = document.getElementById('log');
  if (log.dataset.times !== 'complete' || !log.classList.contains('has-times')) return '';
  const lines = [...log.querySelectorAll('.ln')];
  const bad = lines.find((l) => !/^[+][0-9]+:[0-5][0-9]$/.test((l.querySelector('.el') || {dataset: {}}).dataset.el || ''));
  if (bad) return 'fail:line ' + bad.id + ' shows no elapsed time';
  const secs = (text) => {
    const line = lines.find((l) => l.querySelector('.t').textContent.startsWith(text));
    const m = line && /([0-9.]+) s after the log began/.exec(line.querySelector('.el').title);
    return m ? Number(m[1]) : NaN;
  };
  const first = secs('decap: build'), compile = secs('step: compile'), pack = secs('--- package');
  if (first !== 0) return 'fail:the first line began ' + first + ' s after the log began';
  if (!(pack - compile >= 0.5)) return 'fail:three sleeps of 0.2 s apart: step: compile at ' + compile + ' s, --- package at ' + pack + ' s';
  const el = lines[0].querySelector('.el');
  return el.dataset.el === '+0:00' && el.getBoundingClientRect().width > 0 ? 'ok' : 'fail:the first line\'s elapsed time is not shown';
})()`)
	s.do("hide the elapsed times", chromedp.Click(chromedp.CSS(`#log-times`)))
	s.waitFor("the elapsed times hidden", 5*time.Second, `document.querySelector('#log .ln .el').getClientRects().length === 0 ? 'ok' : ''`)
	s.do("show the elapsed times", chromedp.Click(chromedp.CSS(`#log-times`)))
	s.waitFor("the elapsed times shown", 5*time.Second, `document.querySelector('#log .ln .el').getClientRects().length > 0 ? 'ok' : ''`)
}

// checkLists looks at the lists around the builds: a project's history
// filtered by its form, all builds (paged), the teams page with each
// project's newest build, and the project's status badge. It returns the
// filtered project page's screenshot.
func (s *session) checkLists(quickID, slowID string) string {
	s.t.Helper()
	s.navigate("/ui/projects/" + s.tg.quick)
	s.waitFor("the history filter", 10*time.Second, `document.getElementById('history-filter') ? 'ok' : ''`)
	s.do("filter the history by status", chromedp.SetValue(chromedp.CSS(`#history-filter select[name="status"]`), "succeeded"),
		chromedp.SendKeys(chromedp.CSS(`#history-filter input[name="ref"]`), "main"),
		chromedp.Click(chromedp.CSS(`#history-filter button[type="submit"]`)))
	s.waitFor("the filtered history", 10*time.Second, `(() => {
  const q = new URLSearchParams(location.search);
  if (q.get('status') !== 'succeeded' || q.get('ref') !== 'main') return '';
  // The new URL shows before the page has been parsed to its end: the
  // history's table is the page's last part.
  if (document.readyState === 'loading') return '';
  const h = document.getElementById('history-h').parentElement;
  const statuses = [...h.querySelectorAll('table.builds [data-field="status"]')].map((e) => e.textContent);
  if (statuses.length === 0 || statuses.some((st) => st !== 'succeeded')) return 'fail:filtered statuses ' + statuses.join(',');
  if (h.querySelector('table.builds th') && [...h.querySelectorAll('table.builds th')].some((th) => th.textContent === 'Project')) return 'fail:a project column on the project page';
  return h.querySelector('a[href="/ui/builds/`+quickID+`"]') ? 'ok' : 'fail:the quick build is not listed';
})()`)
	projectShot := s.shot("project-filtered")
	s.navigate("/ui/projects/" + s.tg.quick + "?status=timed_out")
	s.waitFor("an empty filtered history", 10*time.Second, `document.getElementById('history-h').parentElement.textContent.includes('No builds match.') ? 'ok' : ''`)

	s.navigate("/ui/builds")
	s.waitFor("all builds", 10*time.Second, `(() => {
  const t = document.querySelector('table.builds');
  return t && t.querySelector('a[href="/ui/builds/`+quickID+`"]') && t.querySelector('a[href="/ui/builds/`+slowID+`"]') ? 'ok' : '';
})()`)
	s.shot("all-builds")
	if s.tg.paging {
		s.do("open the next page", chromedp.Click(chromedp.CSS(`a[rel="next"]`)))
		s.waitFor("the second page of all builds", 10*time.Second, `(() => {
  if (new URLSearchParams(location.search).get('page') !== '2') return '';
  const rows = document.querySelectorAll('table.builds tbody tr').length;
  if (document.querySelector('a[href="/ui/builds/`+quickID+`"]')) return 'fail:the newest build on the second page';
  return rows > 0 && document.querySelector('a[rel="prev"]') ? 'ok' : '';
})()`)
		s.shot("all-builds-page-2")
	}

	s.navigate("/ui/teams")
	s.waitFor("the quick project's newest build on the teams page", 10*time.Second, `(() => {
  const a = document.querySelector('table.projects a[href="/ui/builds/`+quickID+`"]');
  return a && a.closest('tr').textContent.includes('succeeded') ? 'ok' : '';
})()`)
	s.shot("teams")

	if s.tg.badges {
		s.navigate("/badge/" + s.tg.quick + ".svg")
		s.waitFor("the quick project's badge", 10*time.Second, `(() => {
  const root = document.documentElement;
  if (root.tagName !== 'svg') return '';
  const texts = [...root.querySelectorAll('text')].map((e) => e.textContent);
  return texts.length === 2 && texts[0] === 'build' && texts[1] === 'succeeded' ? 'ok' : 'fail:badge texts ' + texts.join(',');
})()`)
		s.shot("badge")
	}
	s.navigate("/")
	s.waitFor("the dashboard", 10*time.Second, `document.querySelector('[data-action="logout"]') ? 'ok' : ''`)
	return projectShot
}

// requestBuild opens a project's page and clicks "Build" on its main branch
// (or its first branch); if the repository manager cannot list the
// branches, it builds main by name with the form next to the list. It
// returns the ID of the build whose page the UI then shows.
func (s *session) requestBuild(project, name string) string {
	s.t.Helper()
	s.navigate("/ui/projects/" + project)
	state, ok := s.poll(15*time.Second, `(() => {
  const r = document.getElementById('refs');
  if (!r) return 'fail:the project page offers no builds';
  return r.dataset.state === 'loading' ? '' : r.dataset.state;
})()`)
	s.shot("project-" + name)
	button, _ := s.eval(`(() => {
  const main = '#refs table[data-reftype="branch"] button[data-ref="main"]';
  const any = '#refs table[data-reftype="branch"] button';
  return document.querySelector(main) ? main : document.querySelector(any) ? any : '';
})()`)
	if ok && state == "loaded" && button != "" {
		s.do("click Build on a branch", chromedp.Click(chromedp.CSS(button)))
	} else {
		why, _ := s.eval(`(document.querySelector('[data-refs-status]') || {}).textContent || ''`)
		s.t.Logf("%s: no branch listed (refs %q: %s); building main by name", project, state, why)
		s.do("build main by name",
			chromedp.SendKeys(chromedp.CSS(`#build-form input[name="ref"]`), "main"),
			chromedp.Click(chromedp.CSS(`#build-form button[type="submit"]`)))
	}
	return s.waitFor("the new build's page", 15*time.Second, `(() => {
  const flash = document.querySelector('#flash:not([hidden])');
  if (location.pathname.startsWith('/ui/projects/') && flash) return 'fail:build request failed: ' + flash.textContent;
  return location.pathname.startsWith('/ui/builds/') && document.getElementById('build') ? location.pathname.slice('/ui/builds/'.length) : '';
})()`)
}

// checkTarball downloads url with the API token and checks that it is a
// gzip-compressed tar with a file named want.
func checkTarball(t *testing.T, url, token, want string) {
	t.Helper()
	client := &http.Client{Timeout: 15 * time.Second}
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("download artifacts: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET %s = %d: %s", url, resp.StatusCode, body)
	}
	zr, err := gzip.NewReader(resp.Body)
	if err != nil {
		t.Fatalf("artifacts are not gzip: %v", err)
	}
	tr := tar.NewReader(zr)
	var names []string
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("artifacts are not a tarball: %v (entries so far %q)", err, names)
		}
		names = append(names, h.Name)
	}
	if !slices.ContainsFunc(names, func(n string) bool { return filepath.Base(n) == want }) {
		t.Errorf("artifacts hold %q, want %s among them", names, want)
	}
}

func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, data, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("updated %s", dst)
}

// readTail returns the last 16 KiB of a file.
func readTail(path string) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return "(" + err.Error() + ")"
	}
	if len(data) > 16<<10 {
		return "…" + string(data[len(data)-16<<10:])
	}
	return string(data)
}
