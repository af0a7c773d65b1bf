package cli

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/decap-ci/decap/internal/api"
	"github.com/decap-ci/decap/internal/build"
)

// secretCmd is "decapctl secret set|list|delete": the project's secrets
// for builds. A value is read from a file or stdin, never taken as an
// argument (arguments are seen by every user of the machine in ps and end
// up in shell histories), and never printed.
func (a *app) secretCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "secret",
		Short: "set, list and delete a project's secrets for builds",
		Long: `A project's secrets are given to the builds whose project.json names them
("secrets": ["NPM_TOKEN"]), as files in $BUILD_SECRETS, and masked in
their logs. Values are written, never read back: list shows names, sizes
and when each was last set.`,
	}
	cmd.AddCommand(a.secretSetCmd(), a.secretListCmd(), a.secretDeleteCmd())
	return cmd
}

func (a *app) secretSetCmd() *cobra.Command {
	var from string
	cmd := &cobra.Command{
		Use:   "set team/project NAME [--from-file FILE]",
		Short: "set a secret from stdin or a file",
		Long: `Sets the secret NAME (upper-case letters, digits and _) of team/project to
the bytes of FILE, or of stdin without --from-file, exactly as they are (a
trailing newline too: printf '%s' "$TOKEN" leaves none), 1 byte to 64 KiB.`,
		Example: `  printf '%s' "$NPM_TOKEN" | decapctl secret set ae6rt/dynamodb-lab NPM_TOKEN
  decapctl secret set ae6rt/dynamodb-lab DEPLOY_KEY --from-file ~/.ssh/deploy_key`,
		Args: func(cmd *cobra.Command, got []string) error {
			if len(got) > 2 {
				return usagef("a secret's value is never an argument (every user sees arguments in ps, and shells keep them): pipe it in, or give --from-file")
			}
			return args(2, 2, "team/project NAME")(cmd, got)
		},
		RunE: a.runE(func(ctx context.Context, cmd *cobra.Command, args []string) error {
			team, project, err := parseProject(args[0])
			if err != nil {
				return err
			}
			name := args[1]
			if err := build.ValidateSecretName(name); err != nil {
				return invalid(err)
			}
			value, err := a.secretValue(from)
			if err != nil {
				return err
			}
			c, err := a.api(cmd)
			if err != nil {
				return err
			}
			raw, _, err := c.fetch(ctx, call{
				method: http.MethodPut, path: secretPath(team, project, name), raw: value,
				header: http.Header{"Content-Type": {"application/octet-stream"}},
			}, nil)
			clear(value)
			if err != nil {
				return err
			}
			if a.json() {
				return printJSON(a.stdout, raw)
			}
			fmt.Fprintf(a.stdout, "secret %s of %s/%s set (%d bytes)\n", name, team, project, len(value))
			return nil
		}),
	}
	cmd.Flags().StringVar(&from, "from-file", "", "read the value from this file instead of stdin")
	return cmd
}

// secretValue reads a secret's value from file, or from stdin when file
// is "" or "-"; at most build.MaxSecretSize bytes, at least one.
func (a *app) secretValue(file string) ([]byte, error) {
	var r io.Reader = a.stdin
	what := "stdin"
	if file != "" && file != "-" {
		f, err := os.Open(file)
		if err != nil {
			return nil, usagef("--from-file: %v", err)
		}
		defer f.Close()
		r, what = f, file
	}
	value, err := io.ReadAll(io.LimitReader(r, build.MaxSecretSize+1))
	if err != nil {
		return nil, usagef("read the value from %s: %v", what, err)
	}
	switch {
	case len(value) == 0:
		return nil, usagef("no value on %s: pipe it in, or give --from-file (a value is never an argument)", what)
	case len(value) > build.MaxSecretSize:
		return nil, usagef("the value on %s is larger than %d bytes", what, build.MaxSecretSize)
	}
	return value, nil
}

func (a *app) secretListCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "list team/project",
		Short:   "list a project's secrets: names, sizes, times (never values)",
		Example: `  decapctl secret list ae6rt/dynamodb-lab`,
		Args:    args(1, 1, "team/project"),
		RunE: a.runE(func(ctx context.Context, cmd *cobra.Command, args []string) error {
			team, project, err := parseProject(args[0])
			if err != nil {
				return err
			}
			c, err := a.api(cmd)
			if err != nil {
				return err
			}
			var answer api.Secrets
			raw, _, err := c.fetch(ctx, call{method: http.MethodGet, path: secretPath(team, project, "")}, &answer)
			if err != nil {
				return err
			}
			if a.json() {
				return printJSON(a.stdout, raw)
			}
			if len(answer.Secrets) == 0 {
				fmt.Fprintf(a.stdout, "%s/%s has no secrets\n", team, project)
				return nil
			}
			t := newTable(a.stdout, "NAME", "SIZE", "UPDATED")
			for _, s := range answer.Secrets {
				t.row(s.Name, strconv.Itoa(s.Size)+" B", fmtTime(s.UpdatedAt))
			}
			return t.flush()
		}),
	}
}

func (a *app) secretDeleteCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "delete team/project NAME",
		Short:   "delete a secret",
		Example: `  decapctl secret delete ae6rt/dynamodb-lab NPM_TOKEN`,
		Args:    args(2, 2, "team/project NAME"),
		RunE: a.runE(func(ctx context.Context, cmd *cobra.Command, args []string) error {
			team, project, err := parseProject(args[0])
			if err != nil {
				return err
			}
			name := args[1]
			if err := build.ValidateSecretName(name); err != nil {
				return invalid(err)
			}
			c, err := a.api(cmd)
			if err != nil {
				return err
			}
			raw, _, err := c.fetch(ctx, call{method: http.MethodDelete, path: secretPath(team, project, name),
				notFound: fmt.Sprintf("%s/%s has no secret %s", team, project, name)}, nil)
			if err != nil {
				return err
			}
			if a.json() {
				return printJSON(a.stdout, raw)
			}
			fmt.Fprintf(a.stdout, "secret %s of %s/%s deleted\n", name, team, project)
			return nil
		}),
	}
}

// secretPath is the API path of a project's secrets, or of one of them.
func secretPath(team, project, name string) string {
	p := "/api/v1/projects/" + pathEscape(team) + "/" + pathEscape(project) + "/secrets"
	if name != "" {
		p += "/" + name
	}
	return p
}
