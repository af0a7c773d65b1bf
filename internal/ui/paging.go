package ui

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"sync"

	"github.com/labstack/echo/v4"

	"github.com/decap-ci/decap/internal/build"
)

// pager is where a page of a longer list is: ?page=<n>, from 1.
type pager struct {
	Page, Pages, Total int
	// From and To number the page's first and last item (from 1).
	From, To int
	// Prev and Next link the pages before and after ("" for none).
	Prev, Next string
	// Open says Total is not known: only whether there is more.
	Open bool
}

// maxPage bounds ?page= everywhere: a list read whole is shown in at most
// this many pages, and the builds of every project are merged for at most
// this many.
const maxPage = 50

// pageParam reads ?page= (1 when absent).
func pageParam(c echo.Context) (int, error) {
	v := c.QueryParam("page")
	if v == "" {
		return 1, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > maxPage {
		return 0, fmt.Errorf("%w: page must be a number from 1 to %d", build.ErrInvalid, maxPage)
	}
	return n, nil
}

// pageURL is the current URL with ?page=n (none for the first page).
func pageURL(c echo.Context, n int) string {
	u := *c.Request().URL
	q := u.Query()
	q.Del("page")
	if n > 1 {
		q.Set("page", strconv.Itoa(n))
	}
	u.RawQuery = q.Encode()
	return u.RequestURI()
}

// paginate returns the page of list that ?page= asks for, size at a time.
// A page past the end is empty, with a link back to the first.
func paginate[T any](c echo.Context, list []T, size int) ([]T, pager, error) {
	page, err := pageParam(c)
	if err != nil {
		return nil, pager{}, err
	}
	return pageOf(c, list, size, page, len(list))
}

// pagerAt is the pager of page, size at a time, of a list of total items
// read a page at a time: n items are on this page.
func pagerAt(c echo.Context, page, size, total, n int) pager {
	p := pager{Page: page, Total: total, Pages: max(1, (total+size-1)/size)}
	from := (page - 1) * size
	if n > 0 {
		p.From, p.To = from+1, from+n
	}
	if page > 1 {
		p.Prev = pageURL(c, min(page-1, p.Pages))
	}
	if from+n < total && page < maxPage {
		p.Next = pageURL(c, page+1)
	}
	return p
}

// pageOf is paginate with the page given, and total the length of the
// whole list (list may hold only its first page*size items).
func pageOf[T any](c echo.Context, list []T, size, page, total int) ([]T, pager, error) {
	p := pager{Page: page, Total: total, Pages: max(1, (total+size-1)/size)}
	from := min((page-1)*size, len(list))
	to := min(from+size, len(list))
	if from < to {
		p.From, p.To = from+1, to
	}
	if page > 1 {
		p.Prev = pageURL(c, min(page-1, p.Pages))
	}
	if to < total && page < maxPage {
		p.Next = pageURL(c, page+1)
	}
	return list[from:to], p, nil
}

// allBuildsView is the builds of every project, newest first.
type allBuildsView struct {
	Builds panel[[]build.Record]
	Pager  pager
	// Partial says some projects' builds could not be read.
	Partial string
	// Capped says the merge stops at maxPage pages: older builds are on
	// their projects' pages.
	Capped bool
}

// maxAllBuildsPage bounds the pages of all builds: page n reads n*PageSize
// records of every project.
const maxAllBuildsPage = 10

// allBuilds merges every catalog project's newest builds. Page n needs
// the newest n*PageSize of every project (the Records port pages each
// project's history by itself), so it reads that many of each, up to
// maxAllBuildsPage pages.
func (u *UI) allBuilds(c echo.Context) error {
	page, err := pageParam(c)
	if err != nil {
		return err
	}
	if page > maxAllBuildsPage {
		return fmt.Errorf("%w: all builds go back %d pages; older builds are on their projects' pages", build.ErrInvalid, maxAllBuildsPage)
	}
	v := allBuildsView{Builds: panel[[]build.Record]{Unavailable: notAvailable}}
	if u.deps.Records != nil && u.deps.Catalog != nil {
		ctx, cancel := u.ctx(c)
		defer cancel()
		n := page * u.cfg.PageSize
		recs, err := u.recentOfProjects(ctx, u.deps.Catalog.Projects(), n+1)
		if err != nil {
			v.Partial = "Some projects' builds could not be read: " + err.Error()
		}
		slices.SortFunc(recs, newestFirst)
		// One more than the page: whether there is a next.
		total := min(len(recs), n+1)
		var rows []build.Record
		rows, v.Pager, _ = pageOf(c, recs[:total], u.cfg.PageSize, page, total)
		v.Pager.Open = true
		v.Builds = panel[[]build.Record]{Data: rows}
		if page == maxAllBuildsPage {
			v.Pager.Next = ""
			v.Capped = len(recs) > n
		}
	}
	return u.render(c, http.StatusOK, "builds", "All builds", "builds", v)
}

// projectRow is a project with its newest build.
type projectRow struct {
	P build.Project
	// Last is the project's newest build; nil when it has none or it
	// could not be read (LastErr says why).
	Last    *build.Record
	LastErr string
	// TeamStart says the row is its team's first on the page.
	TeamStart bool
}

// projectsPageSize is how many projects a page lists.
const projectsPageSize = 50

// lastBuilds reads each project's newest build, a few at a time.
func (u *UI) lastBuilds(ctx context.Context, projects []build.Project) []projectRow {
	rows := make([]projectRow, len(projects))
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for i, p := range projects {
		rows[i].P = p
		rows[i].TeamStart = i == 0 || projects[i-1].Team != p.Team
		if u.deps.Records == nil {
			rows[i].LastErr = notAvailable
			continue
		}
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			recs, _, err := u.deps.Records.ListProject(ctx, p.Team, p.Project, 1, "")
			switch {
			case err != nil:
				rows[i].LastErr = "unavailable: " + err.Error()
			case len(recs) > 0:
				rows[i].Last = &recs[0]
			}
		}()
	}
	wg.Wait()
	return rows
}
