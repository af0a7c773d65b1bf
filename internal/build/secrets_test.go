package build_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/decap-ci/decap/internal/build"
)

func TestValidateSecretName(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		ok   bool
	}{
		{"NPM_TOKEN", true},
		{"A", true},
		{"_", true},
		{"_9", true},
		{"A1_B2", true},
		{strings.Repeat("A", build.MaxSecretNameLen), true},
		{strings.Repeat("A", build.MaxSecretNameLen+1), false},
		{"", false},
		{"npm_token", false},
		{"Npm", false},
		{"9A", false},
		{"NPM-TOKEN", false},
		{"A B", false},
		{"A/B", false},
		{"..", false},
		{"A\x00", false},
		{"Ä", false},
	} {
		err := build.ValidateSecretName(tc.name)
		if (err == nil) != tc.ok || err != nil && !errors.Is(err, build.ErrInvalid) {
			t.Errorf("ValidateSecretName(%q) error = %v, want ok %t", tc.name, err, tc.ok)
		}
	}
}

func TestValidateSecretValue(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		n  int
		ok bool
	}{{0, false}, {1, true}, {build.MaxSecretSize, true}, {build.MaxSecretSize + 1, false}} {
		if err := build.ValidateSecretValue(make([]byte, tc.n)); (err == nil) != tc.ok {
			t.Errorf("ValidateSecretValue(%d bytes) error = %v, want ok %t", tc.n, err, tc.ok)
		}
	}
}

func TestDescriptorSecrets(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, json, wantErr string
	}{
		{"names and a regex", `{"buildImage":"x","secrets":["NPM_TOKEN","DEPLOY_KEY"],"secretsRefRegex":"main|release/.*"}`, ""},
		{"no secrets", `{"buildImage":"x","secrets":[]}`, ""},
		{"a lower-case name", `{"buildImage":"x","secrets":["npm"]}`, "secrets[0]: secret name \"npm\" must be upper-case"},
		{"a name twice", `{"buildImage":"x","secrets":["A","B","A"]}`, `secrets[2]: "A" is listed twice`},
		{"too many names", `{"buildImage":"x","secrets":["A","B","C","D","E","F","G","H","I","J","K"]}`, "secrets lists 11 names, more than 10"},
		{"a name that is no string", `{"buildImage":"x","secrets":[1]}`, "secrets[0]: a number where a string belongs"},
		{"secrets as a string", `{"buildImage":"x","secrets":"NPM_TOKEN"}`, "secrets: a string where an array belongs"},
		{"a regex that does not compile", `{"buildImage":"x","secrets":["A"],"secretsRefRegex":"main("}`, "secretsRefRegex does not compile"},
		{"a regex that escapes its anchors", `{"buildImage":"x","secrets":["A"],"secretsRefRegex":"x)|(.*"}`, "secretsRefRegex does not compile"},
		{"a regex bomb", `{"buildImage":"x","secrets":["A"],"secretsRefRegex":"` + strings.Repeat("(.{0,1000})", 10) + `"}`, "secretsRefRegex is too large"},
		{"a near miss", `{"buildImage":"x","secretsRefRegexp":"main"}`, "secretsRefRegex"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := build.ParseDescriptor([]byte(tc.json))
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("ParseDescriptor() error = %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr) || !errors.Is(err, build.ErrInvalid)):
				t.Fatalf("ParseDescriptor() error = %v, want ErrInvalid containing %q", err, tc.wantErr)
			}
		})
	}
}

