package cli

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/decap-ci/decap/internal/api"
	"github.com/decap-ci/decap/internal/build"
)

// subscriptionsCmd is "decapctl subscriptions list|add|rm|deliveries":
// outgoing webhooks. A subscription's secret is read from a file or
// stdin, never taken as an argument, and never printed.
func (a *app) subscriptionsCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "subscriptions",
		Aliases: []string{"subscription"},
		Short:   "list, add and remove outgoing webhooks, and see their deliveries",
		Long: `An outgoing webhook (a subscription) receives build events: each event of
its types (all types when none is given), of its team or project when
given, is POSTed to its URL as CloudEvents JSON, signed with its secret in
X-Decap-Signature-256 (sha256=<hex HMAC-SHA256 of the body>). Failed
deliveries are retried with a backoff, then dead-lettered with a reason:
"deliveries" shows them.`,
	}
	cmd.AddCommand(a.subscriptionsListCmd(), a.subscriptionsAddCmd(), a.subscriptionsRemoveCmd(), a.subscriptionsDeliveriesCmd())
	return cmd
}

func (a *app) subscriptionsListCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "list the outgoing webhooks (never their secrets)",
		Args:  args(0, 0, ""),
		RunE: a.runE(func(ctx context.Context, cmd *cobra.Command, _ []string) error {
			c, err := a.api(cmd)
			if err != nil {
				return err
			}
			var answer api.Subscriptions
			raw, _, err := c.fetch(ctx, call{method: http.MethodGet, path: "/api/v1/subscriptions"}, &answer)
			if err != nil {
				return err
			}
			if a.json() {
				return printJSON(a.stdout, raw)
			}
			if len(answer.Subscriptions) == 0 {
				fmt.Fprintln(a.stdout, "no subscriptions")
				return nil
			}
			t := newTable(a.stdout, "ID", "URL", "TYPES", "OF", "CREATED")
			for _, s := range answer.Subscriptions {
				types := "all"
				if len(s.Types) > 0 {
					short := make([]string, len(s.Types))
					for i, ty := range s.Types {
						short[i] = strings.TrimPrefix(string(ty), build.EventTypePrefix)
					}
					types = strings.Join(short, ",")
				}
				of := "all"
				if s.Team != "" {
					of = s.Team
					if s.Project != "" {
						of += "/" + s.Project
					}
				}
				t.row(s.ID, s.URL, types, of, fmtTime(s.CreatedAt))
			}
			return t.flush()
		}),
	}
}

func (a *app) subscriptionsAddCmd() *cobra.Command {
	var (
		from, of string
		types    []string
	)
	cmd := &cobra.Command{
		Use:   "add URL [--type succeeded]... [--of team[/project]] [--from-file FILE]",
		Short: "add an outgoing webhook; its secret from stdin or a file",
		Long: `Adds a subscription: URL (https) receives the build events of the given
types (queued, started, succeeded, failed, …; io.decap.build. may be left
out; every type without --type), of one team or project with --of. The
secret, 16 to 256 printable characters, is read from --from-file or
stdin (never an argument), sent once, and never shown again.`,
		Example: `  openssl rand -hex 32 | tee hook.secret | decapctl subscriptions add https://hooks.example.com/decap --type succeeded --type failed
  decapctl subscriptions add https://ci-bot.example.com/events --of ae6rt/dynamodb-lab --from-file hook.secret`,
		Args: args(1, 1, "URL"),
		RunE: a.runE(func(ctx context.Context, cmd *cobra.Command, args []string) error {
			in := api.SubscriptionRequest{URL: args[0]}
			if err := build.ValidateSubscriptionURL(in.URL); err != nil {
				return invalid(err)
			}
			for _, ty := range types {
				full := build.EventType(ty)
				if !strings.HasPrefix(ty, build.EventTypePrefix) {
					full = build.EventType(build.EventTypePrefix + ty)
				}
				if !full.Valid() {
					return usagef("--type %q: want one of queued, retried, deferred, started, succeeded, failed, timed_out, cancelled, superseded, errored, expired, skipped", ty)
				}
				in.Types = append(in.Types, full)
			}
			if of != "" {
				team, project, found := strings.Cut(of, "/")
				if err := build.ValidateName("team", team); err != nil {
					return invalid(err)
				}
				if found {
					if err := build.ValidateName("project", project); err != nil {
						return invalid(err)
					}
				}
				in.Team, in.Project = team, project
			}
			secret, err := a.secretValue(from)
			if err != nil {
				return err
			}
			in.Secret = strings.TrimRight(string(secret), "\r\n")
			clear(secret)
			c, err := a.api(cmd)
			if err != nil {
				return err
			}
			var answer api.Subscription
			raw, _, err := c.fetch(ctx, call{method: http.MethodPost, path: "/api/v1/subscriptions", body: in}, &answer)
			if err != nil {
				return err
			}
			if a.json() {
				return printJSON(a.stdout, raw)
			}
			fmt.Fprintf(a.stdout, "subscription %s added\n", answer.ID)
			return nil
		}),
	}
	cmd.Flags().StringVar(&from, "from-file", "", "read the secret from this file instead of stdin (a trailing newline is dropped)")
	cmd.Flags().StringArrayVar(&types, "type", nil, "an event type to send (repeatable; default every type)")
	cmd.Flags().StringVar(&of, "of", "", "send only the events of this team, or team/project")
	return cmd
}

