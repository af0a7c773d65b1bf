// Package cli is decapctl, Decap's operator command line: it lists builds,
// requests, rebuilds and cancels them, follows their logs, shows the queue, locks and
// the dispatch gate, and sends signed test webhooks. It speaks only the HTTP
// API that ingest serves; cmd/decapctl is its main.
//
// Every failure is an *Error carrying the process exit code (see the Exit
// constants) and a message of one line.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/decap-ci/decap/internal/build"
)

// Exit codes. They are part of decapctl's interface: scripts decide on them.
const (
	ExitOK = 0
	// ExitFailed: the server said no (conflict, bad request, unbuildable
	// project, ignored push, an operation it does not offer), or the build
	// failed (build --wait, rebuild --wait).
	ExitFailed = 1
	// ExitUsage: unknown command or flag, wrong arguments, bad
	// configuration.
	ExitUsage = 2
	// ExitNotFound: the build, project or lock does not exist.
	ExitNotFound = 3
	// ExitAuth: the API token or the webhook signature was refused (401,
	// 403).
	ExitAuth = 4
	// ExitUnavailable: the server cannot be reached, did not answer in
	// time, or failed (5xx).
	ExitUnavailable = 5
	// ExitInterrupted: interrupted by a signal (Ctrl-C).
	ExitInterrupted = 130
)

// DefaultURL is where decapctl looks for Decap when DECAP_URL is not set:
// ingest's default listen address.
const DefaultURL = "http://127.0.0.1:8080"

// Error is a failure with its exit code. Msg is one line, without the
// "decapctl: " prefix.
type Error struct {
	Code int
	Msg  string
}

func (e *Error) Error() string { return e.Msg }

// ExitCode returns the process exit code for an error Run returned: 0 for
// nil, the code of an *Error, ExitInterrupted for a cancelled context, and
// ExitFailed otherwise.
func ExitCode(err error) int {
	var e *Error
	switch {
	case err == nil:
		return ExitOK
	case errors.As(err, &e):
		return e.Code
	case errors.Is(err, context.Canceled):
		return ExitInterrupted
	}
	return ExitFailed
}

func failf(code int, format string, args ...any) *Error {
	return &Error{Code: code, Msg: oneLine(fmt.Sprintf(format, args...))}
}

func usagef(format string, args ...any) *Error { return failf(ExitUsage, format, args...) }

// invalid turns a build.ErrInvalid error about an argument into a usage
// error.
func invalid(err error) *Error {
	return usagef("%s", strings.TrimPrefix(err.Error(), build.ErrInvalid.Error()+": "))
}

// oneLine folds whitespace, newlines included, and bounds the length, so an
// error is always one readable line.
func oneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); len(r) > 400 {
		s = string(r[:399]) + "…"
	}
	return s
}

// app holds the configuration of one run.
type app struct {
	getenv         func(string) string
	stdin          io.Reader
	stdout, stderr io.Writer

	// Global flags.
	url, token, output string
	timeout            time.Duration
	// poll is how often a waiting command asks again.
	poll time.Duration
}

const rootHelp = `decapctl operates a Decap build server through its HTTP API: it lists
builds, requests, rebuilds and cancels them, follows their logs, shows the
queue, the branch locks and the dispatch gate, has the build-scripts
repository read again, sets the projects' secrets for builds, and sends
signed test webhooks. Builds are named by
ID; tables and messages also show each build's number in its project
(#42), which builds recorded before numbers existed do not have.

Configuration (flags win over the environment):
  DECAP_URL          the server, default ` + DefaultURL + ` (--url)
  DECAP_TOKEN        the API token: changes need it (build, rebuild, cancel,
                     unlock, pause, resume, secret set and delete), and so do reads unless the server runs
                     with DECAP_READ_AUTH=public (--token)
  DECAP_TOKEN_FILE   a file holding the API token instead (not both)
  DECAP_GITHUB_WEBHOOK_SECRET, DECAP_GITHUB_WEBHOOK_SECRET_FILE
                     the webhook secret "hook push" signs with (--secret)
  Without a token or secret set, decapctl reads the files "make run" and
  "make run-aws" generate: api-token and github-webhook-secret in
  $DECAP_DATA_DIR or, without it, in the .decap/ directory of the current
  directory or the nearest one above (the top of the checkout).

Output is an aligned table; -o json prints the server's JSON instead,
indented. Errors are one line on stderr.

Exit codes:
  0    ok
  1    the server said no (conflict, bad request, unbuildable project,
       ignored push, an operation it does not offer), or the build
       failed (build --wait, rebuild --wait)
  2    usage: unknown command or flag, wrong arguments, bad configuration
  3    not found: no such build, project or lock
  4    authentication: the API token or webhook secret was refused (401/403)
  5    unavailable: the server cannot be reached, timed out, or failed (5xx)
  130  interrupted`

