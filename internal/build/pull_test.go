package build_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/decap-ci/decap/internal/build"
)

func samplePullRequest() build.Request {
	return build.Request{
		V: 1, BuildID: "01936f4e-7a3b-7c1d-9e2f-0a1b2c3d4e5f", Team: "Codertocat", Project: "Hello-World",
		Ref: "pull/2", RefType: build.Pull, SHA: "ec26c3e57ca3a959ca5aad62de7213c562f8c821",
		Trigger: build.TriggerPullRequest, RequestedBy: "Codertocat",
		RequestedAt: time.Date(2026, 11, 27, 3, 4, 5, 600_000_000, time.UTC),
		DeliveryID:  "9d3a4b10-5c4e-11ef-8a7e-1b2c3d4e5f61",
		PullRequest: &build.PullRequest{
			Number: 2, BaseRef: "master", HeadRef: "changes", HeadRepo: "octocat-fork/Hello-World",
			HeadSHA: "ec26c3e57ca3a959ca5aad62de7213c562f8c821", ApprovedBy: "Octocat",
		},
	}
}

// TestEncodePullGolden pins the queue body of a pull request's build: the
// version-1 message with the additive pullRequest object. (The body of a
// branch's build, message-v1.json, has none: TestEncodeGolden.)
func TestEncodePullGolden(t *testing.T) {
	t.Parallel()
	body, err := build.Encode(samplePullRequest())
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "message-v1-pull.json", append(body, '\n'))
	back, err := build.Decode(body)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(samplePullRequest(), back); diff != "" {
		t.Errorf("round trip (-want +got):\n%s", diff)
	}
	if !back.Untrusted() {
		t.Error("Untrusted() = false for an approved fork's pull request, want true: approval builds it, it does not trust it")
	}
}

// TestValidatePull checks what a request's ref type asks of its pull
// request fields, and that pull request refs are the pull requests'
// alone.
func TestValidatePull(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		edit    func(r *build.Request)
		wantErr string // "" = valid
	}{
		{name: "sample", edit: func(*build.Request) {}},
		{name: "trusted same repository", edit: func(r *build.Request) {
			r.PullRequest.HeadRepo, r.PullRequest.Trusted, r.PullRequest.ApprovedBy = "Codertocat/Hello-World", true, ""
		}},
		{name: "deleted fork", edit: func(r *build.Request) { r.PullRequest.HeadRepo = "" }},
		{name: "rebuilt by hand", edit: func(r *build.Request) { r.Trigger = build.TriggerManual }},
		{name: "no pullRequest", edit: func(r *build.Request) { r.PullRequest = nil }, wantErr: "needs a pullRequest object"},
		{name: "ref of another number", edit: func(r *build.Request) { r.Ref = "pull/3" }, wantErr: `must be "pull/2"`},
		{name: "branch-like ref", edit: func(r *build.Request) { r.Ref = "main" }, wantErr: `must be "pull/2"`},
		{name: "sha is not the head", edit: func(r *build.Request) { r.SHA = "6113728f27ae82c7b1a177c8d03f9e96e0adf246" }, wantErr: "must be its pullRequest.headSha"},
		{name: "no sha", edit: func(r *build.Request) { r.SHA = "" }, wantErr: "must be its pullRequest.headSha"},
		{name: "number zero", edit: func(r *build.Request) { r.PullRequest.Number, r.Ref = 0, "pull/0" }, wantErr: "not a pull request number"},
		{name: "number too large", edit: func(r *build.Request) { r.PullRequest.Number, r.Ref = 1<<31, "pull/2147483648" }, wantErr: "not a pull request number"},
		{name: "hostile head branch", edit: func(r *build.Request) { r.PullRequest.HeadRef = "x\n$(id)" }, wantErr: "pullRequest.headRef"},
		{name: "hostile base branch", edit: func(r *build.Request) { r.PullRequest.BaseRef = "../main" }, wantErr: "pullRequest.baseRef"},
		{name: "hostile head repository", edit: func(r *build.Request) { r.PullRequest.HeadRepo = "../../etc" }, wantErr: "pullRequest.headRepo"},
		{name: "head repository without owner", edit: func(r *build.Request) { r.PullRequest.HeadRepo = "Hello-World" }, wantErr: "not owner/name"},
		{name: "head sha not hex", edit: func(r *build.Request) { r.PullRequest.HeadSHA, r.SHA = "zz", "zz" }, wantErr: "headSha"},
		{name: "trusted and approved", edit: func(r *build.Request) { r.PullRequest.Trusted = true }, wantErr: "trusted and approved at once"},
		{name: "branch with pullRequest", edit: func(r *build.Request) { r.RefType, r.Ref = build.Branch, "main" }, wantErr: "has no pullRequest"},
		{name: "branch named like a pull request", edit: func(r *build.Request) {
			r.RefType, r.PullRequest, r.Trigger = build.Branch, nil, build.TriggerPush
		}, wantErr: `ref "pull/2" is pull request 2's`},
		{name: "tag named like a pull request", edit: func(r *build.Request) {
			r.RefType, r.PullRequest, r.Trigger = build.Tag, nil, build.TriggerPush
		}, wantErr: `ref "pull/2" is pull request 2's`},
		{name: "branch pull/x is a branch", edit: func(r *build.Request) {
			r.RefType, r.Ref, r.PullRequest, r.Trigger = build.Branch, "pull/x", nil, build.TriggerPush
		}},
		{name: "branch pull/07 is a branch", edit: func(r *build.Request) {
			r.RefType, r.Ref, r.PullRequest, r.Trigger = build.Branch, "pull/07", nil, build.TriggerPush
		}},
		{name: "pull_request trigger on a branch", edit: func(r *build.Request) {
			r.RefType, r.Ref, r.PullRequest = build.Branch, "main", nil
		}, wantErr: "only for pull request builds"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := samplePullRequest()
			tt.edit(&r)
			err := r.Validate()
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Validate: got %v, want nil", err)
				}
				return
			}
			if err == nil || !errors.Is(err, build.ErrInvalid) || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Validate: got %v, want ErrInvalid containing %q", err, tt.wantErr)
			}
		})
	}
}

