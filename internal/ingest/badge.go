package ingest

import (
	"context"
	"errors"
	"fmt"
	"html"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/decap-ci/decap/internal/build"
)

// Status badges: GET /badge/{team}/{project}.svg and
// /badge/{team}/{project}/{ref}.svg (the ref may hold slashes) answer an
// SVG of the status of the project's (or the ref's) last build that ended
// with a verdict. Who may read them is Config.PublicBadges' decision.

// badgeScan bounds the records one badge reads, newest first, looking for
// the last verdict: a ref built rarely among busy ones may show "none".
const (
	badgePage  = 50
	badgePages = 10
)

// badgeMaxAge is how long a client or proxy may keep a badge.
const badgeMaxAge = 60

// noVerdict are the final statuses that say nothing about the code: a
// request superseded or skipped before it ran. A badge skips them.
var noVerdict = map[build.Status]bool{build.StatusSuperseded: true, build.StatusSkipped: true}

// requireBadge guards the badges: with PublicBadges (or auth off) anyone
// may read them, else they are reads like any other.
func (s *Server) requireBadge(next echo.HandlerFunc) echo.HandlerFunc {
	read := s.requireRead(next)
	return func(c echo.Context) error {
		if s.cfg.PublicBadges || s.cfg.AuthDisabled {
			return next(c)
		}
		return read(c)
	}
}

// badgePath splits the path after /badge/ into team, project and ref ("" for
// the project's badge), each validated as every other entry point does.
func badgePath(p string) (team, project, ref string, err error) {
	rest, ok := strings.CutSuffix(p, ".svg")
	if !ok {
		return "", "", "", fmt.Errorf("%w: a badge's path ends in .svg: /badge/<team>/<project>[/<ref>].svg", build.ErrInvalid)
	}
	parts := strings.SplitN(rest, "/", 3)
	if len(parts) < 2 {
		return "", "", "", fmt.Errorf("%w: a badge's path is /badge/<team>/<project>[/<ref>].svg", build.ErrInvalid)
	}
	team, project = parts[0], parts[1]
	if err := build.ValidateName("team", team); err != nil {
		return "", "", "", err
	}
	if err := build.ValidateName("project", project); err != nil {
		return "", "", "", err
	}
	if len(parts) == 3 {
		ref = parts[2]
		if err := build.ValidateRef(ref); err != nil {
			return "", "", "", err
		}
	}
	return team, project, ref, nil
}

func (s *Server) badge(c echo.Context) error {
	p, err := pathValue(c, "*")
	if err != nil {
		return s.badgeAnswer(c, http.StatusBadRequest, "invalid", badgeGrey)
	}
	team, project, ref, err := badgePath(p)
	if err != nil {
		return s.badgeAnswer(c, http.StatusBadRequest, "invalid", badgeGrey)
	}
	e, err := s.badgeOf(c.Request().Context(), team, project)
	if err != nil {
		return fmt.Errorf("badge of %s: %w", build.ProjectKey(team, project), err)
	}
	if !e.seen {
		if _, _, err := s.deps.Catalog.Lookup(team, project); errors.Is(err, build.ErrNotFound) {
			return s.badgeAnswer(c, http.StatusNotFound, "unknown", badgeGrey)
		}
	}
	st := e.project
	if ref != "" {
		st = e.refs[ref]
	}
	if st == "" {
		return s.badgeAnswer(c, http.StatusOK, "none", badgeGrey)
	}
	return s.badgeAnswer(c, http.StatusOK, strings.ReplaceAll(string(st), "_", " "), badgeColour(st))
}

// badgeEntry is what the badges of one project show: the last verdict of
// the project and of each ref among its newest badgePage*badgePages
// records.
type badgeEntry struct {
	at      time.Time
	seen    bool // the project has records
	project build.Status
	refs    map[string]build.Status
}

// badgeCache keeps each project's badgeEntry for badgeFresh: badges are
// public where READMEs show them, and a flood of them, for any ref of a
// project, costs the store one scan of the project a badgeFresh at most.
// It forgets everything when it holds badgeProjects projects.
type badgeCache struct {
	mu      sync.Mutex
	entries map[string]badgeEntry
}

const (
	badgeFresh    = 10 * time.Second
	badgeProjects = 1024
)