// Run runs decapctl with args (without the program name), reading the
// environment through getenv. It returns nil or an error whose exit code
// ExitCode gives and whose message is one line; it prints nothing of the
// error itself.
func Run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	return RunIO(ctx, args, getenv, strings.NewReader(""), stdout, stderr)
}

// RunIO is Run with stdin, from which "secret set" reads a value.
func RunIO(ctx context.Context, args []string, getenv func(string) string, stdin io.Reader, stdout, stderr io.Writer) error {
	a := &app{getenv: getenv, stdin: stdin, stdout: stdout, stderr: stderr, poll: time.Second}
	root := a.root()
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetIn(strings.NewReader(""))
	err := root.ExecuteContext(ctx)
	var e *Error
	switch {
	case err == nil:
		return nil
	case errors.As(err, &e):
		return e
	case ctx.Err() != nil:
		return failf(ExitInterrupted, "interrupted")
	}
	// Anything else comes from cobra: an unknown command, a flag it could
	// not parse.
	msg := err.Error()
	if head, suggestions, ok := strings.Cut(msg, "\n\nDid you mean this?\n"); ok {
		msg = head + "; did you mean " + strings.Join(strings.Fields(suggestions), " or ") + "?"
	}
	return usagef("%s (see decapctl --help)", msg)
}

func (a *app) root() *cobra.Command {
	root := &cobra.Command{
		Use:               "decapctl",
		Short:             "operate a Decap build server",
		Long:              rootHelp,
		SilenceErrors:     true,
		SilenceUsage:      true,
		CompletionOptions: cobra.CompletionOptions{HiddenDefaultCmd: true},
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error { return a.setup(cmd) },
	}
	root.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error {
		return usagef("%s: %v (see %s --help)", cmd.Name(), err, cmd.CommandPath())
	})
	pf := root.PersistentFlags()
	pf.StringVar(&a.url, "url", "", "Decap's base URL (default $DECAP_URL or "+DefaultURL+")")
	pf.StringVar(&a.token, "token", "", "API token (default $DECAP_TOKEN or the file $DECAP_TOKEN_FILE)")
	pf.StringVarP(&a.output, "output", "o", "table", "output format: table or json")
	pf.DurationVar(&a.timeout, "timeout", 30*time.Second, "how long to wait for an answer (logs and --wait stream for as long as it takes)")
	root.AddCommand(
		a.buildsCmd(), a.buildCmd(), a.rebuildCmd(), a.logsCmd(), a.cancelCmd(),
		a.queueCmd(), a.locksCmd(), a.unlockCmd(),
		a.dispatchCmd(), a.pauseCmd(), a.resumeCmd(),
		a.refsCmd(), a.hookCmd(), a.refreshCmd(), a.secretCmd(), a.subscriptionsCmd(),
	)
	return root
}

// setup checks the global flags and reads the URL from the environment.
func (a *app) setup(cmd *cobra.Command) error {
	switch a.output {
	case "table", "json":
	default:
		return usagef("-o %q: want table or json", a.output)
	}
	if a.timeout <= 0 {
		return usagef("--timeout must be positive")
	}
	if !cmd.Flags().Changed("url") {
		a.url = a.getenv("DECAP_URL")
	}
	if a.url == "" {
		a.url = DefaultURL
	}
	return nil
}

