package config

import (
	"fmt"
	"strings"
)

// MinSecretLen is the shortest API token or webhook secret a service
// accepts, in bytes: `openssl rand -hex 32` gives 64.
//
// The webhook secret gets the rule too, though GitHub accepts any: it is an
// HMAC key, and anyone who sees one signed delivery (a proxy's log, GitHub's
// delivery history, a leaked request) can guess a short or guessable key
// offline at billions of tries a second, then sign pushes of their own.
const MinSecretLen = 32

// placeholders are the values example files and tutorials use, compared
// case-insensitively with everything but letters and digits removed, as
// whole values; placeholderMarks are refused anywhere in a value.
var (
	placeholders = []string{
		"replaceme", "changeme", "changeit", "secret", "password", "passwd", "token", "apitoken",
		"webhooksecret", "githubwebhooksecret", "example", "test", "default", "admin", "none", "null",
	}
	placeholderMarks = []string{"replaceme", "changeme", "example", "placeholder", "yoursecret", "yourtoken"}
)

// minDistinct is the fewest distinct bytes a secret may have: a random hex
// string of 32 has about 14, one of 64 all 16.
const minDistinct = 8

// weakSecret says why v is not fit to be a service's secret, "" when it is:
// shorter than MinSecretLen bytes, a known placeholder (such as REPLACE-ME,
// the value of manifests/secret.example.yaml), one repeated character, few
// distinct ones, or a short pattern repeated. The reason never quotes v.
func weakSecret(v string) string {
	const how = "make one with: openssl rand -hex 32"
	norm := strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
			return r
		case r >= 'A' && r <= 'Z':
			return r + 'a' - 'A'
		}
		return -1
	}, v)
	for _, p := range placeholders {
		if norm == p {
			return "is a placeholder, not a secret; " + how
		}
	}
	for _, p := range placeholderMarks {
		if strings.Contains(norm, p) {
			return "looks like a placeholder (it contains " + p + "); " + how
		}
	}
	if len(v) < MinSecretLen {
		return fmt.Sprintf("is shorter than %d bytes; %s", MinSecretLen, how)
	}
	var seen [256]bool
	distinct := 0
	for i := 0; i < len(v); i++ {
		if !seen[v[i]] {
			seen[v[i]] = true
			distinct++
		}
	}
	if distinct < minDistinct {
		return fmt.Sprintf("has fewer than %d distinct characters, too little to be random; %s", minDistinct, how)
	}
	for period := 1; period <= len(v)/2; period++ {
		if len(v)%period == 0 && strings.Repeat(v[:period], len(v)/period) == v {
			return "is a short pattern repeated, too little to be random; " + how
		}
	}
	return ""
}
