package ui

import (
	"cmp"
	"context"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/decap-ci/decap/internal/build"
)

// notAvailable is what a panel says when its backend is not wired in.
const notAvailable = "not available"

// panel is one part of a page that reads one backend: Unavailable says why
// it shows nothing ("not available" when the backend is not wired in, the
// error when reading failed); Data is what it shows otherwise.
type panel[T any] struct {
	Unavailable string
	Data        T
}

func failed[T any](what string, err error) panel[T] {
	return panel[T]{Unavailable: fmt.Sprintf("%s unavailable: %v", what, err)}
}

// progress is a build's elapsed time against its project's average.
type progress struct {
	Started  time.Time
	Elapsed  time.Duration
	Average  time.Duration // 0: no estimate
	Percent  int           // elapsed/average, capped at 100
	Overdue  bool          // elapsed past the average
	Estimate bool
}

// progressOf measures a running build against avg (0: no history).
func progressOf(r build.Record, avg time.Duration, now time.Time) progress {
	start := r.StartedAt
	if start.IsZero() {
		start = r.QueuedAt
	}
	p := progress{Started: start, Elapsed: max(now.Sub(start), 0), Average: avg}
	if avg > 0 {
		p.Estimate = true
		pct := int(100 * p.Elapsed / avg)
		p.Overdue = pct > 100
		p.Percent = min(pct, 100)
	}
	return p
}

// average returns the project's average successful build duration, 0 when
// there is no history or it cannot be read.
func (u *UI) average(ctx context.Context, team, project string) time.Duration {
	avg, n, err := u.deps.Records.AverageDuration(ctx, team, project, u.cfg.AverageOver)
	if err != nil || n == 0 {
		return 0
	}
	return avg
}

type runningBuild struct {
	build.Record
	Progress progress
}

type dashboardView struct {
	Gate    panel[build.GateState]
	Running panel[[]runningBuild]
	Stats   panel[build.QueueStats]
	Waiting panel[[]waitingRow]
	// MoreWaiting is how many waiting requests the dashboard leaves to
	// the queue page.
	MoreWaiting int
	Recent      panel[[]build.Record]
	// RecentPartial says some projects' histories could not be read.
	RecentPartial string
}

func (u *UI) dashboard(c echo.Context) error {
	ctx, cancel := u.ctx(c)
	defer cancel()
	v := dashboardView{
		Gate:    u.gatePanel(ctx),
		Stats:   u.statsPanel(ctx),
		Running: panel[[]runningBuild]{Unavailable: notAvailable},
		Waiting: panel[[]waitingRow]{Unavailable: notAvailable},
		Recent:  panel[[]build.Record]{Unavailable: notAvailable},
	}
	if u.deps.Records == nil {
		return u.render(c, http.StatusOK, "dashboard", "Dashboard", "dashboard", v)
	}
	now := u.now()
	running, err := u.deps.Records.Running(ctx)
	if err != nil {
		v.Running = failed[[]runningBuild]("running builds", err)
	} else {
		v.Running = panel[[]runningBuild]{}
		avgs := map[string]time.Duration{}
		for _, r := range running {
			avg, ok := avgs[r.ProjectKey()]
			if !ok {
				avg = u.average(ctx, r.Team, r.Project)
				avgs[r.ProjectKey()] = avg
			}
			v.Running.Data = append(v.Running.Data, runningBuild{Record: r, Progress: progressOf(r, avg, now)})
		}
	}
	var waiting int
	v.Waiting, waiting = u.waitingPanel(ctx, v.Gate.Data, 0, u.cfg.RecentBuilds)
	v.MoreWaiting = max(0, waiting-len(v.Waiting.Data))

	recent := map[build.ID]build.Record{}
	for _, r := range running {
		recent[r.BuildID] = r
	}
	// The newest waiting requests are among their projects' newest builds
	// below: the oldest ones listed above are not recent.
	if u.deps.Catalog != nil {
		recs, err := u.recentOfProjects(ctx, u.deps.Catalog.Projects(), u.cfg.RecentPerProject)
		for _, r := range recs {
			recent[r.BuildID] = r
		}
		if err != nil {
			v.RecentPartial = "Some projects' builds could not be read: " + err.Error()
		}
	}
	list := make([]build.Record, 0, len(recent))
	for _, r := range recent {
		list = append(list, r)
	}
	slices.SortFunc(list, newestFirst)
	v.Recent = panel[[]build.Record]{Data: list[:min(len(list), u.cfg.RecentBuilds)]}
	return u.render(c, http.StatusOK, "dashboard", "Dashboard", "dashboard", v)
}