// TestDecodePullRefs checks that a queue producer cannot name a pull
// request's ref as git does: Decap's ref is pull/<N>, and the head is
// fetched from refs/pull/<N>/head by the build.
func TestDecodePullRefs(t *testing.T) {
	t.Parallel()
	for _, ref := range []string{"refs/pull/2/head", "refs/pull/2/merge"} {
		body := strings.Replace(mustEncode(t, samplePullRequest()), `"ref":"pull/2"`, `"ref":"`+ref+`"`, 1)
		if _, err := build.Decode([]byte(body)); err == nil || !errors.Is(err, build.ErrInvalid) {
			t.Errorf("Decode with ref %q: got %v, want ErrInvalid", ref, err)
		}
		if _, _, err := build.NormalizeRef(ref, ""); err == nil {
			t.Errorf("NormalizeRef(%q): got nil, want an error (pull requests are built from their webhooks)", ref)
		}
	}
}

func mustEncode(t *testing.T, r build.Request) string {
	t.Helper()
	body, err := build.Encode(r)
	if err != nil {
		t.Fatal(err)
	}
	return string(body)
}

func TestPullNumber(t *testing.T) {
	t.Parallel()
	tests := map[string]int{"pull/1": 1, "pull/2147483647": 1<<31 - 1, "pull/0": 0, "pull/01": 0, "pull/": 0,
		"pull/2147483648": 0, "pull/1/head": 0, "pull/-1": 0, "pull/1x": 0, "pulls/1": 0, "main": 0, "pull/99999999999": 0}
	for ref, want := range tests {
		got, ok := build.PullNumber(ref)
		if ok != (want != 0) || got != want {
			t.Errorf("PullNumber(%q) = %d, %v; want %d, %v", ref, got, ok, want, want != 0)
		}
	}
	if got := build.PullRef(42); got != "pull/42" {
		t.Errorf("PullRef(42) = %q", got)
	}
	if got := (build.PullRequest{Number: 42}).GitRef(); got != "refs/pull/42/head" {
		t.Errorf("GitRef() = %q", got)
	}
}

// TestUntrusted checks the one line between pull requests and secrets:
// only a trusted pull request's build, and every branch and tag build,
// is trusted.
func TestUntrusted(t *testing.T) {
	t.Parallel()
	branch := sampleRequest()
	trusted := samplePullRequest()
	trusted.PullRequest.Trusted, trusted.PullRequest.ApprovedBy = true, ""
	approved := samplePullRequest()
	unapproved := samplePullRequest()
	unapproved.PullRequest.ApprovedBy = ""
	missing := samplePullRequest()
	missing.PullRequest = nil
	tests := []struct {
		name string
		req  build.Request
		want bool
	}{
		{"branch", branch, false},
		{"trusted pull request", trusted, false},
		{"approved fork", approved, true},
		{"fork built without approval (forks always)", unapproved, true},
		{"pull request without its object", missing, true},
	}
	for _, tt := range tests {
		if got := tt.req.Untrusted(); got != tt.want {
			t.Errorf("%s: Request.Untrusted() = %v, want %v", tt.name, got, tt.want)
		}
		if got := build.RecordFor(tt.req).Untrusted(); got != tt.want {
			t.Errorf("%s: Record.Untrusted() = %v, want %v", tt.name, got, tt.want)
		}
	}
}