// baseURL parses and checks the configured URL.
func (a *app) baseURL() (*url.URL, error) {
	u, err := url.Parse(a.url)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return nil, usagef("DECAP_URL/--url %q is not an http:// or https:// URL of a server", a.url)
	}
	u.Path = strings.TrimRight(u.Path, "/")
	u.RawPath = ""
	return u, nil
}

// apiToken returns the API token from --token, DECAP_TOKEN, the file
// DECAP_TOKEN_FILE names, or the file make run writes; "" if none is set.
// from says where it came from, or where decapctl looked for it.
func (a *app) apiToken(cmd *cobra.Command) (tok, from string, err error) {
	if cmd.Flags().Changed("token") {
		return a.token, "--token", nil
	}
	return a.secret("DECAP_TOKEN", "api-token")
}

// secret reads NAME, or the file NAME_FILE names, trimmed; setting both is
// a usage error. Without either it reads the file dataFile in the data
// directory DECAP_DATA_DIR or, without that, in the .decap/ directory of
// the current directory or the nearest one above it that has one (where
// make run and make run-aws keep the secrets they generate, at the top of
// the checkout), if that file belongs to this user. from says where the
// value came from, or where decapctl looked when it found none. The value
// never appears in an error.
func (a *app) secret(name, dataFile string) (value, from string, err error) {
	v, file := a.getenv(name), a.getenv(name+"_FILE")
	switch {
	case v != "" && file != "":
		return "", "", usagef("set either %s or %s_FILE, not both", name, name)
	case v != "":
		return v, name, nil
	case file != "":
		b, err := os.ReadFile(file)
		if err != nil {
			return "", "", usagef("%s_FILE: cannot read %s: %v", name, file, errors.Unwrap(err))
		}
		return strings.TrimSpace(string(b)), file, nil
	}
	var path string
	if dir := a.getenv("DECAP_DATA_DIR"); dir != "" {
		path = filepath.Join(dir, dataFile)
	} else if path = findUp(filepath.Join(".decap", dataFile)); path == "" {
		wd, _ := os.Getwd()
		return "", fmt.Sprintf("no %s, %s_FILE, nor .decap/%s in %s or above", name, name, dataFile, wd), nil
	}
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return "", fmt.Sprintf("no %s, %s_FILE, nor %s", name, name, path), nil
	case err != nil:
		return "", "", usagef("cannot read %s (set %s or %s_FILE instead): %v", path, name, name, errors.Unwrap(err))
	}
	return strings.TrimSpace(string(b)), path, nil
}

// findUp returns rel joined to the current directory or the nearest
// directory above it where that is a regular file of this user's, "" if
// there is none.
func findUp(rel string) string {
	dir, err := os.Getwd()
	if err != nil {
		return ""
	}
	for {
		p := filepath.Join(dir, rel)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && ownedByMe(fi) {
			return p
		}
		up := filepath.Dir(dir)
		if up == dir {
			return ""
		}
		dir = up
	}
}

// api returns a client that sends the API token.
func (a *app) api(cmd *cobra.Command) (*client, error) {
	base, err := a.baseURL()
	if err != nil {
		return nil, err
	}
	tok, from, err := a.apiToken(cmd)
	if err != nil {
		return nil, err
	}
	c := newClient(base, tok, a.timeout)
	c.tokenFrom = from
	return c, nil
}

// runE adapts a command's work to cobra: it hands over the context and
// makes sure every error it returns carries an exit code.
func (a *app) runE(f func(ctx context.Context, cmd *cobra.Command, args []string) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		ctx := cmd.Context()
		err := f(ctx, cmd, args)
		var e *Error
		switch {
		case err == nil:
			return nil
		case errors.As(err, &e):
			return e
		case ctx.Err() != nil:
			return failf(ExitInterrupted, "interrupted")
		}
		return failf(ExitFailed, "%v", err)
	}
}

// args checks the number of arguments: from min to max (max < 0: any).
func args(min, max int, usage string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) < min || max >= 0 && len(args) > max {
			return usagef("usage: %s %s (got %d argument%s; see %s --help)",
				cmd.CommandPath(), usage, len(args), plural(len(args)), cmd.CommandPath())
		}
		return nil
	}
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

// json reports whether -o json was asked for.
func (a *app) json() bool { return a.output == "json" }