// newestFirst orders records by QueuedAt, then build ID, newest first, as
// Records.ListProject does.
// newest reads a project's newest n builds, a store page at a time.
func (u *UI) newest(ctx context.Context, team, project string, n int) ([]build.Record, error) {
	var out []build.Record
	cursor := ""
	for len(out) < n {
		recs, next, err := u.deps.Records.ListProject(ctx, team, project, min(n-len(out), 100), cursor)
		if err != nil {
			return out, err
		}
		out = append(out, recs...)
		if next == "" || len(recs) == 0 {
			break
		}
		cursor = next
	}
	return out[:min(len(out), n)], nil
}

func newestFirst(a, b build.Record) int {
	if c := b.QueuedAt.Compare(a.QueuedAt); c != 0 {
		return c
	}
	return cmp.Compare(b.BuildID, a.BuildID)
}

// recentOfProjects reads the newest n builds of each project, a few
// projects at a time; it returns what it read and the first error.
func (u *UI) recentOfProjects(ctx context.Context, projects []build.Project, n int) ([]build.Record, error) {
	var (
		mu    sync.Mutex
		out   []build.Record
		first error
		wg    sync.WaitGroup
		sem   = make(chan struct{}, 8)
	)
	for _, p := range projects {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			recs, err := u.newest(ctx, p.Team, p.Project, n)
			mu.Lock()
			defer mu.Unlock()
			if err != nil && first == nil {
				first = fmt.Errorf("builds of %s: %w", p.Key(), err)
			}
			out = append(out, recs...)
		}()
	}
	wg.Wait()
	return out, first
}

func (u *UI) gatePanel(ctx context.Context) panel[build.GateState] {
	if u.deps.Gate == nil {
		return panel[build.GateState]{Unavailable: notAvailable}
	}
	g, err := u.deps.Gate.Get(ctx)
	if err != nil {
		return failed[build.GateState]("dispatch gate", err)
	}
	return panel[build.GateState]{Data: g}
}

func (u *UI) statsPanel(ctx context.Context) panel[build.QueueStats] {
	if u.deps.Queue == nil {
		return panel[build.QueueStats]{Unavailable: notAvailable}
	}
	s, err := u.deps.Queue.Stats(ctx)
	if err != nil {
		return failed[build.QueueStats]("queue statistics", err)
	}
	return panel[build.QueueStats]{Data: s}
}

// waitingRow is a waiting request as the pages show it: why it waits and
// when it is tried next, in the light of the dispatch gate.
type waitingRow struct {
	build.Record
	// Why is the record's reason and, while dispatch is paused, that.
	Why string
	// Paused says dispatch is paused: the request is tried when it
	// resumes, whatever its NextAttemptAt said (often a time long past).
	Paused bool
}

// waitingPanel reads a page of the waiting requests (from offset, at most
// limit) and how many wait in all; gate is the dispatch gate as the page
// read it (the open gate when it could not).
func (u *UI) waitingPanel(ctx context.Context, gate build.GateState, offset, limit int) (panel[[]waitingRow], int) {
	if u.deps.Records == nil {
		return panel[[]waitingRow]{Unavailable: notAvailable}, 0
	}
	w, total, err := u.deps.Records.Waiting(ctx, offset, limit)
	if err != nil {
		return failed[[]waitingRow]("waiting builds", err), 0
	}
	rows := make([]waitingRow, 0, len(w))
	for _, r := range w {
		row := waitingRow{Record: r, Why: r.Reason, Paused: gate.Paused}
		if gate.Paused {
			paused := "dispatch is paused"
			if gate.Reason != "" {
				paused += " (" + gate.Reason + ")"
			}
			if row.Why == "" {
				row.Why = paused
			} else {
				row.Why += "; " + paused
			}
		}
		rows = append(rows, row)
	}
	return panel[[]waitingRow]{Data: rows}, total
}