func TestSecretsFor(t *testing.T) {
	t.Parallel()
	parse := func(s string) build.Descriptor {
		d, err := build.ParseDescriptor([]byte(s))
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	wants := parse(`{"buildImage":"x","secrets":["NPM_TOKEN","DEPLOY_KEY"]}`)
	restricted := parse(`{"buildImage":"x","secrets":["NPM_TOKEN"],"secretsRefRegex":"main|release/.*"}`)
	none := parse(`{"buildImage":"x"}`)
	handMade := build.Descriptor{BuildImage: "x", Secrets: []string{"B", "A", "B"}, SecretsRefRegex: "main"}
	broken := build.Descriptor{BuildImage: "x", Secrets: []string{"A"}, SecretsRefRegex: "main("}
	req := func(ref string) build.Request {
		return build.Request{V: 1, Team: "t", Project: "p", Ref: ref, RefType: build.Branch, Trigger: build.TriggerPush, RequestedAt: time.Now()}
	}
	pull := func(trusted bool, approvedBy string) build.Request {
		r := req("pull/7")
		r.RefType = build.Pull
		r.PullRequest = &build.PullRequest{Number: 7, BaseRef: "main", HeadRef: "fix", HeadRepo: "fork/p", HeadSHA: "0123456789abcdef0123456789abcdef01234567", Trusted: trusted, ApprovedBy: approvedBy}
		return r
	}
	noObject := pull(true, "")
	noObject.PullRequest = nil
	for _, tc := range []struct {
		name string
		req  build.Request
		desc build.Descriptor
		want build.SecretGrant
	}{
		{"wants none", req("main"), none, build.SecretGrant{}},
		{"every ref, sorted", req("feature/x"), wants, build.SecretGrant{Names: []string{"DEPLOY_KEY", "NPM_TOKEN"}}},
		{"a ref the regex matches", req("release/1.2"), restricted, build.SecretGrant{Names: []string{"NPM_TOKEN"}}},
		{"main", req("main"), restricted, build.SecretGrant{Names: []string{"NPM_TOKEN"}}},
		{"a ref the regex does not match", req("feature/x"), restricted,
			build.SecretGrant{Withheld: `ref "feature/x" does not match secretsRefRegex "main|release/.*"`}},
		{"anchored: a longer ref", req("main-old"), restricted,
			build.SecretGrant{Withheld: `ref "main-old" does not match secretsRefRegex "main|release/.*"`}},
		{"a hand-made descriptor, repeats dropped", req("main"), handMade, build.SecretGrant{Names: []string{"A", "B"}}},
		{"a hand-made descriptor, another ref", req("dev"), handMade,
			build.SecretGrant{Withheld: `ref "dev" does not match secretsRefRegex "main"`}},
		{"a trusted pull request", pull(true, ""), wants, build.SecretGrant{Names: []string{"DEPLOY_KEY", "NPM_TOKEN"}}},
		{"an approved fork: built, not trusted", pull(false, "octocat"), wants, build.SecretGrant{Withheld: build.ReasonSecretsUntrusted}},
		{"an unapproved fork", pull(false, ""), wants, build.SecretGrant{Withheld: build.ReasonSecretsUntrusted}},
		{"a pull request without its object", noObject, wants, build.SecretGrant{Withheld: build.ReasonSecretsUntrusted}},
		{"untrusted, and secretsRefRegex does not match either", pull(false, "octocat"), restricted, build.SecretGrant{Withheld: build.ReasonSecretsUntrusted}},
		{"a regex that does not compile grants nothing", req("main"), broken,
			build.SecretGrant{Withheld: `ref "main" does not match secretsRefRegex "main("`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got := build.SecretsFor(tc.req, tc.desc)
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("SecretsFor() (-want +got):\n%s", diff)
			}
		})
	}
	// SecretsFor must not let the caller change the descriptor through
	// the names it returns.
	g := build.SecretsFor(req("main"), wants)
	g.Names[0] = "CHANGED"
	if wants.Secrets[0] != "NPM_TOKEN" || wants.Secrets[1] != "DEPLOY_KEY" {
		t.Errorf("the descriptor's secrets changed through the grant: %q", wants.Secrets)
	}
}

func TestRecordGrantSecrets(t *testing.T) {
	t.Parallel()
	now := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	r := build.Record{BuildID: build.NewID(now), Team: "t", Project: "p", Ref: "main", Status: build.StatusQueued}
	if err := r.GrantSecrets([]string{"B", "A", "B"}, "C is not set"); err != nil {
		t.Fatalf("GrantSecrets() error = %v", err)
	}
	if !cmp.Equal(r.Secrets, []string{"A", "B"}) || r.SecretsWithheld != "C is not set" {
		t.Errorf("after GrantSecrets: %q withheld %q", r.Secrets, r.SecretsWithheld)
	}
	if err := r.GrantSecrets(nil, build.ReasonSecretsUntrusted); err != nil || r.Secrets != nil {
		t.Errorf("GrantSecrets(none) error = %v, secrets %q", err, r.Secrets)
	}
	if err := r.GrantSecrets([]string{"bad"}, ""); !errors.Is(err, build.ErrInvalid) {
		t.Errorf("GrantSecrets() of a bad name error = %v, want ErrInvalid", err)
	}
	if err := r.Start(now, "pod", "c"); err != nil {
		t.Fatal(err)
	}
	if err := r.GrantSecrets([]string{"A"}, ""); !errors.Is(err, build.ErrConflict) {
		t.Errorf("GrantSecrets() of a running build error = %v, want ErrConflict", err)
	}
}

func TestSecretNeverPrintsItsValue(t *testing.T) {
	t.Parallel()
	s := build.Secret{Name: "NPM_TOKEN", Value: []byte("npm_topsecret")}
	job := build.Job{Secrets: []build.Secret{s}}
	for _, format := range []string{"%v", "%+v", "%#v", "%s"} {
		for _, v := range []any{s, job, []build.Secret{s}, &job} {
			if out := fmt.Sprintf(format, v); strings.Contains(out, "topsecret") {
				t.Errorf("Sprintf(%q, %T) = %s: shows the value", format, v, out)
			}
		}
	}
}
