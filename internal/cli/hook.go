package cli

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"

	"github.com/spf13/cobra"

	"github.com/decap-ci/decap/internal/api"
	"github.com/decap-ci/decap/internal/build"
)

func (a *app) hookCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "hook",
		Short: "send GitHub-style webhooks to Decap (for trials and tests)",
	}
	cmd.AddCommand(a.hookPushCmd())
	return cmd
}

// pushPayload is a minimal GitHub push event: the fields Decap reads, and
// a few more that GitHub always sends.
type pushPayload struct {
	Ref        string         `json:"ref"`
	Before     string         `json:"before"`
	After      string         `json:"after"`
	Created    bool           `json:"created"`
	Deleted    bool           `json:"deleted"`
	Forced     bool           `json:"forced"`
	Repository pushRepository `json:"repository"`
	Pusher     pushUser       `json:"pusher"`
	Sender     struct {
		Login string `json:"login"`
	} `json:"sender"`
	HeadCommit struct {
		ID string `json:"id"`
	} `json:"head_commit"`
}

type pushRepository struct {
	Name     string   `json:"name"`
	FullName string   `json:"full_name"`
	Owner    pushUser `json:"owner"`
}

type pushUser struct {
	Name  string `json:"name"`
	Login string `json:"login,omitempty"`
}

func (a *app) hookPushCmd() *cobra.Command {
	var secret, delivery, sha, pusher string
	var tag bool
	cmd := &cobra.Command{
		Use:   "push team/project REF",
		Short: "send a signed push webhook, as GitHub would for a push to REF",
		Long: `Sends POST /hooks/github with a minimal push payload for REF (a branch, or
a tag with --tag) of github.com/team/project, signed with the webhook
secret (X-Hub-Signature-256) and with X-GitHub-Event: push and a
X-GitHub-Delivery ID. It prints the IDs of the builds Decap queued.

The secret is --secret, else DECAP_GITHUB_WEBHOOK_SECRET or the file
DECAP_GITHUB_WEBHOOK_SECRET_FILE names, else the file github-webhook-secret
that "make run" generates, in $DECAP_DATA_DIR or in the .decap/ of the
current directory or the nearest above; without one the hook goes unsigned. A push Decap ignores (an unmanaged ref, an unknown project)
exits 1 with the reason. Sending the same --delivery again is a GitHub
redelivery: it answers with the first build and builds nothing new.`,
		Example: `  decapctl hook push decap-ci/hello main
  decapctl hook push decap-ci/hello v1.0 --tag --delivery 9d3a4b10 --sha 6113728f27ae82c7b1a177c8d03f9e96e0adf246`,
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
			if sha == "" {
				sha = randomHex(20)
			} else if !isHex(sha, 7, 64) || strings.Trim(sha, "0") == "" {
				return usagef("--sha %q is not a commit id (7 to 64 hex digits, not all zero)", short(sha, 80))
			}
			if delivery == "" {
				delivery = randomUUID()
			} else if len(delivery) > 128 || strings.ContainsFunc(delivery, func(r rune) bool { return r < 0x21 || r > 0x7e }) {
				return usagef("--delivery must be at most 128 printable ASCII characters")
			}
			if !cmd.Flags().Changed("secret") {
				if secret, _, err = a.secret("DECAP_GITHUB_WEBHOOK_SECRET", "github-webhook-secret"); err != nil {
					return err
				}
			}
			if pusher == "" {
				pusher = "decapctl"
			}
			base, err := a.baseURL()
			if err != nil {
				return err
			}
			full := "refs/heads/" + ref
			if tag {
				full = "refs/tags/" + ref
			}
			p := pushPayload{
				Ref: full, Before: strings.Repeat("0", 40), After: sha,
				Repository: pushRepository{Name: project, FullName: build.ProjectKey(team, project), Owner: pushUser{Name: team, Login: team}},
				Pusher:     pushUser{Name: pusher},
			}
			p.Sender.Login, p.HeadCommit.ID = pusher, sha
			body, err := json.Marshal(p)
			if err != nil {
				return err
			}
			h := http.Header{}
			h.Set("Content-Type", "application/json")
			h.Set("X-GitHub-Event", "push")
			h.Set("X-GitHub-Delivery", delivery)
			if secret != "" {
				h.Set("X-Hub-Signature-256", sign([]byte(secret), body))
			}
			c := newClient(base, "", a.timeout)
			var answer api.HookAnswer
			raw, _, err := c.fetch(ctx, call{
				method: http.MethodPost, path: "/hooks/github", raw: body, header: h, noToken: true,
				authHint: "sign with the secret Decap verifies: --secret, DECAP_GITHUB_WEBHOOK_SECRET or DECAP_GITHUB_WEBHOOK_SECRET_FILE",
			}, &answer)
			if err != nil {
				return err
			}
			if a.json() {
				if err := printJSON(a.stdout, raw); err != nil {
					return err
				}
			} else {
				for _, b := range answer.Builds {
					fmt.Fprintln(a.stdout, b.ID)
				}
			}
			if answer.Ignored != "" {
				return failf(ExitFailed, "Decap ignored the push: %s", answer.Ignored)
			}
			return nil
		}),
	}
	f := cmd.Flags()
	f.StringVar(&secret, "secret", "", "webhook secret (default $DECAP_GITHUB_WEBHOOK_SECRET or the file $DECAP_GITHUB_WEBHOOK_SECRET_FILE)")
	f.StringVar(&delivery, "delivery", "", "X-GitHub-Delivery ID (default: a new random one)")
	f.StringVar(&sha, "sha", "", "the pushed commit, 'after' (default: a random commit ID)")
	f.StringVar(&pusher, "pusher", "", "who pushed (default decapctl)")
	f.BoolVar(&tag, "tag", false, "REF is a tag")
	return cmd
}