// teamsView is the teams page: the catalog's projects by team, each with
// its newest build, and the entries of the build-scripts repository it
// skipped for their names.
type teamsView struct {
	panel[[]projectRow]
	Pager   pager
	Teams   int
	Skipped []string
}

func (u *UI) teams(c echo.Context) error {
	v := teamsView{panel: panel[[]projectRow]{Unavailable: notAvailable}}
	if u.deps.Catalog != nil {
		ctx, cancel := u.ctx(c)
		defer cancel()
		projects := slices.Clone(u.deps.Catalog.Projects())
		slices.SortFunc(projects, func(a, b build.Project) int {
			return cmp.Or(strings.Compare(a.Team, b.Team), strings.Compare(a.Project, b.Project))
		})
		teams := map[string]bool{}
		for _, p := range projects {
			teams[p.Team] = true
		}
		page, pg, err := paginate(c, projects, projectsPageSize)
		if err != nil {
			return err
		}
		v = teamsView{panel: panel[[]projectRow]{Data: u.lastBuilds(ctx, page)}, Pager: pg, Teams: len(teams),
			Skipped: u.deps.Catalog.Skipped()}
	}
	return u.render(c, http.StatusOK, "teams", "Teams", "teams", v)
}

type teamView struct {
	Team     string
	Projects panel[[]projectRow]
	Pager    pager
}

func (u *UI) team(c echo.Context) error {
	team := c.Param("team")
	if err := build.ValidateName("team", team); err != nil {
		return err
	}
	v := teamView{Team: team, Projects: panel[[]projectRow]{Unavailable: notAvailable}}
	if u.deps.Catalog != nil {
		var projects []build.Project
		for _, p := range u.deps.Catalog.Projects() {
			if p.Team == team {
				projects = append(projects, p)
			}
		}
		if len(projects) == 0 {
			return fmt.Errorf("team %s: %w in the catalog", team, build.ErrNotFound)
		}
		page, pg, err := paginate(c, projects, projectsPageSize)
		if err != nil {
			return err
		}
		ctx, cancel := u.ctx(c)
		defer cancel()
		v.Projects = panel[[]projectRow]{Data: u.lastBuilds(ctx, page)}
		v.Pager = pg
	}
	return u.render(c, http.StatusOK, "team", team, "teams", v)
}

type projectView struct {
	Team, Project string
	// Catalog is the project's catalog entry; nil when the catalog does not
	// know it (or is not available), e.g. a removed project with history.
	Catalog *build.Project
	Builds  panel[[]build.Record]
	// Cursor is this page's cursor ("" = newest), Next the next page's.
	Cursor, Next string
	// Filter narrows the history; Scanned and Partial say how far a
	// filtered page looked (history).
	Filter   historyFilter
	Scanned  int
	Partial  bool
	Statuses []build.Status
	Triggers []build.Trigger
	Average  time.Duration
	// Pulls are the open pull requests, each with its latest build.
	Pulls panel[[]pullView]
}

// OlderURL links the next page of the history, with the filter.
func (v projectView) OlderURL() string {
	return projectURL(v.Team, v.Project) + v.Filter.query(v.Next)
}

// NewestURL links the first page of the history, with the filter.
func (v projectView) NewestURL() string {
	return projectURL(v.Team, v.Project) + v.Filter.query("")
}

// pullView is one open pull request on its project's page.
type pullView struct {
	build.PullRequestState
	// Latest is the record of its latest build, nil when it has none (or
	// it could not be read).
	Latest *build.Record
}

// maxPullsShown bounds the pull requests a project page lists, and so the
// records it reads for them.
const maxPullsShown = 50

