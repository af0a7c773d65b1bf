package cli

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/decap-ci/decap/internal/api"
	"github.com/decap-ci/decap/internal/build"
)

// parseProject splits and checks "team/project".
func parseProject(s string) (team, project string, err error) {
	team, project, ok := strings.Cut(s, "/")
	if !ok {
		return "", "", usagef("%q is not team/project", s)
	}
	if err := build.ValidateName("team", team); err != nil {
		return "", "", invalid(err)
	}
	if err := build.ValidateName("project", project); err != nil {
		return "", "", invalid(err)
	}
	return team, project, nil
}

func parseID(s string) (build.ID, error) {
	id, err := build.ParseID(s)
	if err != nil {
		return "", invalid(err)
	}
	return id, nil
}

func projectPath(team, project string) string {
	return "/api/v1/projects/" + url.PathEscape(team) + "/" + url.PathEscape(project)
}

func buildPath(id build.ID) string { return "/api/v1/builds/" + string(id) }

func (a *app) buildsCmd() *cobra.Command {
	var limit int
	var cursor string
	cmd := &cobra.Command{
		Use:   "builds [team/project]",
		Short: "list a project's builds, or the running and waiting builds",
		Long: `With team/project: the project's builds, newest first (--limit, --cursor).

Without an argument: the builds that run now and those that wait, across
every project. Running builds are the running records
(GET /api/v1/builds?status=running), a build whose branch lock was
force-released among them, noted so; a lock held for no running record
shows as the lock alone (status locked). Waiting ones are the queued and
deferred requests of GET /api/v1/queue, with the reason they wait and their
next attempt. With -o json it prints
{"running": [records], "waiting": [queue entries]}.`,
		Example: `  decapctl builds
  decapctl builds ae6rt/dynamodb-lab --limit 50`,
		Args: args(0, 1, "[team/project]"),
		RunE: a.runE(func(ctx context.Context, cmd *cobra.Command, args []string) error {
			c, err := a.api(cmd)
			if err != nil {
				return err
			}
			if len(args) == 0 {
				return a.activeBuilds(ctx, c)
			}
			team, project, err := parseProject(args[0])
			if err != nil {
				return err
			}
			if limit < 1 || limit > 200 {
				return usagef("--limit must be from 1 to 200")
			}
			q := url.Values{"limit": {strconv.Itoa(limit)}}
			if cursor != "" {
				q.Set("cursor", cursor)
			}
			var page api.BuildPage
			raw, _, err := c.fetch(ctx, call{method: http.MethodGet, path: projectPath(team, project) + "/builds", query: q}, &page)
			if err != nil {
				return err
			}
			if a.json() {
				return printJSON(a.stdout, raw)
			}
			if len(page.Builds) == 0 {
				fmt.Fprintf(a.stdout, "no builds of %s\n", build.ProjectKey(team, project))
				return nil
			}
			t := newTable(a.stdout, "ID", "#", "REF", "STATUS", "TRIGGER", "QUEUED", "DURATION", "SHA")
			for _, r := range api.Records(page.Builds) {
				t.row(string(r.BuildID), numText(r.Number), r.Ref, statusText(r), string(r.Trigger), fmtTime(r.QueuedAt), fmtDur(r.Duration()), short(r.SHA, 12))
			}
			if err := t.flush(); err != nil {
				return err
			}
			if page.NextCursor != "" {
				fmt.Fprintf(a.stderr, "more: decapctl builds %s --cursor %s\n", build.ProjectKey(team, project), page.NextCursor)
			}
			return nil
		}),
	}
	cmd.Flags().IntVar(&limit, "limit", 20, "how many builds to list (1-200)")
	cmd.Flags().StringVar(&cursor, "cursor", "", "continue after an earlier page (printed after a full page)")
	return cmd
}

// numText is a build's number as people see it, "#42"; "" for a build
// recorded before builds had numbers (0).
func numText(n int) string {
	if n <= 0 {
		return ""
	}
	return "#" + strconv.Itoa(n)
}

// label names a build in messages: "#42 <ID>", or the ID alone without a
// number.
func label(id build.ID, n int) string {
	if n <= 0 {
		return string(id)
	}
	return numText(n) + " " + string(id)
}