func (a *app) refreshCmd() *cobra.Command {
	var secret string
	cmd := &cobra.Command{
		Use:   "refresh",
		Short: "re-read the build-scripts repository now",
		Long: `Makes Decap read its build-scripts repository (DECAP_BUILD_SCRIPTS) now
instead of at its next periodic refresh: POST /hooks/buildscripts, signed
with the webhook secret as GitHub signs a webhook (point the repository's
GitHub webhook there to refresh on every push). It prints how many
projects the catalog has. The ingest that answers reads it at once; a
dispatcher reads it again before it would drop a request for a project
its older copy does not know or cannot build (see the README, "Changing
the build-scripts repository").

The secret is found as for "hook push": --secret, else
DECAP_GITHUB_WEBHOOK_SECRET or the file DECAP_GITHUB_WEBHOOK_SECRET_FILE
names, else github-webhook-secret of the data directory "make run" uses.`,
		Example: `  decapctl refresh`,
		Args:    args(0, 0, ""),
		RunE: a.runE(func(ctx context.Context, cmd *cobra.Command, _ []string) error {
			if !cmd.Flags().Changed("secret") {
				var err error
				if secret, _, err = a.secret("DECAP_GITHUB_WEBHOOK_SECRET", "github-webhook-secret"); err != nil {
					return err
				}
			}
			base, err := a.baseURL()
			if err != nil {
				return err
			}
			body := []byte("{}")
			h := http.Header{}
			h.Set("Content-Type", "application/json")
			h.Set("X-GitHub-Event", "push")
			h.Set("X-GitHub-Delivery", randomUUID())
			if secret != "" {
				h.Set("X-Hub-Signature-256", sign([]byte(secret), body))
			}
			var answer api.Refreshed
			raw, _, err := newClient(base, "", a.timeout).fetch(ctx, call{
				method: http.MethodPost, path: "/hooks/buildscripts", raw: body, header: h, noToken: true,
				authHint: "sign with the secret Decap verifies: --secret, DECAP_GITHUB_WEBHOOK_SECRET or DECAP_GITHUB_WEBHOOK_SECRET_FILE",
			}, &answer)
			if err != nil {
				return err
			}
			if a.json() {
				return printJSON(a.stdout, raw)
			}
			fmt.Fprintf(a.stdout, "build-scripts repository read again: %d projects\n", answer.Projects)
			return nil
		}),
	}
	cmd.Flags().StringVar(&secret, "secret", "", "webhook secret (default $DECAP_GITHUB_WEBHOOK_SECRET or the file $DECAP_GITHUB_WEBHOOK_SECRET_FILE)")
	return cmd
}

// sign returns the X-Hub-Signature-256 value GitHub sends for body: the
// same as ingest.Sign, kept here so decapctl does not link the server.
func sign(secret, body []byte) string {
	mac := hmac.New(sha256.New, secret)
	mac.Write(body)
	return "sha256=" + hex.EncodeToString(mac.Sum(nil))
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails on supported systems
	return hex.EncodeToString(b)
}

// randomUUID returns a version 4 UUID, the form of GitHub's delivery IDs.
func randomUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = 0x40 | b[6]&0x0f
	b[8] = 0x80 | b[8]&0x3f
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}