// TestPullRequestKeptByRecordAndRetry checks that a pull request build's
// record keeps the pull request (its own copy), and that the retry of an
// untrusted build is as untrusted.
func TestPullRequestKeptByRecordAndRetry(t *testing.T) {
	t.Parallel()
	req := samplePullRequest()
	rec := build.RecordFor(req)
	if diff := cmp.Diff(req.PullRequest, rec.PullRequest); diff != "" {
		t.Fatalf("RecordFor: pull request (-want +got):\n%s", diff)
	}
	rec.PullRequest.Trusted = true
	if req.PullRequest.Trusted {
		t.Fatal("the record shares its request's PullRequest")
	}
	rec = build.RecordFor(req)
	rec.Status, rec.Infra, rec.InfraRetries = build.StatusErrored, build.InfraEvicted, 2
	rec.FinishedAt = req.RequestedAt.Add(time.Minute)
	next, nextRec, err := rec.NextAttempt()
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(req.PullRequest, next.PullRequest); diff != "" {
		t.Errorf("NextAttempt: pull request (-want +got):\n%s", diff)
	}
	if !next.Untrusted() || !nextRec.Untrusted() {
		t.Error("the retry of an untrusted build is trusted")
	}
}

// TestPullRequestsDescriptor checks project.json's pullRequests.
func TestPullRequestsDescriptor(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		json    string
		wantErr string
		into    map[string]bool // base branch → BuildsPullRequestsInto
		forks   string
	}{
		{name: "absent", json: `{"buildImage":"x"}`, into: map[string]bool{"main": false}, forks: build.ForksNever},
		{name: "empty", json: `{"buildImage":"x","pullRequests":{}}`, into: map[string]bool{"main": true, "x/y": true}, forks: build.ForksApproval},
		{name: "anchored", json: `{"buildImage":"x","pullRequests":{"baseRefRegex":"main|release/.*","forks":"always"}}`,
			into: map[string]bool{"main": true, "release/1": true, "mainly": false, "dev/main": false}, forks: build.ForksAlways},
		{name: "never", json: `{"buildImage":"x","pullRequests":{"forks":"never"}}`, into: map[string]bool{"main": true}, forks: build.ForksNever},
		{name: "unknown forks", json: `{"buildImage":"x","pullRequests":{"forks":"sometimes"}}`, wantErr: `pullRequests.forks "sometimes" is not`},
		{name: "typo", json: `{"buildImage":"x","pullRequests":{"baseRef":"main"}}`, wantErr: "unknown field"},
		{name: "case", json: `{"buildImage":"x","pullrequests":{}}`, wantErr: "pullrequests"},
		{name: "bad regex", json: `{"buildImage":"x","pullRequests":{"baseRefRegex":"(main"}}`, wantErr: "pullRequests.baseRefRegex does not compile"},
		{name: "regex closing the anchor", json: `{"buildImage":"x","pullRequests":{"baseRefRegex":"x)|(.*"}}`, wantErr: "pullRequests.baseRefRegex does not compile"},
		{name: "regex bomb", json: `{"buildImage":"x","pullRequests":{"baseRefRegex":"` + strings.Repeat(".{0,1000}", 100) + `"}}`,
			wantErr: "pullRequests.baseRefRegex is too large"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			d, err := build.ParseDescriptor([]byte(tt.json))
			if tt.wantErr != "" {
				if err == nil || !errors.Is(err, build.ErrInvalid) || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseDescriptor: got %v, want ErrInvalid containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for base, want := range tt.into {
				if got := d.BuildsPullRequestsInto(base); got != want {
					t.Errorf("BuildsPullRequestsInto(%q) = %v, want %v", base, got, want)
				}
			}
			if got := d.ForkPolicy(); got != tt.forks {
				t.Errorf("ForkPolicy() = %q, want %q", got, tt.forks)
			}
		})
	}
	bomb := build.Descriptor{BuildImage: "x", PullRequests: &build.PullRequestPolicy{BaseRefRegex: strings.Repeat(".{0,1000}", 100)}}
	if bomb.BuildsPullRequestsInto("main") {
		t.Error("a hand-built descriptor's baseRefRegex over the size bound matches")
	}
}