// statusText is a record's status with its exit code when it failed.
func statusText(r build.Record) string {
	if r.Status == build.StatusFailed && r.ExitCode != nil {
		return fmt.Sprintf("failed (%d)", *r.ExitCode)
	}
	return string(r.Status)
}

// activeView is what "builds" without an argument shows.
type activeView struct {
	Running []build.Record `json:"running"`
	Waiting []api.Waiting  `json:"waiting"`
}

func (a *app) activeBuilds(ctx context.Context, c *client) error {
	// Running builds come from their records, not the locks: a build whose
	// lock was force-released runs on and must not vanish from the list.
	var running api.BuildList
	if _, _, err := c.fetch(ctx, call{method: http.MethodGet, path: "/api/v1/builds", query: url.Values{"status": {"running"}}}, &running); err != nil {
		return err
	}
	var locks api.Locks
	if _, _, err := c.fetch(ctx, call{method: http.MethodGet, path: "/api/v1/locks"}, &locks); err != nil {
		return err
	}
	var q api.Queue
	if _, _, err := c.fetch(ctx, call{method: http.MethodGet, path: "/api/v1/queue"}, &q); err != nil {
		return err
	}
	gate := a.readGate(ctx, c)
	view := activeView{Running: api.Records(running.Builds), Waiting: q.Waiting}
	if view.Waiting == nil {
		view.Waiting = []api.Waiting{}
	}
	holder := map[string]build.ID{} // lock key → the build holding it
	for _, l := range locks.Locks {
		holder[l.Key] = l.BuildID
	}
	listed := map[build.ID]bool{}
	for _, r := range view.Running {
		listed[r.BuildID] = true
	}
	// A lock held for no running record (a build lost before its record
	// said so) shows as the lock alone.
	for _, l := range locks.Locks {
		if !listed[l.BuildID] {
			team, project, ref, _ := build.SplitLockKey(l.Key)
			view.Running = append(view.Running, build.Record{BuildID: l.BuildID, Team: team, Project: project, Ref: ref, Status: "locked", StartedAt: l.AcquiredAt})
		}
	}
	slices.SortFunc(view.Running, func(x, y build.Record) int { return since(x).Compare(since(y)) })
	if a.json() {
		return encodeJSON(a.stdout, view)
	}
	if len(view.Running)+len(view.Waiting) == 0 {
		fmt.Fprintln(a.stdout, "no running or waiting builds")
		return nil
	}
	t := newTable(a.stdout, "ID", "#", "STATUS", "LOCK KEY", "TRIGGER", "SINCE", "NOTE")
	for _, r := range view.Running {
		note := ""
		if r.Status == build.StatusRunning && holder[r.LockKey()] != r.BuildID {
			note = "lock released: another build of the branch may start beside it"
		}
		t.row(string(r.BuildID), numText(r.Number), statusText(r), r.LockKey(), string(r.Trigger), fmtTime(since(r)), note)
	}
	for _, w := range view.Waiting {
		t.row(string(w.ID), numText(w.Number), string(w.Status), w.LockKey, string(w.Trigger), fmtTime(w.QueuedAt), waitNote(w, gate))
	}
	if err := t.flush(); err != nil {
		return err
	}
	moreWaiting(a.stdout, q)
	return nil
}

// moreWaiting says how many waiting requests q, a page of the queue's,
// leaves out.
func moreWaiting(w io.Writer, q api.Queue) {
	if more := q.WaitingTotal - len(q.Waiting); more > 0 {
		fmt.Fprintf(w, "... and %d more waiting requests (the UI's queue page, or GET /api/v1/queue?offset=%d)\n", more, len(q.Waiting))
	}
}

// since is when a running build started, or was queued.
func since(r build.Record) time.Time {
	if !r.StartedAt.IsZero() {
		return r.StartedAt
	}
	return r.QueuedAt
}

func waitNote(w api.Waiting, g build.GateState) string {
	next, why := waitText(w, g)
	var parts []string
	switch {
	case g.Paused:
		parts = append(parts, next)
	case !w.NextAttemptAt.IsZero():
		parts = append(parts, "next attempt "+next)
	}
	if why != "" {
		parts = append(parts, why)
	}
	return strings.Join(parts, ": ")
}

