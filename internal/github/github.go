// Package github is Decap's adapter to GitHub's REST API, through go-github:
// Refs lists a repository's branches and tags (cached, rate-limit aware) and
// Statuses posts commit statuses for builds. It speaks internal/build types
// and errors: build.ErrNotFound for an unknown repository or commit,
// build.ErrUnavailable when GitHub cannot answer now (rate limit, 5xx,
// network), build.ErrInvalid for input GitHub or Decap rejects.
//
// A team is a repository owner and a project a repository name, so the
// project "ae6rt/dynamodb-lab" is github.com/ae6rt/dynamodb-lab.
package github

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/google/go-github/v93/github"

	"github.com/decap-ci/decap/internal/build"
)

// DefaultBaseURL is the REST API of github.com.
const DefaultBaseURL = "https://api.github.com/"

// DefaultTimeout bounds one HTTP request to GitHub.
const DefaultTimeout = 10 * time.Second

// Config configures the GitHub adapters.
type Config struct {
	// BaseURL is the REST API's base URL: DefaultBaseURL when empty;
	// "https://HOST/api/v3/" for GitHub Enterprise Server; a test server's
	// URL in tests.
	BaseURL string
	// Token is a GitHub token (a fine-grained token with "Commit statuses:
	// write" and "Contents: read", or a GitHub App installation token).
	// Refs works without one for public repositories (at 60 requests an hour
	// instead of 5000); Statuses posts nothing without one.
	Token string
	// PublicURL is where people reach Decap, e.g. "https://decap.example.com":
	// commit statuses link to PublicURL/ui/builds/<id>. Empty: no link.
	PublicURL string
	// Timeout bounds each HTTP request (DefaultTimeout when zero).
	Timeout time.Duration
	// UserAgent identifies Decap to GitHub ("decap" when empty).
	UserAgent string
}

// newClient returns a go-github client for cfg.
func newClient(cfg Config) (*github.Client, error) {
	timeout := cfg.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	ua := cfg.UserAgent
	if ua == "" {
		ua = "decap"
	}
	opts := []github.ClientOptionsFunc{
		github.WithHTTPClient(&http.Client{Timeout: timeout}),
		github.WithUserAgent(ua),
	}
	if cfg.BaseURL != "" {
		base := cfg.BaseURL
		opts = append(opts, github.WithURLs(&base, &base))
	}
	if cfg.Token != "" {
		opts = append(opts, github.WithAuthToken(cfg.Token))
	}
	c, err := github.NewClient(opts...)
	if err != nil {
		// The token never reaches go-github's messages; the URL may.
		return nil, fmt.Errorf("github client: %w", err)
	}
	return c, nil
}

// classify turns a go-github error into one wrapping a build sentinel where
// one fits; what names the object, e.g. "repository ae6rt/dynamodb-lab".
// now is used to say when a rate limit resets.
func classify(err error, what string, now time.Time) error {
	var rl *github.RateLimitError
	var abuse *github.AbuseRateLimitError
	var er *github.ErrorResponse
	switch {
	case errors.Is(err, context.Canceled):
		return fmt.Errorf("github %s: %w", what, err)
	case errors.As(err, &rl):
		reset := rl.Rate.Reset.Time
		if reset.IsZero() {
			return fmt.Errorf("github %s: %w: GitHub API rate limit exhausted", what, build.ErrUnavailable)
		}
		return fmt.Errorf("github %s: %w: GitHub API rate limit exhausted; it resets at %s (in %s)",
			what, build.ErrUnavailable, reset.UTC().Format(time.RFC3339), max(reset.Sub(now), 0).Round(time.Second))
	case errors.As(err, &abuse):
		retry := "later"
		if abuse.RetryAfter != nil {
			retry = "in " + abuse.RetryAfter.Round(time.Second).String()
		}
		return fmt.Errorf("github %s: %w: GitHub secondary rate limit; retry %s", what, build.ErrUnavailable, retry)
	case errors.As(err, &er) && er.Response != nil:
		msg := er.Message
		if msg == "" {
			msg = http.StatusText(er.Response.StatusCode)
		}
		code := er.Response.StatusCode
		switch {
		case code == http.StatusNotFound:
			return fmt.Errorf("github %s: %w (or the token cannot see it)", what, build.ErrNotFound)
		case code == http.StatusUnauthorized:
			return fmt.Errorf("github %s: GitHub rejected the token (401 %s)", what, msg)
		case code == http.StatusForbidden:
			return fmt.Errorf("github %s: GitHub refused access (403 %s)", what, msg)
		case code == http.StatusUnprocessableEntity:
			return fmt.Errorf("github %s: %w: %s", what, build.ErrInvalid, msg)
		case code >= 500:
			return fmt.Errorf("github %s: %w: GitHub answered %d %s", what, build.ErrUnavailable, code, msg)
		}
		return fmt.Errorf("github %s: GitHub answered %d %s", what, code, msg)
	}
	// Network errors and timeouts: go-github wraps the *url.Error.
	return fmt.Errorf("github %s: %w: %s", what, build.ErrUnavailable, strings.TrimSpace(err.Error()))
}

// is5xx reports whether err is a GitHub answer with a 5xx status.
func is5xx(err error) bool {
	var er *github.ErrorResponse
	return errors.As(err, &er) && er.Response != nil && er.Response.StatusCode >= 500
}