// TestSupersedePullRefs checks that a new push to a pull request
// supersedes its older builds, waiting and running, whatever the
// project's supersede says of branches.
func TestSupersedePullRefs(t *testing.T) {
	t.Parallel()
	no := false
	d, err := build.ParseDescriptor([]byte(`{"buildImage":"x","supersede":{"queued":false,"exceptRefRegex":".*"}}`))
	if err != nil {
		t.Fatal(err)
	}
	both := build.SupersedePolicy{Queued: true, Running: true}
	for _, desc := range []build.Descriptor{d, {BuildImage: "x"}, {BuildImage: "x", Supersede: &build.Supersede{Queued: &no, Running: &no}}} {
		if got := desc.SupersedeFor("pull/7"); got != both {
			t.Errorf("SupersedeFor(pull/7) = %+v, want %+v", got, both)
		}
	}
	if got := d.SupersedeFor("main"); got.Any() {
		t.Errorf("SupersedeFor(main) = %+v, want nothing (exceptRefRegex .*)", got)
	}
}

func TestPullRequestStateValidate(t *testing.T) {
	t.Parallel()
	ok := build.PullRequestState{Team: "Codertocat", Project: "Hello-World", Number: 2, BaseRef: "master", HeadRef: "changes",
		HeadRepo: "Codertocat/Hello-World", HeadSHA: "ec26c3e57ca3a959ca5aad62de7213c562f8c821", State: build.PullBuilding, Version: 1}
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	if ok.Fork() {
		t.Error("Fork() = true for a head in the base repository")
	}
	if got := ok.LockKey(); got != "Codertocat/Hello-World/pull/2" {
		t.Errorf("LockKey() = %q", got)
	}
	for name, edit := range map[string]func(p *build.PullRequestState){
		"team":    func(p *build.PullRequestState) { p.Team = ".." },
		"number":  func(p *build.PullRequestState) { p.Number = -1 },
		"state":   func(p *build.PullRequestState) { p.State = "happy" },
		"title":   func(p *build.PullRequestState) { p.Title = strings.Repeat("x", build.MaxPullTitle+1) },
		"utf-8":   func(p *build.PullRequestState) { p.Title = "\xff" },
		"version": func(p *build.PullRequestState) { p.Version = 0 },
		"head":    func(p *build.PullRequestState) { p.HeadRef = "a..b" },
	} {
		p := ok
		edit(&p)
		if err := p.Validate(); err == nil || !errors.Is(err, build.ErrInvalid) {
			t.Errorf("%s: Validate() = %v, want ErrInvalid", name, err)
		}
	}
	fork := ok
	fork.HeadRepo = "octocat-fork/Hello-World"
	deleted := ok
	deleted.HeadRepo = ""
	if !fork.Fork() || !deleted.Fork() {
		t.Error("Fork() = false for a head in another or a deleted repository")
	}
}

// TestPullRequestEnv checks the variables a pull request's build gets,
// and that the build container reads back the same pull request.
func TestPullRequestEnv(t *testing.T) {
	t.Parallel()
	p := *samplePullRequest().PullRequest
	p.ApprovedBy = "" // not a build's variable
	env := map[string]string{}
	for _, v := range p.Env() {
		env[v.Name] = v.Value
	}
	want := map[string]string{"PULL_REQUEST_NUMBER": "2", "PULL_REQUEST_BASE_REF": "master", "PULL_REQUEST_HEAD_REF": "changes",
		"PULL_REQUEST_HEAD_REPO": "octocat-fork/Hello-World", "PULL_REQUEST_TRUSTED": "false", "PULL_REQUEST_REF": "refs/pull/2/head"}
	if diff := cmp.Diff(want, env); diff != "" {
		t.Errorf("Env() (-want +got):\n%s", diff)
	}
	back, err := build.PullRequestFromEnv(func(k string) string { return env[k] }, p.HeadSHA)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(&p, back); diff != "" {
		t.Errorf("PullRequestFromEnv() (-want +got):\n%s", diff)
	}
	if got, err := build.PullRequestFromEnv(func(string) string { return "" }, ""); got != nil || err != nil {
		t.Errorf("PullRequestFromEnv() of a branch build = %v, %v; want nil, nil", got, err)
	}
	env["PULL_REQUEST_TRUSTED"] = "yes"
	if _, err := build.PullRequestFromEnv(func(k string) string { return env[k] }, p.HeadSHA); !errors.Is(err, build.ErrInvalid) {
		t.Errorf("PullRequestFromEnv() with TRUSTED=yes: %v, want ErrInvalid", err)
	}
}