// pulls returns the project's open pull requests with their latest
// builds.
func (u *UI) pulls(ctx context.Context, team, project string) panel[[]pullView] {
	list, err := u.deps.Pulls.ListOpen(ctx, team, project)
	if err != nil {
		return failed[[]pullView]("pull requests", err)
	}
	if len(list) > maxPullsShown {
		list = list[len(list)-maxPullsShown:] // the newest
	}
	out := make([]pullView, 0, len(list))
	for _, p := range list {
		v := pullView{PullRequestState: p}
		if p.Build != "" && u.deps.Records != nil {
			if rec, err := u.deps.Records.Get(ctx, p.Build); err == nil {
				v.Latest = &rec
			}
		}
		out = append(out, v)
	}
	return panel[[]pullView]{Data: out}
}

func (u *UI) project(c echo.Context) error {
	team, project := c.Param("team"), c.Param("project")
	if err := build.ValidateName("team", team); err != nil {
		return err
	}
	if err := build.ValidateName("project", project); err != nil {
		return err
	}
	ctx, cancel := u.ctx(c)
	defer cancel()
	filter, err := parseHistoryFilter(c)
	if err != nil {
		return err
	}
	v := projectView{Team: team, Project: project, Cursor: c.QueryParam("cursor"), Filter: filter,
		Statuses: statuses, Triggers: triggers, Builds: panel[[]build.Record]{Unavailable: notAvailable}}
	if u.deps.Catalog != nil {
		for _, p := range u.deps.Catalog.Projects() {
			if p.Team == team && p.Project == project {
				v.Catalog = &p
				break
			}
		}
	}
	if u.deps.Records != nil {
		h, err := u.readHistory(ctx, team, project, filter, v.Cursor)
		switch {
		case err != nil && v.Cursor != "":
			return fmt.Errorf("builds of %s: %w", build.ProjectKey(team, project), err)
		case err != nil:
			v.Builds = failed[[]build.Record]("build history", err)
		default:
			v.Builds = panel[[]build.Record]{Data: h.Builds}
			v.Next, v.Scanned, v.Partial = h.Next, h.Scanned, h.Partial
			v.Average = u.average(ctx, team, project)
		}
	}
	if u.deps.Pulls != nil {
		v.Pulls = u.pulls(ctx, team, project)
	}
	if v.Catalog == nil && u.deps.Catalog != nil && len(v.Builds.Data) == 0 && v.Builds.Unavailable == "" && !filter.Active() {
		return fmt.Errorf("project %s: %w", build.ProjectKey(team, project), build.ErrNotFound)
	}
	return u.render(c, http.StatusOK, "project", build.ProjectKey(team, project), "teams", v)
}

type buildView struct {
	build.Record
	Progress progress
	// Chain links the build to the builds it repeats or gave way to.
	Chain []chainLink
	// LogTailBytes and LogMaxLines bound the log the page shows
	// (Config).
	LogTailBytes, LogMaxLines int
}

// chainLink is one link of a build's attempt chain: "rebuild of #41",
// "retry of #40 (attempt 2)", "superseded by #43".
type chainLink struct {
	Rel    string // what the other build is to this one
	ID     build.ID
	Number int    // the other build's number; 0 when unknown
	Note   string // more about this build, e.g. "(attempt 2)"
}

func (u *UI) build(c echo.Context) error {
	if u.deps.Records == nil {
		return fmt.Errorf("%w: build records are not available", build.ErrUnavailable)
	}
	id, err := build.ParseID(c.Param("id"))
	if err != nil {
		return err
	}
	ctx, cancel := u.ctx(c)
	defer cancel()
	r, err := u.deps.Records.Get(ctx, id)
	if err != nil {
		return fmt.Errorf("build %s: %w", id, err)
	}
	v := buildView{Record: r, Chain: u.chain(ctx, r), LogTailBytes: u.cfg.LogTailBytes, LogMaxLines: u.cfg.LogMaxLines}
	switch {
	case r.Status == build.StatusRunning:
		v.Progress = progressOf(r, u.average(ctx, r.Team, r.Project), u.now())
	case !r.Status.Final():
		// A waiting build's bar, hidden until the page sees it start.
		avg := u.average(ctx, r.Team, r.Project)
		v.Progress = progress{Average: avg, Estimate: avg > 0}
	}
	title := "Build " + shortID(r.BuildID)
	if r.Number > 0 {
		title = "Build #" + strconv.Itoa(r.Number)
	}
	return u.render(c, http.StatusOK, "build", title+" of "+r.ProjectKey(), "", v)
}

