package ingest

import (
	"errors"
	"fmt"
	"html"
	"net/http"
	"strings"

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
	ctx := c.Request().Context()
	var seen bool
	cursor := ""
	for range badgePages {
		recs, next, err := s.deps.Records.ListProject(ctx, team, project, badgePage, cursor)
		if err != nil {
			if errors.Is(err, build.ErrNotFound) {
				break
			}
			return fmt.Errorf("badge of %s: %w", build.ProjectKey(team, project), err)
		}
		seen = seen || len(recs) > 0
		for _, r := range recs {
			if ref != "" && r.Ref != ref {
				continue
			}
			if r.Status.Final() && !noVerdict[r.Status] {
				return s.badgeAnswer(c, http.StatusOK, strings.ReplaceAll(string(r.Status), "_", " "), badgeColour(r.Status))
			}
		}
		if next == "" {
			break
		}
		cursor = next
	}
	if !seen {
		if _, _, err := s.deps.Catalog.Lookup(team, project); errors.Is(err, build.ErrNotFound) {
			return s.badgeAnswer(c, http.StatusNotFound, "unknown", badgeGrey)
		}
	}
	return s.badgeAnswer(c, http.StatusOK, "none", badgeGrey)
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