func subscriptionPath(id string) string { return "/api/v1/subscriptions/" + url.PathEscape(id) }

func (a *app) subscriptionsRemoveCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "rm ID",
		Aliases: []string{"remove", "delete"},
		Short:   "remove an outgoing webhook and its deliveries",
		Args:    args(1, 1, "ID"),
		RunE: a.runE(func(ctx context.Context, cmd *cobra.Command, args []string) error {
			c, err := a.api(cmd)
			if err != nil {
				return err
			}
			raw, _, err := c.fetch(ctx, call{method: http.MethodDelete, path: subscriptionPath(args[0]),
				notFound: "no subscription " + args[0]}, nil)
			if err != nil {
				return err
			}
			if a.json() {
				return printJSON(a.stdout, raw)
			}
			fmt.Fprintf(a.stdout, "subscription %s removed\n", args[0])
			return nil
		}),
	}
}

func (a *app) subscriptionsDeliveriesCmd() *cobra.Command {
	var limit int
	cmd := &cobra.Command{
		Use:   "deliveries ID [--limit N]",
		Short: "a subscription's latest deliveries, newest first: pending, delivered and dead letters",
		Args:  args(1, 1, "ID"),
		RunE: a.runE(func(ctx context.Context, cmd *cobra.Command, args []string) error {
			c, err := a.api(cmd)
			if err != nil {
				return err
			}
			var answer api.Deliveries
			raw, _, err := c.fetch(ctx, call{method: http.MethodGet, path: subscriptionPath(args[0]) + "/deliveries",
				query: url.Values{"limit": {strconv.Itoa(limit)}}, notFound: "no subscription " + args[0]}, &answer)
			if err != nil {
				return err
			}
			if a.json() {
				return printJSON(a.stdout, raw)
			}
			if len(answer.Deliveries) == 0 {
				fmt.Fprintf(a.stdout, "subscription %s has no deliveries\n", args[0])
				return nil
			}
			t := newTable(a.stdout, "EVENT", "TYPE", "STATE", "ATTEMPTS", "UPDATED", "NEXT", "REASON")
			for _, d := range answer.Deliveries {
				next := ""
				if d.NextAttemptAt != nil {
					next = fmtTime(*d.NextAttemptAt)
				}
				t.row(d.EventID, strings.TrimPrefix(string(d.EventType), build.EventTypePrefix), string(d.State),
					strconv.Itoa(d.Attempts), fmtTime(d.UpdatedAt), next, d.LastError)
			}
			return t.flush()
		}),
	}
	cmd.Flags().IntVar(&limit, "limit", 50, "how many (1 to 200)")
	return cmd
}