// chain returns r's links to the builds it is linked with — the build it
// rebuilds, the attempt it retries, its own retry, the build that
// superseded it — each with that build's number when its record can be
// read.
func (u *UI) chain(ctx context.Context, r build.Record) []chainLink {
	var links []chainLink
	add := func(rel string, id build.ID, note string) {
		l := chainLink{Rel: rel, ID: id, Note: note}
		if other, err := u.deps.Records.Get(ctx, id); err == nil {
			l.Number = other.Number
		}
		links = append(links, l)
	}
	if r.RebuildOf != "" {
		add("rebuild of", r.RebuildOf, "")
	}
	if r.RetryOf != "" {
		add("retry of", r.RetryOf, fmt.Sprintf("(this is attempt %d)", r.AttemptNumber()))
	}
	// A retry's ID follows from the build it retries; link it once its
	// record exists.
	if r.Infra != "" && r.Status.Final() && !r.FinishedAt.IsZero() {
		next := build.RetryID(r.BuildID, r.FinishedAt)
		if other, err := u.deps.Records.Get(ctx, next); err == nil && other.RetryOf == r.BuildID {
			links = append(links, chainLink{Rel: "retried as", ID: next, Number: other.Number,
				Note: fmt.Sprintf("(attempt %d)", other.AttemptNumber())})
		}
	}
	if by := r.SupersededBy; by != "" && r.Status == build.StatusSuperseded {
		add("superseded by", by, "")
	}
	return links
}

type queueView struct {
	Stats   panel[build.QueueStats]
	Waiting panel[[]waitingRow]
	Pager   pager
}

func (u *UI) queue(c echo.Context) error {
	ctx, cancel := u.ctx(c)
	defer cancel()
	page, err := pageParam(c)
	if err != nil {
		return err
	}
	v := queueView{Stats: u.statsPanel(ctx)}
	// One page of the waiting requests is read, not all of them.
	var total int
	v.Waiting, total = u.waitingPanel(ctx, u.gatePanel(ctx).Data, (page-1)*projectsPageSize, projectsPageSize)
	v.Pager = pagerAt(c, page, projectsPageSize, total, len(v.Waiting.Data))
	return u.render(c, http.StatusOK, "queue", "Queue", "queue", v)
}

type locksView struct {
	panel[[]build.Lease]
	Pager pager
}

func (u *UI) locks(c echo.Context) error {
	ctx, cancel := u.ctx(c)
	defer cancel()
	v := locksView{panel: panel[[]build.Lease]{Unavailable: notAvailable}}
	if u.deps.Locks != nil {
		leases, err := u.deps.Locks.List(ctx)
		if err != nil {
			v.panel = failed[[]build.Lease]("locks", err)
		} else {
			rows, pg, err := paginate(c, leases, projectsPageSize)
			if err != nil {
				return err
			}
			v = locksView{panel: panel[[]build.Lease]{Data: rows}, Pager: pg}
		}
	}
	return u.render(c, http.StatusOK, "locks", "Locks", "locks", v)
}

type loginView struct {
	// Next is where to go after signing in: a local path.
	Next string
}

func (u *UI) login(c echo.Context) error {
	return u.render(c, http.StatusOK, "login", "Sign in", "", loginView{Next: localPath(c.QueryParam("next"))})
}

// localPath returns p if it is a path on this site, else "/": a sign-in
// link must not send the user elsewhere.
func localPath(p string) string {
	if !strings.HasPrefix(p, "/") || strings.HasPrefix(p, "//") || strings.HasPrefix(p, "/\\") ||
		strings.ContainsAny(p, "\\\r\n\t") {
		return "/"
	}
	return p
}

type errorView struct {
	Status  int
	Title   string
	Message string
}
