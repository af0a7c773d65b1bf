package cli

import (
	"context"
	"fmt"
	"net/http"
	"strings"

	"github.com/spf13/cobra"

	"github.com/decap-ci/decap/internal/api"
	"github.com/decap-ci/decap/internal/build"
)

func (a *app) queueCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "queue",
		Short: "show the queue: depth, in flight, dead letters, waiting requests",
		Long: `Shows the build queue: messages ready to dispatch, those deferred or being
dispatched (in flight), dead-lettered ones, the age of the oldest, whether
dispatch is paused, and the oldest 100 queued or deferred requests with the
reason each waits and its next attempt (while dispatch is paused: when it
resumes), and how many more wait.`,
		Args: args(0, 0, ""),
		RunE: a.runE(func(ctx context.Context, cmd *cobra.Command, _ []string) error {
			c, err := a.api(cmd)
			if err != nil {
				return err
			}
			var q api.Queue
			raw, _, err := c.fetch(ctx, call{method: http.MethodGet, path: "/api/v1/queue"}, &q)
			if err != nil {
				return err
			}
			if a.json() {
				return printJSON(a.stdout, raw)
			}
			s := q.Stats
			fmt.Fprintf(a.stdout, "ready to dispatch %d, deferred or being dispatched %d, dead-lettered %d", s.Visible, s.InFlight, s.DeadLettered)
			if s.OldestAge > 0 {
				fmt.Fprintf(a.stdout, ", oldest %s", fmtDur(s.OldestAge))
			}
			fmt.Fprintln(a.stdout)
			// The gate explains a queue that does not move.
			g := a.readGate(ctx, c)
			if g.Paused {
				fmt.Fprintln(a.stdout, gateText(g))
			}
			if len(q.Waiting) == 0 {
				fmt.Fprintln(a.stdout, "no waiting requests")
				return nil
			}
			fmt.Fprintln(a.stdout)
			t := newTable(a.stdout, "ID", "#", "STATUS", "LOCK KEY", "TRIGGER", "QUEUED", "NEXT ATTEMPT", "REASON")
			for _, w := range q.Waiting {
				next, why := waitText(w, g)
				t.row(string(w.ID), numText(w.Number), string(w.Status), w.LockKey, string(w.Trigger), fmtTime(w.QueuedAt), next, why)
			}
			if err := t.flush(); err != nil {
				return err
			}
			moreWaiting(a.stdout, q)
			return nil
		}),
	}
}

func (a *app) locksCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "locks",
		Short: "list the held branch locks",
		Long: `Lists the held branch locks: one per lock key (team/project/ref) with a
running build, each also a slot of the concurrency cap.`,
		Args: args(0, 0, ""),
		RunE: a.runE(func(ctx context.Context, cmd *cobra.Command, _ []string) error {
			c, err := a.api(cmd)
			if err != nil {
				return err
			}
			var l api.Locks
			raw, _, err := c.fetch(ctx, call{method: http.MethodGet, path: "/api/v1/locks"}, &l)
			if err != nil {
				return err
			}
			if a.json() {
				return printJSON(a.stdout, raw)
			}
			if len(l.Locks) == 0 {
				fmt.Fprintln(a.stdout, "no locks held")
				return nil
			}
			t := newTable(a.stdout, "LOCK KEY", "BUILD", "OWNER", "ACQUIRED", "EXPIRES")
			for _, x := range l.Locks {
				t.row(x.Key, string(x.BuildID), x.Owner, fmtTime(x.AcquiredAt), fmtTime(x.ExpiresAt))
			}
			return t.flush()
		}),
	}
}

func (a *app) unlockCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "unlock team/project/ref",
		Short: "force-release a branch lock",
		Long: `Releases a branch lock whoever holds it, and so its slot of the cap. Use
it for a lock a lost build left behind; the build, if it still runs, is
not stopped (see cancel), and unlock warns that another build of the
branch may then start beside it.`,
		Example: `  decapctl unlock ae6rt/dynamodb-lab/feature/Locks`,
		Args:    args(1, 1, "team/project/ref"),
		RunE: a.runE(func(ctx context.Context, cmd *cobra.Command, args []string) error {
			team, project, ref, err := build.SplitLockKey(args[0])
			if err != nil {
				return invalid(err)
			}
			c, err := a.api(cmd)
			if err != nil {
				return err
			}
			key := build.LockKey(team, project, ref)
			// Whose lock it is, to warn if that build runs on without it.
			var held build.Lease
			if _, _, err := c.fetch(ctx, call{method: http.MethodGet, path: "/api/v1/locks/" + pathEscape(key),
				notFound: fmt.Sprintf("lock %s is not held", key)}, &held); err != nil {
				return err
			}
			var answer api.Released
			raw, _, err := c.fetch(ctx, call{
				method: http.MethodDelete, path: "/api/v1/locks/" + pathEscape(key),
				notFound: fmt.Sprintf("lock %s is not held", key),
			}, &answer)
			if err != nil {
				return err
			}
			if a.json() {
				return printJSON(a.stdout, raw)
			}
			if answer.Released == "" {
				answer.Released = key
			}
			fmt.Fprintf(a.stdout, "released lock %s\n", answer.Released)
			if held.BuildID == "" {
				return nil
			}
			var rec api.Build
			if _, _, err := c.fetch(ctx, call{method: http.MethodGet, path: buildPath(held.BuildID)}, &rec); err == nil && rec.Status == build.StatusRunning {
				fmt.Fprintf(a.stderr, "decapctl: build %s still runs: unlock does not stop it, and another build of %s may start beside it (decapctl cancel %s stops it)\n",
					label(rec.ID, rec.Number), key, rec.ID)
			}
			return nil
		}),
	}
}