func (a *app) buildCmd() *cobra.Command {
	var tag, wait bool
	var sha string
	cmd := &cobra.Command{
		Use:   "build team/project REF",
		Short: "request a build of a branch or tag; prints the build ID",
		Long: `Requests a build of REF (a branch, or a tag with --tag) and prints its
build ID. Requests by hand are not filtered by managedRefRegex.

With --wait it follows the build's log to stdout until the build ends and
exits with its result: 0 when it succeeded, 1 otherwise (the status on
stderr). With --wait -o json it prints the final record instead of the log.

A newer request of the same branch may supersede the build (it then ends
superseded, naming the newer build, and never runs; see the project's
supersede settings). A build that an infrastructure failure ended (errored,
its cause in the record's infra field) is retried as a new build whose
retryOf names it; --wait follows the build it was given, not its retries.`,
		Example: `  decapctl build ae6rt/dynamodb-lab main
  decapctl build ae6rt/dynamodb-lab v1.2.0 --tag --wait
  id=$(decapctl build decap-ci/hello feature/x --sha 6113728f27ae82c7)`,
		Args: args(2, 2, "team/project REF"),
		RunE: a.runE(func(ctx context.Context, cmd *cobra.Command, args []string) error {
			team, project, err := parseProject(args[0])
			if err != nil {
				return err
			}
			ref := args[1]
			if err := build.ValidateRef(ref); err != nil {
				return invalid(err)
			}
			if sha != "" && !isHex(sha, 7, 64) {
				return usagef("--sha %q is not a commit id (7 to 64 hex digits)", short(sha, 80))
			}
			c, err := a.api(cmd)
			if err != nil {
				return err
			}
			body := api.BuildRequest{Ref: ref, SHA: sha}
			if tag {
				body.RefType = build.Tag
			}
			var qb api.Queued
			raw, _, err := c.fetch(ctx, call{
				method: http.MethodPost, path: projectPath(team, project) + "/builds", body: body,
				notFound: fmt.Sprintf("project %s is not in the build-scripts repository", build.ProjectKey(team, project)),
			}, &qb)
			if err != nil {
				return err
			}
			return a.queued(ctx, c, qb, raw, wait, "")
		}),
	}
	cmd.Flags().BoolVar(&tag, "tag", false, "REF is a tag")
	cmd.Flags().StringVar(&sha, "sha", "", "the commit to build (default: whatever REF points at when the build runs)")
	cmd.Flags().BoolVar(&wait, "wait", false, "follow the log and exit with the build's result")
	return cmd
}

func (a *app) rebuildCmd() *cobra.Command {
	var wait bool
	cmd := &cobra.Command{
		Use:   "rebuild ID",
		Short: "build an ended build's ref and SHA again; prints the new build ID",
		Long: `Queues the project, ref and SHA of build ID again, as a new build whose
record names ID (rebuildOf), and prints the new build's ID. Only a build
that has ended can be rebuilt (exit 1 for a queued or running one: cancel
it, or wait for it); one whose project is no longer buildable cannot
(exit 1). A build recorded without a SHA builds whatever its ref points at
now.

With --wait it follows the new build's log to stdout until it ends and
exits with its result, as "build --wait" does.`,
		Example: `  decapctl rebuild 0193a4c2-7d1e-7b3a-9c4f-2e8d6a1b0c9f
  decapctl rebuild 0193a4c2-7d1e-7b3a-9c4f-2e8d6a1b0c9f --wait`,
		Args: args(1, 1, "ID"),
		RunE: a.runE(func(ctx context.Context, cmd *cobra.Command, args []string) error {
			id, err := parseID(args[0])
			if err != nil {
				return err
			}
			c, err := a.api(cmd)
			if err != nil {
				return err
			}
			var qb api.Queued
			raw, _, err := c.fetch(ctx, call{method: http.MethodPost, path: buildPath(id) + "/rebuild", notFound: fmt.Sprintf("build %s not found", id)}, &qb)
			if err != nil {
				return err
			}
			return a.queued(ctx, c, qb, raw, wait, ", a rebuild of "+string(id))
		}),
	}
	cmd.Flags().BoolVar(&wait, "wait", false, "follow the log and exit with the build's result")
	return cmd
}

