package ui

import (
	"context"
	"fmt"
	"net/url"

	"github.com/labstack/echo/v4"

	"github.com/decap-ci/decap/internal/build"
)

// historyFilter narrows a project's history to one ref, status and
// trigger (query parameters ref, status, trigger; empty: any).
type historyFilter struct {
	Ref     string
	Status  build.Status
	Trigger build.Trigger
}

// statuses and triggers are what the history can be filtered by.
var (
	statuses = []build.Status{build.StatusQueued, build.StatusDeferred, build.StatusRunning, build.StatusSucceeded,
		build.StatusFailed, build.StatusTimedOut, build.StatusCancelled, build.StatusErrored, build.StatusExpired,
		build.StatusSkipped, build.StatusSuperseded}
	triggers = []build.Trigger{build.TriggerPush, build.TriggerPullRequest, build.TriggerManual, build.TriggerAPI}
)

// parseHistoryFilter reads and validates the filter of a project page.
func parseHistoryFilter(c echo.Context) (historyFilter, error) {
	f := historyFilter{Ref: c.QueryParam("ref"), Status: build.Status(c.QueryParam("status")), Trigger: build.Trigger(c.QueryParam("trigger"))}
	if f.Ref != "" {
		if err := build.ValidateRef(f.Ref); err != nil {
			return historyFilter{}, err
		}
	}
	if f.Status != "" && !f.Status.Valid() {
		return historyFilter{}, fmt.Errorf("%w: no build status %q", build.ErrInvalid, f.Status)
	}
	if f.Trigger != "" && !validTrigger(f.Trigger) {
		return historyFilter{}, fmt.Errorf("%w: no trigger %q", build.ErrInvalid, f.Trigger)
	}
	return f, nil
}

func validTrigger(t build.Trigger) bool {
	for _, v := range triggers {
		if v == t {
			return true
		}
	}
	return false
}

// Active reports whether the filter narrows anything.
func (f historyFilter) Active() bool { return f != historyFilter{} }

func (f historyFilter) match(r build.Record) bool {
	return (f.Ref == "" || r.Ref == f.Ref) && (f.Status == "" || r.Status == f.Status) &&
		(f.Trigger == "" || r.Trigger == f.Trigger)
}

// query is the filter's part of a page's URL, with cursor when not "".
func (f historyFilter) query(cursor string) string {
	q := url.Values{}
	if f.Ref != "" {
		q.Set("ref", f.Ref)
	}
	if f.Status != "" {
		q.Set("status", string(f.Status))
	}
	if f.Trigger != "" {
		q.Set("trigger", string(f.Trigger))
	}
	if cursor != "" {
		q.Set("cursor", cursor)
	}
	if len(q) == 0 {
		return ""
	}
	return "?" + q.Encode()
}

// Filtering reads the history a store page at a time (the Records
// port lists a project's records, newest first, and filters nothing):
// a filtered page reads until it has a page of matches or has looked at
// filterScan records, whichever comes first, and its "older" link goes
// on from there.
const (
	filterRead = 50
	filterScan = 500
)

// history is one page of a project's history.
type history struct {
	Builds []build.Record
	// Next is the store's cursor after the records looked at ("": the
	// end); Scanned how many records a filtered page looked at, and
	// Partial that it stopped at filterScan short of a full page.
	Next    string
	Scanned int
	Partial bool
}

// readHistory reads one page of the project's history from cursor,
// filtered by f.
func (u *UI) readHistory(ctx context.Context, team, project string, f historyFilter, cursor string) (history, error) {
	if !f.Active() {
		recs, next, err := u.deps.Records.ListProject(ctx, team, project, u.cfg.PageSize, cursor)
		return history{Builds: recs, Next: next}, err
	}
	var h history
	next := cursor
	for h.Scanned < filterScan && len(h.Builds) < u.cfg.PageSize {
		recs, n, err := u.deps.Records.ListProject(ctx, team, project, filterRead, next)
		if err != nil {
			return history{}, err
		}
		h.Scanned += len(recs)
		for _, r := range recs {
			if f.match(r) {
				h.Builds = append(h.Builds, r)
			}
		}
		next = n
		if next == "" {
			break
		}
	}
	h.Next = next
	h.Partial = next != "" && len(h.Builds) < u.cfg.PageSize
	return h, nil
}