// readGate reads the dispatch gate; a server that cannot say is taken as
// open (the gate only explains a queue that does not move).
func (a *app) readGate(ctx context.Context, c *client) build.GateState {
	var g build.GateState
	if _, _, err := c.fetch(ctx, call{method: http.MethodGet, path: "/api/v1/dispatch"}, &g); err != nil {
		return build.GateState{}
	}
	return g
}

// waitText says when a waiting request is tried next and why it waits, in
// the light of the gate: while dispatch is paused, when it resumes
// (whatever next attempt the record had, often long past), and the pause
// is one more reason.
func waitText(w api.Waiting, g build.GateState) (next, why string) {
	next, why = fmtTime(w.NextAttemptAt), w.Reason
	if !g.Paused {
		return next, why
	}
	paused := "dispatch is paused"
	if g.Reason != "" {
		paused += " (" + g.Reason + ")"
	}
	if why == "" {
		return "when dispatch resumes", paused
	}
	return "when dispatch resumes", why + "; " + paused
}

// gateText describes the dispatch gate in one line.
func gateText(g build.GateState) string {
	if !g.Paused {
		return "dispatch is running"
	}
	var b strings.Builder
	b.WriteString("dispatch is PAUSED")
	if g.By != "" {
		b.WriteString(" by " + g.By)
	}
	if !g.Since.IsZero() {
		b.WriteString(" since " + fmtTime(g.Since))
	}
	if g.Reason != "" {
		b.WriteString(": " + g.Reason)
	}
	return b.String()
}

func (a *app) dispatchCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "dispatch",
		Short: "show whether dispatch is paused",
		Args:  args(0, 0, ""),
		RunE: a.runE(func(ctx context.Context, cmd *cobra.Command, _ []string) error {
			c, err := a.api(cmd)
			if err != nil {
				return err
			}
			return a.gate(ctx, c, call{method: http.MethodGet, path: "/api/v1/dispatch"})
		}),
	}
}

func (a *app) pauseCmd() *cobra.Command {
	var reason string
	cmd := &cobra.Command{
		Use:   "pause [--reason TEXT]",
		Short: "pause dispatch: requests wait in the queue, running builds go on",
		Long: `Closes the dispatch gate: dispatchers take nothing off the queue, so new
requests wait there (nothing is lost) while running builds finish. Resume
with "decapctl resume".`,
		Example: `  decapctl pause --reason "cluster upgrade"`,
		Args:    args(0, 0, "[--reason TEXT]"),
		RunE: a.runE(func(ctx context.Context, cmd *cobra.Command, _ []string) error {
			c, err := a.api(cmd)
			if err != nil {
				return err
			}
			return a.gate(ctx, c, call{method: http.MethodPost, path: "/api/v1/dispatch/pause", body: map[string]string{"reason": reason}})
		}),
	}
	cmd.Flags().StringVar(&reason, "reason", "", "why, shown to everyone who looks")
	return cmd
}

func (a *app) resumeCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "resume",
		Short: "resume dispatch",
		Args:  args(0, 0, ""),
		RunE: a.runE(func(ctx context.Context, cmd *cobra.Command, _ []string) error {
			c, err := a.api(cmd)
			if err != nil {
				return err
			}
			return a.gate(ctx, c, call{method: http.MethodPost, path: "/api/v1/dispatch/resume", body: struct{}{}})
		}),
	}
}

// gate makes a dispatch gate call and prints the gate's state. An answer
// that is not a gate state (a mutation answering 204 or {}) prints the
// state read afterwards.
func (a *app) gate(ctx context.Context, c *client, k call) error {
	raw, _, err := c.fetch(ctx, k, nil)
	if err != nil {
		return err
	}
	var g build.GateState
	if !decodes(raw, &g) || !hasKey(raw, "paused") {
		if raw, _, err = c.fetch(ctx, call{method: http.MethodGet, path: "/api/v1/dispatch"}, &g); err != nil {
			return err
		}
	}
	if a.json() {
		return printJSON(a.stdout, raw)
	}
	_, err = fmt.Fprintln(a.stdout, gateText(g))
	return err
}

func (a *app) refsCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "refs team/project",
		Short: "list a project's branches and tags, as the repository manager reports them",
		Args:  args(1, 1, "team/project"),
		RunE: a.runE(func(ctx context.Context, cmd *cobra.Command, args []string) error {
			team, project, err := parseProject(args[0])
			if err != nil {
				return err
			}
			c, err := a.api(cmd)
			if err != nil {
				return err
			}
			var v api.Refs
			raw, _, err := c.fetch(ctx, call{
				method: http.MethodGet, path: projectPath(team, project) + "/refs",
				notFound: fmt.Sprintf("project %s not found", build.ProjectKey(team, project)),
			}, &v)
			if err != nil {
				return err
			}
			if a.json() {
				return printJSON(a.stdout, raw)
			}
			if len(v.Branches)+len(v.Tags) == 0 {
				fmt.Fprintf(a.stdout, "%s has no branches or tags\n", build.ProjectKey(team, project))
				return nil
			}
			t := newTable(a.stdout, "TYPE", "NAME", "SHA")
			for _, r := range v.Branches {
				t.row("branch", r.Name, r.SHA)
			}
			for _, r := range v.Tags {
				t.row("tag", r.Name, r.SHA)
			}
			return t.flush()
		}),
	}
}