// badgeOf returns the project's badgeEntry, read from the store unless a
// fresh one is kept.
func (s *Server) badgeOf(ctx context.Context, team, project string) (badgeEntry, error) {
	key := build.ProjectKey(team, project)
	now := s.now()
	s.badges.mu.Lock()
	e, ok := s.badges.entries[key]
	s.badges.mu.Unlock()
	if ok && now.Sub(e.at) < badgeFresh && now.Sub(e.at) >= 0 {
		return e, nil
	}
	e = badgeEntry{at: now, refs: map[string]build.Status{}}
	cursor := ""
	for range badgePages {
		recs, next, err := s.deps.Records.ListProject(ctx, team, project, badgePage, cursor)
		if errors.Is(err, build.ErrNotFound) {
			break
		}
		if err != nil {
			return badgeEntry{}, err
		}
		e.seen = e.seen || len(recs) > 0
		for _, r := range recs {
			if !r.Status.Final() || noVerdict[r.Status] {
				continue
			}
			if e.project == "" {
				e.project = r.Status
			}
			if _, ok := e.refs[r.Ref]; !ok {
				e.refs[r.Ref] = r.Status
			}
		}
		if next == "" {
			break
		}
		cursor = next
	}
	s.badges.mu.Lock()
	if len(s.badges.entries) >= badgeProjects {
		clear(s.badges.entries)
	}
	s.badges.entries[key] = e
	s.badges.mu.Unlock()
	return e, nil
}

// Badge colours, as shields.io's.
const (
	badgeGreen  = "#4c1"
	badgeRed    = "#e05d44"
	badgeOrange = "#fe7d37"
	badgeGrey   = "#9f9f9f"
)

func badgeColour(st build.Status) string {
	switch st {
	case build.StatusSucceeded:
		return badgeGreen
	case build.StatusFailed:
		return badgeRed
	case build.StatusErrored, build.StatusTimedOut:
		return badgeOrange
	}
	return badgeGrey
}

// badgeAnswer writes a badge: an SVG that runs nothing and loads nothing,
// cacheable for badgeMaxAge (publicly only where badges are public).
func (s *Server) badgeAnswer(c echo.Context, status int, message, colour string) error {
	h := c.Response().Header()
	h.Set(echo.HeaderXContentTypeOptions, "nosniff")
	// No script runs in it, nothing loads: default-src 'none'.
	h.Set(echo.HeaderContentSecurityPolicy, "default-src 'none'; style-src 'unsafe-inline'")
	scope := "private"
	if s.cfg.PublicBadges || s.cfg.AuthDisabled {
		scope = "public"
		// READMEs on other sites embed it.
		h.Set("Cross-Origin-Resource-Policy", "cross-origin")
	}
	h.Set(echo.HeaderCacheControl, fmt.Sprintf("%s, max-age=%d", scope, badgeMaxAge))
	return c.Blob(status, "image/svg+xml; charset=utf-8", badgeSVG("build", message, colour))
}

// badgeSVG draws a two-part badge, label on grey and message on colour.
// Every text is escaped; widths are estimated (Verdana 11px, ~7px a
// character), as good as a badge needs.
func badgeSVG(label, message, colour string) []byte {
	lw, mw := 10+7*len([]rune(label)), 10+7*len([]rune(message))
	w := lw + mw
	l, m, col := html.EscapeString(label), html.EscapeString(message), html.EscapeString(colour)
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="20" role="img" aria-label="%s: %s">`, w, l, m)
	fmt.Fprintf(&b, `<title>%s: %s</title>`, l, m)
	fmt.Fprintf(&b, `<rect width="%d" height="20" rx="3" fill="#555"/>`, w)
	fmt.Fprintf(&b, `<rect x="%d" width="%d" height="20" rx="3" fill="%s"/>`, lw, mw, col)
	fmt.Fprintf(&b, `<rect x="%d" width="4" height="20" fill="%s"/>`, lw, col)
	b.WriteString(`<g fill="#fff" text-anchor="middle" font-family="Verdana,DejaVu Sans,sans-serif" font-size="11">`)
	fmt.Fprintf(&b, `<text x="%d" y="14">%s</text>`, lw/2, l)
	fmt.Fprintf(&b, `<text x="%d" y="14">%s</text>`, lw+mw/2, m)
	b.WriteString(`</g></svg>`)
	return []byte(b.String())
}