// queued reports a build that build or rebuild queued (raw is the server's
// answer): its ID on stdout, or the answer with -o json. With wait it
// follows the build's log (or, with -o json, waits for its final record)
// and returns its result; note ends the "queued" line on stderr.
func (a *app) queued(ctx context.Context, c *client, qb api.Queued, raw []byte, wait bool, note string) error {
	if !wait {
		if a.json() {
			return printJSON(a.stdout, raw)
		}
		_, err := fmt.Fprintln(a.stdout, qb.ID)
		return err
	}
	fmt.Fprintf(a.stderr, "build %s queued (%s)%s\n", label(qb.ID, qb.Number), qb.LockKey, note)
	var rec build.Record
	var err error
	if a.json() {
		rec, err = a.waitFinal(ctx, c, qb.ID)
	} else {
		rec, err = a.streamLog(ctx, c, qb.ID, a.stdout, true)
		if isCode(err, ExitNotFound) && rec.Status.Final() {
			// It ended without a log (say, it never started): the
			// result still counts.
			fmt.Fprintln(a.stderr, err)
			err = nil
		}
	}
	if err != nil {
		return err
	}
	if a.json() {
		if err := encodeJSON(a.stdout, rec); err != nil {
			return err
		}
	}
	return a.result(rec)
}

// result turns a final record into the exit status of build --wait.
func (a *app) result(rec build.Record) error {
	d := fmtDur(rec.Duration())
	name := label(rec.BuildID, rec.Number)
	switch rec.Status {
	case build.StatusSucceeded:
		fmt.Fprintf(a.stderr, "build %s succeeded in %s\n", name, d)
		return nil
	case build.StatusFailed:
		if rec.ExitCode != nil {
			return failf(ExitFailed, "build %s failed with exit code %d after %s", name, *rec.ExitCode, d)
		}
		return failf(ExitFailed, "build %s failed after %s", name, d)
	case build.StatusTimedOut:
		return failf(ExitFailed, "build %s timed out after %s", name, d)
	}
	if rec.Reason != "" {
		return failf(ExitFailed, "build %s ended %s: %s", name, rec.Status, rec.Reason)
	}
	return failf(ExitFailed, "build %s ended %s", name, rec.Status)
}

// getBuild reads one record.
func (a *app) getBuild(ctx context.Context, c *client, id build.ID) (build.Record, []byte, error) {
	var b api.Build
	raw, _, err := c.fetch(ctx, call{method: http.MethodGet, path: buildPath(id), notFound: fmt.Sprintf("build %s not found", id)}, &b)
	return b.Record(), raw, err
}

// waitFinal polls a build's record until it is final.
func (a *app) waitFinal(ctx context.Context, c *client, id build.ID) (build.Record, error) {
	for {
		rec, _, err := a.getBuild(ctx, c, id)
		if err != nil || rec.Status.Final() {
			return rec, err
		}
		if err := a.sleep(ctx); err != nil {
			return rec, err
		}
	}
}

func (a *app) sleep(ctx context.Context) error {
	t := time.NewTimer(a.poll)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return failf(ExitInterrupted, "interrupted")
	case <-t.C:
		return nil
	}
}

func (a *app) logsCmd() *cobra.Command {
	var follow bool
	cmd := &cobra.Command{
		Use:   "logs [-f] ID",
		Short: "print a build's console log",
		Long: `Prints a build's console log to stdout: the stored log of an ended build,
or what a running build has written so far; for a build that has not
started, nothing (and a note on stderr). With -f it follows the log
until the build ends (waiting for a queued build to start, and picking up
where it was if the connection breaks). The log is text; -o json does not
apply.`,
		Args: args(1, 1, "[-f] ID"),
		RunE: a.runE(func(ctx context.Context, cmd *cobra.Command, args []string) error {
			id, err := parseID(args[0])
			if err != nil {
				return err
			}
			c, err := a.api(cmd)
			if err != nil {
				return err
			}
			_, err = a.streamLog(ctx, c, id, a.stdout, follow)
			return err
		}),
	}
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "follow the log until the build ends")
	return cmd
}

