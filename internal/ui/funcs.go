package ui

import (
	"fmt"
	"html/template"
	"net/url"
	"strings"
	"time"

	"github.com/decap-ci/decap/internal/build"
)

// funcs are the template functions. None returns template.HTML (or any
// other trusted type): whatever they return is escaped by html/template.
func (u *UI) funcs() template.FuncMap {
	return template.FuncMap{
		"static": func(name string) string {
			return "/ui/static/" + name + "?v=" + u.etags[name]
		},
		"when":        when,
		"iso":         iso,
		"ago":         func(t time.Time) string { return ago(t, u.now()) },
		"until":       func(t time.Time) string { return until(t, u.now()) },
		"dur":         dur,
		"ms":          func(d time.Duration) int64 { return d.Milliseconds() },
		"shortSHA":    shortSHA,
		"shortID":     shortID,
		"num":         num,
		"statusClass": statusClass,
		"final":       func(s build.Status) bool { return s.Final() },
		"teamURL":     func(team string) string { return "/ui/teams/" + url.PathEscape(team) },
		"projectURL":  projectURL,
		"buildURL":    func(id build.ID) string { return "/ui/builds/" + url.PathEscape(string(id)) },
		"apiBuild":    func(id build.ID) string { return "/api/v1/builds/" + url.PathEscape(string(id)) },
		"apiProject": func(team, project string) string {
			return "/api/v1/projects/" + url.PathEscape(team) + "/" + url.PathEscape(project)
		},
		"apiLock": apiLock,
		"olderURL": func(team, project, cursor string) string {
			return projectURL(team, project) + "?cursor=" + url.QueryEscape(cursor)
		},
		"exitCode":    func(p *int) string { return exitCode(p) },
		"trigger":     triggerText,
		"withProject": func(recs []build.Record) buildRows { return buildRows{Builds: recs, Project: true} },
		"ofProject":   func(recs []build.Record) buildRows { return buildRows{Builds: recs} },
		"hasPrefix":   strings.HasPrefix,
	}
}

func projectURL(team, project string) string {
	return "/ui/projects/" + url.PathEscape(team) + "/" + url.PathEscape(project)
}

// apiLock is the force-release URL of a lock key; each segment is escaped,
// the ref's own slashes are kept as path separators.
func apiLock(key string) string {
	segs := strings.Split(key, "/")
	for i, s := range segs {
		segs[i] = url.PathEscape(s)
	}
	return "/api/v1/locks/" + strings.Join(segs, "/")
}

// when is a time for people, in UTC; "" for the zero time.
func when(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format("2006-01-02 15:04:05 UTC")
}

// iso is a time for machines (datetime attributes, scripts).
func iso(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339Nano)
}

// ago is "3m ago"; "just now" under a second; "" for the zero time.
func ago(t, now time.Time) string {
	if t.IsZero() {
		return ""
	}
	d := now.Sub(t)
	if d < time.Second {
		return "just now"
	}
	return roughly(d) + " ago"
}

// until is "in 3m", or "now" when t is past.
func until(t, now time.Time) string {
	if t.IsZero() {
		return ""
	}
	d := t.Sub(now)
	if d < time.Second {
		return "now"
	}
	return "in " + roughly(d)
}

// roughly is d in its largest unit or two: 45s, 3m, 2h05m, 3d.
func roughly(d time.Duration) string {
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d/time.Second))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d/time.Minute))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh%02dm", int(d/time.Hour), int(d%time.Hour/time.Minute))
	default:
		return fmt.Sprintf("%dd", int(d/(24*time.Hour)))
	}
}

// dur is a build duration: 850ms, 12.3s, 1m05s, 1h02m03s; "" for zero.
func dur(d time.Duration) string {
	switch {
	case d <= 0:
		return ""
	case d < time.Second:
		return fmt.Sprintf("%dms", d.Milliseconds())
	case d < time.Minute:
		return fmt.Sprintf("%.1fs", d.Seconds())
	case d < time.Hour:
		return fmt.Sprintf("%dm%02ds", int(d/time.Minute), int(d%time.Minute/time.Second))
	default:
		return fmt.Sprintf("%dh%02dm%02ds", int(d/time.Hour), int(d%time.Hour/time.Minute), int(d%time.Minute/time.Second))
	}
}

func shortSHA(sha string) string {
	if len(sha) > 7 {
		return sha[:7]
	}
	return sha
}

// shortID abbreviates a build ID by its random tail: a UUIDv7 starts with
// its timestamp, so builds requested together share their first digits.
func shortID(id build.ID) string {
	s := string(id)
	if len(s) > 8 {
		return s[len(s)-8:]
	}
	return s
}

// num is a build's number as people see it, "#42"; "" for a build recorded
// before builds had numbers (0).
func num(n int) string {
	if n <= 0 {
		return ""
	}
	return fmt.Sprintf("#%d", n)
}

// statusClass groups statuses for styling.
func statusClass(s build.Status) string {
	switch s {
	case build.StatusSucceeded:
		return "st-ok"
	case build.StatusFailed, build.StatusErrored, build.StatusTimedOut:
		return "st-bad"
	case build.StatusRunning:
		return "st-run"
	case build.StatusQueued, build.StatusDeferred:
		return "st-wait"
	default:
		return "st-off"
	}
}

func exitCode(p *int) string {
	if p == nil {
		return ""
	}
	return fmt.Sprint(*p)
}

// buildRows is a table of builds; Project adds the project column (not
// on a project's own page).
type buildRows struct {
	Builds  []build.Record
	Project bool
}

// triggerText says who asked for a build: "push by octocat", "API
// request" (the token; RequestedBy "api"), "by hand in the UI"
// (RequestedBy "ui"), "pull request by octocat".
func triggerText(t build.Trigger, by string) string {
	switch {
	case t == build.TriggerAPI && (by == "" || by == "api"):
		return "API request"
	case t == build.TriggerManual && (by == "" || by == "ui"):
		return "by hand in the UI"
	}
	s := strings.ReplaceAll(string(t), "_", " ")
	switch by {
	case "", string(t):
		return s
	case "api":
		return s + " (API token)"
	case "ui":
		return s + " (UI)"
	}
	return s + " by " + by
}
