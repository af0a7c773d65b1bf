package ingest

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"

	"github.com/decap-ci/decap/internal/build"
)

// VerifySignature checks GitHub's X-Hub-Signature-256 header ("sha256=" and
// the hex HMAC-SHA256 of body under secret) in constant time.
func VerifySignature(secret []byte, body []byte, header string) error {
	hexSig, ok := strings.CutPrefix(header, "sha256=")
	if !ok {
		if header == "" {
			return fmt.Errorf("%w: X-Hub-Signature-256 header is missing", errUnauthorized)
		}
		return fmt.Errorf("%w: X-Hub-Signature-256 must start with sha256=", errUnauthorized)
	}
	got, err := hex.DecodeString(hexSig)
	if err != nil || len(got) != sha256.Size {
		return fmt.Errorf("%w: X-Hub-Signature-256 is not a hex SHA-256 HMAC", errUnauthorized)
	}
	mac := hmac.New(sha256.New, secret)
	mac.Write(body)
	if !hmac.Equal(got, mac.Sum(nil)) {
		return fmt.Errorf("%w: X-Hub-Signature-256 does not match the body", errUnauthorized)
	}
	return nil
}

// Sign returns the X-Hub-Signature-256 value GitHub would send for body.
func Sign(secret, body []byte) string {
	mac := hmac.New(sha256.New, secret)
	mac.Write(body)
	return "sha256=" + hex.EncodeToString(mac.Sum(nil))
}

// pushEvent holds the few fields of a push payload that Decap reads; the rest
// of the (possibly large) payload is skipped by decodePush. The tags say
// how encoding/json would read it, which decodePush matches
// (github_diff_test.go).
type pushEvent struct {
	Ref        string `json:"ref"`
	Before     string `json:"before"`
	After      string `json:"after"`
	Deleted    bool   `json:"deleted"`
	Repository struct {
		Name  string `json:"name"`
		Owner struct {
			Login string `json:"login"`
			Name  string `json:"name"`
		} `json:"owner"`
	} `json:"repository"`
	Pusher struct {
		Name string `json:"name"`
	} `json:"pusher"`
	Sender struct {
		Login string `json:"login"`
	} `json:"sender"`
}

// parsedPush is a push reduced to what a build request needs.
type parsedPush struct {
	team, project, ref string
	refType            build.RefType
	sha, pusher        string
	deleted            bool
	// replayKey names the push itself (repository, full ref, before and
	// after), whatever delivery carries it: see Server.enqueue.
	replayKey string
	// ignored says why the push builds nothing, when it does not.
	ignored string
}

// ParsePush reads a push payload. A payload that is not JSON, lacks the
// repository, or names a hostile team, project or ref is an ErrInvalid error;
// a push that is well-formed but not buildable (a deletion, a ref outside
// refs/heads/ and refs/tags/) comes back with ignored set.
func parsePush(body []byte) (parsedPush, error) {
	ev, err := decodePush(body)
	if err != nil {
		return parsedPush{}, err
	}
	return pushFrom(ev)
}

// pushFrom is parsePush once the payload is decoded.
func pushFrom(ev pushEvent) (parsedPush, error) {
	p := parsedPush{project: ev.Repository.Name, sha: ev.After, deleted: ev.Deleted}
	p.team = ev.Repository.Owner.Login
	if p.team == "" {
		p.team = ev.Repository.Owner.Name
	}
	p.pusher = ev.Pusher.Name
	if p.pusher == "" {
		p.pusher = ev.Sender.Login
	}
	if err := build.ValidateName("repository owner", p.team); err != nil {
		return parsedPush{}, err
	}
	if err := build.ValidateName("repository name", p.project); err != nil {
		return parsedPush{}, err
	}
	switch {
	case strings.HasPrefix(ev.Ref, "refs/heads/"):
		p.ref, p.refType = strings.TrimPrefix(ev.Ref, "refs/heads/"), build.Branch
	case strings.HasPrefix(ev.Ref, "refs/tags/"):
		p.ref, p.refType = strings.TrimPrefix(ev.Ref, "refs/tags/"), build.Tag
	case ev.Ref == "":
		return parsedPush{}, fmt.Errorf("%w: push payload has no ref", build.ErrInvalid)
	default:
		p.ignored = fmt.Sprintf("ref %q is neither a branch nor a tag", truncate(ev.Ref, 100))
		return p, nil
	}
	if strings.HasPrefix(p.ref, "refs/") {
		// A branch named like a full ref (refs/heads/refs/heads/main) would
		// share a name with what the API reads as branch main.
		p.ignored = fmt.Sprintf("%s %q starts with refs/, which Decap does not build", p.refType, truncate(p.ref, 100))
		return p, nil
	}
	if err := build.ValidateRef(p.ref); err != nil {
		return parsedPush{}, err
	}
	if n, ok := build.PullNumber(p.ref); ok {
		// "team/project/pull/7" is pull request 7's lock key.
		p.ignored = fmt.Sprintf("%s %q is named like pull request %d's builds (pull/<N>), which Decap does not build from a push", p.refType, p.ref, n)
		return p, nil
	}
	if p.deleted || strings.Trim(p.sha, "0") == "" {
		p.ignored = fmt.Sprintf("%s %q was deleted", p.refType, p.ref)
		return p, nil
	}
	if len(p.pusher) > 256 {
		p.pusher = p.pusher[:256]
	}
	p.replayKey = replayKey(p.team, p.project, ev.Ref, ev.Before, ev.After)
	return p, nil
}

// replayKey is the idempotency key of one push: its repository, full ref
// and the before and after commits, hashed (the ref may be long). GitHub
// sends a push once, under one delivery ID; the same body under another
// delivery ID is somebody replaying a signed body they saw.
func replayKey(team, project, ref, before, after string) string {
	h := sha256.New()
	for _, part := range []string{team, project, ref, before, after} {
		h.Write([]byte(part))
		h.Write([]byte{0})
	}
	return "push:" + hex.EncodeToString(h.Sum(nil))
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