// streamLog writes a build's log to w and returns the build's last record.
// With follow it streams until the build's record is final: while the
// build has no log yet it waits, and when a stream breaks it asks again and
// skips what it already wrote.
func (a *app) streamLog(ctx context.Context, c *client, id build.ID, w io.Writer, follow bool) (build.Record, error) {
	rec, _, err := a.getBuild(ctx, c, id)
	if err != nil {
		return rec, err
	}
	if !follow && (rec.Status == build.StatusQueued || rec.Status == build.StatusDeferred) {
		// Its log so far is empty: nothing to print, and no error.
		fmt.Fprintf(a.stderr, "decapctl: build %s has not started yet (%s): no log so far; decapctl logs -f %s waits for it\n",
			label(id, rec.Number), rec.Status, id)
		return rec, nil
	}
	var written int64 // bytes of the log already written to w
	for {
		wasFinal := rec.Status.Final()
		q := url.Values{}
		if follow && !wasFinal {
			q.Set("follow", "1")
		}
		resp, err := c.do(ctx, call{
			method: http.MethodGet, path: buildPath(id) + "/log", query: q, stream: true,
			notFound: fmt.Sprintf("build %s has no log (status %s)", label(id, rec.Number), rec.Status),
		})
		clean := false
		switch {
		case err != nil && !(follow && !wasFinal && isCode(err, ExitNotFound)):
			return rec, err
		case err == nil:
			n, rerr, werr := copySkipping(w, resp.Body, written)
			resp.Body.Close()
			written = max(written, n)
			switch {
			case werr != nil:
				return rec, failf(ExitFailed, "write log: %v", werr)
			case rerr != nil && ctx.Err() != nil:
				return rec, failf(ExitInterrupted, "interrupted")
			case rerr != nil && !follow:
				return rec, failf(ExitUnavailable, "the log of build %s broke off: %s", label(id, rec.Number), netReason(rerr))
			}
			clean = rerr == nil
			if !follow || clean && wasFinal {
				return rec, nil
			}
		}
		// Following: the stream ended (the build ended, or the connection
		// broke) or there is no log yet (the build has not started).
		rec, _, err = a.getBuild(ctx, c, id)
		if err != nil {
			return rec, err
		}
		switch {
		case clean && rec.Status.Final():
			return rec, nil
		case !rec.Status.Final():
			if err := a.sleep(ctx); err != nil {
				return rec, err
			}
		}
		// A broken stream of an ended build: read the rest of the stored log.
	}
}

// copySkipping copies r to w, dropping the first skip bytes. It returns
// how far into r it read, and the read and write errors (a clean end of r
// is no error).
func copySkipping(w io.Writer, r io.Reader, skip int64) (pos int64, rerr, werr error) {
	buf := make([]byte, 32<<10)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			chunk := buf[:n]
			if pos < skip {
				drop := min(int64(n), skip-pos)
				chunk = chunk[drop:]
			}
			pos += int64(n)
			if len(chunk) > 0 {
				if _, werr := w.Write(chunk); werr != nil {
					return pos, nil, werr
				}
			}
		}
		if err == io.EOF {
			return pos, nil, nil
		}
		if err != nil {
			return pos, err, nil
		}
	}
}

func (a *app) cancelCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "cancel ID",
		Short: "cancel a queued or running build",
		Long: `Cancels a build: a queued one is cancelled at once, a running one is
stopped (the server answers that it is cancelling). A build that already
ended cannot be cancelled (exit 1).`,
		Args: args(1, 1, "ID"),
		RunE: a.runE(func(ctx context.Context, cmd *cobra.Command, args []string) error {
			id, err := parseID(args[0])
			if err != nil {
				return err
			}
			c, err := a.api(cmd)
			if err != nil {
				return err
			}
			// A waiting build's record (200), or api.Cancelling (202):
			// its status is then "cancelling".
			var answer api.Build
			raw, status, err := c.fetch(ctx, call{method: http.MethodDelete, path: buildPath(id), notFound: fmt.Sprintf("build %s not found", id)}, &answer)
			if err != nil {
				return err
			}
			if a.json() {
				return printJSON(a.stdout, raw)
			}
			switch {
			case status == http.StatusAccepted:
				fmt.Fprintf(a.stdout, "build %s is being cancelled\n", id)
			case answer.Status == build.StatusCancelled:
				fmt.Fprintf(a.stdout, "build %s cancelled\n", id)
			default:
				fmt.Fprintf(a.stdout, "build %s is %s\n", id, answer.Status)
			}
			return nil
		}),
	}
}

func isHex(s string, min, max int) bool {
	if len(s) < min || len(s) > max {
		return false
	}
	for _, c := range s {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
			return false
		}
	}
	return true
}
