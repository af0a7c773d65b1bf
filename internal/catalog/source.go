package catalog

import (
	"fmt"
	"net/url"
	"path/filepath"
	"strings"

	"github.com/decap-ci/decap/internal/build"
)

type sourceKind int

const (
	kindDir sourceKind = iota
	kindGit
)

// parseSource applies the rules of the package comment. For a directory it
// returns the absolute path; for git, what to pass to git fetch.
func parseSource(s string) (sourceKind, string, error) {
	if s == "" {
		return 0, "", fmt.Errorf("%w: catalog source is empty", build.ErrInvalid)
	}
	if strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		return 0, "", fmt.Errorf("%w: catalog source %s contains control characters", build.ErrInvalid, displayName(s))
	}
	if rest, ok := strings.CutPrefix(s, "git+"); ok {
		if rest == "" {
			return 0, "", fmt.Errorf("%w: catalog source %q names no repository", build.ErrInvalid, s)
		}
		if isURL(rest) || isSCP(rest) {
			return kindGit, rest, nil
		}
		abs, err := filepath.Abs(rest)
		if err != nil {
			return 0, "", fmt.Errorf("%w: catalog source %s: %v", build.ErrInvalid, displayName(s), err)
		}
		return kindGit, abs, nil
	}
	if isURL(s) || isSCP(s) {
		if strings.HasPrefix(s, "-") {
			return 0, "", fmt.Errorf("%w: catalog source %s starts with '-'", build.ErrInvalid, displayName(s))
		}
		return kindGit, s, nil
	}
	abs, err := filepath.Abs(s)
	if err != nil {
		return 0, "", fmt.Errorf("%w: catalog source %s: %v", build.ErrInvalid, displayName(s), err)
	}
	return kindDir, abs, nil
}

// isURL reports whether s starts with "<scheme>://".
func isURL(s string) bool {
	i := strings.Index(s, "://")
	if i <= 0 {
		return false
	}
	for j, r := range s[:i] {
		letter := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z'
		if !letter && (j == 0 || !(r >= '0' && r <= '9' || r == '+' || r == '-' || r == '.')) {
			return false
		}
	}
	return true
}

// isSCP reports whether s is git's scp-like syntax "[user@]host:path": a
// colon with no slash before it.
func isSCP(s string) bool {
	i := strings.IndexByte(s, ':')
	return i > 0 && !strings.Contains(s[:i], "/")
}

// redactURL hides a password or token in a URL's user information.
func redactURL(s string) string {
	if !isURL(s) {
		return s
	}
	u, err := url.Parse(s)
	if err != nil || u.User == nil {
		return s
	}
	if _, ok := u.User.Password(); ok {
		u.User = url.UserPassword(u.User.Username(), "xxxxx")
	} else if u.Scheme == "https" || u.Scheme == "http" {
		// https://TOKEN@github.com/... carries the secret as the user name.
		u.User = url.User("xxxxx")
	}
	return u.String()
}

// secretOf returns the credential in a URL, "" if none, so it can be scrubbed
// from git's messages.
func secretOf(s string) string {
	if !isURL(s) {
		return ""
	}
	u, err := url.Parse(s)
	if err != nil || u.User == nil {
		return ""
	}
	if p, ok := u.User.Password(); ok {
		return p
	}
	if u.Scheme == "https" || u.Scheme == "http" {
		return u.User.Username()
	}
	return ""
}

// GitURL returns the git URL a build Pod fetches the build-scripts
// repository from: the source's, when it is a git repository whose URL
// carries no credential (build Pods hold none of the services'). A
// directory, or a URL with a password or token, is an error saying so.
func GitURL(source string) (string, error) {
	kind, loc, err := parseSource(source)
	if err != nil {
		return "", err
	}
	if kind != kindGit {
		return "", fmt.Errorf("%w: build scripts %s are a directory; build pods need a git repository (https://…, ssh://…, git@host:path)", build.ErrInvalid, displayName(source))
	}
	if secretOf(loc) != "" {
		return "", fmt.Errorf("%w: the build-scripts URL %s carries a credential, which build pods must not hold; give pods a URL they can read without one (a deploy key in the image, a public mirror)", build.ErrInvalid, redactURL(loc))
	}
	return loc, nil
}
