package build_test

import (
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/decap-ci/decap/internal/build"
)

var update = flag.Bool("update", false, "rewrite golden files")

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read golden file (run with -update to create it): %v", err)
	}
	if diff := cmp.Diff(string(want), string(got)); diff != "" {
		t.Errorf("%s mismatch (-want +got):\n%s", name, diff)
	}
}

func sampleRequest() build.Request {
	return build.Request{
		V: 1, BuildID: "01936f4e-7a3b-7c1d-9e2f-0a1b2c3d4e5f", Team: "ae6rt", Project: "dynamodb-lab",
		Ref: "feature/Locks", RefType: build.Branch, SHA: "6113728f27ae82c7b1a177c8d03f9e96e0adf246",
		Trigger: build.TriggerPush, RequestedBy: "Codertocat",
		RequestedAt: time.Date(2026, 11, 27, 3, 4, 5, 600_000_000, time.UTC),
		DeliveryID:  "9d3a4b10-5c4e-11ef-8a7e-1b2c3d4e5f60",
	}
}

func TestEncodeGolden(t *testing.T) {
	t.Parallel()
	body, err := build.Encode(sampleRequest())
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "message-v1.json", append(body, '\n'))
	back, err := build.Decode(body)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(sampleRequest(), back); diff != "" {
		t.Errorf("round trip (-want +got):\n%s", diff)
	}
}

func TestDecode(t *testing.T) {
	t.Parallel()
	ok := `{"v":1,"team":"ae6rt","project":"p","ref":"main","refType":"branch","trigger":"api","requestedAt":"2026-11-27T00:00:00Z"}`
	tests := []struct {
		name    string
		body    string
		wantErr string // substring; "" = valid
	}{
		{"minimal from another producer, no build id", ok, ""},
		{"extra fields are ignored", `{"v":1,"team":"a","project":"p","ref":"main","refType":"tag","trigger":"api","requestedAt":"2026-11-27T00:00:00Z","priority":7}`, ""},
		{"not json", `hello`, "not a JSON request"},
		{"empty", ``, "not a JSON request"},
		{"trailing data", ok + `{}`, "data after"},
		{"array", `[1,2]`, "not a JSON request"},
		{"missing version", strings.Replace(ok, `"v":1,`, ``, 1), "version 0"},
		{"future version", strings.Replace(ok, `"v":1`, `"v":2`, 1), "version 2"},
		{"path traversal team", strings.Replace(ok, `"ae6rt"`, `"../etc"`, 1), "team"},
		{"space in project", strings.Replace(ok, `"p"`, `"my project"`, 1), "project"},
		{"ref with dotdot", strings.Replace(ok, `"main"`, `"a/../b"`, 1), "ref"},
		{"ref with space", strings.Replace(ok, `"main"`, `"a b"`, 1), "ref"},
		{"very long ref", strings.Replace(ok, `"main"`, `"`+strings.Repeat("r", 300)+`"`, 1), "longer than"},
		{"bad ref type", strings.Replace(ok, `"branch"`, `"pr"`, 1), "refType"},
		{"full tag ref called a branch", strings.Replace(ok, `"main"`, `"refs/tags/v1"`, 1), "refType"},
		{"pull request ref", strings.Replace(ok, `"main"`, `"refs/pull/1/head"`, 1), "neither a branch"},
		{"bad trigger", strings.Replace(ok, `"api"`, `"cron"`, 1), "trigger"},
		{"bad build id", strings.Replace(ok, `"v":1,`, `"v":1,"buildId":"x/../y",`, 1), "not a UUID"},
		{"bad sha", strings.Replace(ok, `"v":1,`, `"v":1,"sha":"zz",`, 1), "sha"},
		{"missing time", strings.Replace(ok, `,"requestedAt":"2026-11-27T00:00:00Z"`, ``, 1), "requestedAt"},
		{"a rebuild", strings.Replace(ok, `"v":1,`, `"v":1,"rebuildOf":"01936f4e-7a3b-7c1d-9e2f-0a1b2c3d4e5f",`, 1), ""},
		{"bad rebuildOf", strings.Replace(ok, `"v":1,`, `"v":1,"rebuildOf":"../x",`, 1), "rebuildOf"},
		{"a rebuild of itself", strings.Replace(ok, `"v":1,`, `"v":1,"buildId":"01936f4e-7a3b-7c1d-9e2f-0a1b2c3d4e5f","rebuildOf":"01936f4e-7a3b-7c1d-9e2f-0a1b2c3d4e5f",`, 1), "rebuild of itself"},
		{"huge", `{"v":1,"pad":"` + strings.Repeat("x", build.MaxMessageSize) + `"}`, "more than"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := build.Decode([]byte(tt.body))
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Decode: got error %v, want none", err)
				}
				return
			}
			if err == nil || !errors.Is(err, build.ErrInvalid) || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Decode: got error %v, want ErrInvalid containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestValidateRef(t *testing.T) {
	t.Parallel()
	valid := []string{"main", "feature/Locks", "release/1.2.3", "v1.0", "UPPER", "a-b_c", "ünïcode"}
	invalid := []string{"", "refs/heads/main", "refs/tags/v1", "refs/pull/1/head", "../x", "a..b", "a b", "-x", "x.lock", "x/", "/x", "a//b", "a@{b", "a~1", "a^", "a:b", "a?", "a*", "a[", "a\\b", ".hidden", "a/.b", "x.", "@", "tab\there", "nl\nx", string([]byte{0xff}), strings.Repeat("a", 256)}
	for _, r := range valid {
		if err := build.ValidateRef(r); err != nil {
			t.Errorf("ValidateRef(%q) = %v, want nil", r, err)
		}
	}
	for _, r := range invalid {
		if err := build.ValidateRef(r); !errors.Is(err, build.ErrInvalid) {
			t.Errorf("ValidateRef(%q) = %v, want ErrInvalid", r, err)
		}
	}
}

// A queue message from another producer may name a full ref: it is read
// as the webhook's ref is, so that "refs/heads/main" and "main" are one lock
// key.
func TestDecodeNormalizesRefs(t *testing.T) {
	t.Parallel()
	msg := func(ref, refType string) string {
		return `{"v":1,"team":"ae6rt","project":"p","ref":"` + ref + `","refType":"` + refType + `","trigger":"api","requestedAt":"2026-11-27T00:00:00Z"}`
	}
	tests := []struct {
		ref, refType string
		wantLockKey  string
		wantType     build.RefType
	}{
		{"main", "branch", "ae6rt/p/main", build.Branch},
		{"refs/heads/main", "branch", "ae6rt/p/main", build.Branch},
		{"refs/heads/feature/refs/x", "branch", "ae6rt/p/feature/refs/x", build.Branch},
		{"v1", "tag", "ae6rt/p/v1", build.Tag},
		{"refs/tags/v1", "tag", "ae6rt/p/v1", build.Tag},
	}
	for _, tt := range tests {
		r, err := build.Decode([]byte(msg(tt.ref, tt.refType)))
		if err != nil {
			t.Errorf("Decode(ref %q): %v", tt.ref, err)
			continue
		}
		if r.LockKey() != tt.wantLockKey || r.RefType != tt.wantType {
			t.Errorf("Decode(ref %q): lock key %q (%s), want %q (%s)", tt.ref, r.LockKey(), r.RefType, tt.wantLockKey, tt.wantType)
		}
	}
}

func TestNormalizeRef(t *testing.T) {
	t.Parallel()
	tests := []struct {
		ref      string
		typ      build.RefType
		wantRef  string
		wantType build.RefType
		wantErr  string
	}{
		{"main", "", "main", "", ""},
		{"main", build.Tag, "main", build.Tag, ""},
		{"refs/heads/main", "", "main", build.Branch, ""},
		{"refs/heads/main", build.Branch, "main", build.Branch, ""},
		{"refs/tags/v1", "", "v1", build.Tag, ""},
		{"refs/tags/v1", build.Branch, "", "", "refType"},
		{"refs/heads/x", build.Tag, "", "", "refType"},
		{"refs/pull/7/head", "", "", "", "neither a branch"},
		// Only the prefix goes; ValidateRef judges what is left.
		{"refs/heads/refs/heads/x", "", "refs/heads/x", build.Branch, ""},
	}
	for _, tt := range tests {
		ref, typ, err := build.NormalizeRef(tt.ref, tt.typ)
		if tt.wantErr != "" {
			if !errors.Is(err, build.ErrInvalid) || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("NormalizeRef(%q, %q) error = %v, want ErrInvalid containing %q", tt.ref, tt.typ, err, tt.wantErr)
			}
			continue
		}
		if err != nil || ref != tt.wantRef || typ != tt.wantType {
			t.Errorf("NormalizeRef(%q, %q) = %q, %q, %v; want %q, %q", tt.ref, tt.typ, ref, typ, err, tt.wantRef, tt.wantType)
		}
	}
}

func TestValidateName(t *testing.T) {
	t.Parallel()
	for _, n := range []string{"ae6rt", "Hello-World", "a.b_c", "x"} {
		if err := build.ValidateName("team", n); err != nil {
			t.Errorf("ValidateName(%q) = %v, want nil", n, err)
		}
	}
	for _, n := range []string{"", "..", ".git", "-x", "a/b", "a b", "a\x00", strings.Repeat("n", 101), "ä"} {
		if err := build.ValidateName("team", n); !errors.Is(err, build.ErrInvalid) {
			t.Errorf("ValidateName(%q) = %v, want ErrInvalid", n, err)
		}
	}
}

func TestNewID(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 11, 27, 3, 4, 5, 678_000_000, time.UTC)
	a, b := build.NewID(now), build.NewID(now.Add(time.Millisecond))
	if _, err := build.ParseID(string(a)); err != nil {
		t.Fatalf("ParseID(NewID) = %v", err)
	}
	if a[14] != '7' || !strings.ContainsRune("89ab", rune(a[19])) {
		t.Errorf("NewID = %s, want version 7 and RFC 9562 variant", a)
	}
	if !(a < b) {
		t.Errorf("IDs not time-ordered: %s then %s", a, b)
	}
	if got := a.Time(); !got.Equal(now) {
		t.Errorf("Time() = %v, want %v", got, now)
	}
	if a == build.NewID(now) {
		t.Errorf("two IDs at the same instant are equal")
	}
}

func TestStatusRank(t *testing.T) {
	t.Parallel()
	for _, s := range []build.Status{build.StatusQueued, build.StatusDeferred, build.StatusRunning} {
		if s.Final() {
			t.Errorf("%s.Final() = true", s)
		}
	}
	for _, s := range []build.Status{build.StatusSucceeded, build.StatusFailed, build.StatusTimedOut, build.StatusCancelled, build.StatusErrored, build.StatusExpired, build.StatusSkipped, build.StatusSuperseded} {
		if !s.Final() || !s.Valid() {
			t.Errorf("%s: Final()=%v Valid()=%v, want both true", s, s.Final(), s.Valid())
		}
	}
	if build.Status("bogus").Valid() {
		t.Errorf("bogus status is valid")
	}
}

func TestParseDescriptor(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		json    string
		wantErr string
		manages map[string]bool
	}{
		{name: "minimal", json: `{"buildImage":"debian:bookworm-slim"}`, manages: map[string]bool{"anything/at-all": true}},
		{name: "anchored regex", json: `{"buildImage":"golang:1.26","repoManager":"github","managedRefRegex":"master|release/.+"}`,
			manages: map[string]bool{"master": true, "master-old": false, "old-master": false, "release/1.0": true, "release/": false}},
		{name: "case kept", json: `{"buildImage":"x","managedRefRegex":"Main"}`, manages: map[string]bool{"Main": true, "main": false}},
		{name: "missing image", json: `{"repoManager":"github"}`, wantErr: "buildImage is required"},
		{name: "bad regex", json: `{"buildImage":"x","managedRefRegex":"(unclosed"}`, wantErr: "does not compile"},
		{name: "unknown manager", json: `{"buildImage":"x","repoManager":"svn"}`, wantErr: "repoManager"},
		{name: "typo field", json: `{"buildImage":"x","managedRefRegexp":"main"}`, wantErr: "unknown field"},
		{name: "not json", json: `buildImage: x`, wantErr: "project.json"},
		{name: "image with space", json: `{"buildImage":"x y"}`, wantErr: "image reference"},
		{name: "sidecar ok", json: `{"buildImage":"x","sidecars":[{"name":"db","image":"postgres:16","env":[{"name":"POSTGRES_PASSWORD","value":"x"}]}]}`},
		{name: "sidecar bad name", json: `{"buildImage":"x","sidecars":[{"name":"DB!","image":"postgres:16"}]}`, wantErr: "DNS label"},
		{name: "sidecar reserved", json: `{"buildImage":"x","sidecars":[{"name":"build","image":"postgres:16"}]}`, wantErr: "reserved"},
		{name: "sidecar twice", json: `{"buildImage":"x","sidecars":[{"name":"db","image":"a"},{"name":"db","image":"b"}]}`, wantErr: "repeated"},
		{name: "sidecar no image", json: `{"buildImage":"x","sidecars":[{"name":"db"}]}`, wantErr: "image"},
		{name: "timeout too long", json: `{"buildImage":"x","buildTimeoutSeconds":999999}`, wantErr: "buildTimeoutSeconds"},
		{name: "deeply nested", json: `{"buildImage":"x","sidecars":` + strings.Repeat("[", 10000) + strings.Repeat("]", 10000) + `}`, wantErr: "project.json"},
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
				t.Fatalf("ParseDescriptor: %v", err)
			}
			for ref, want := range tt.manages {
				if got := d.Manages(ref); got != want {
					t.Errorf("Manages(%q) = %v, want %v", ref, got, want)
				}
			}
		})
	}
}

func TestSplitLockKey(t *testing.T) {
	t.Parallel()
	team, project, ref, err := build.SplitLockKey("ae6rt/lab/feature/x")
	if err != nil || team != "ae6rt" || project != "lab" || ref != "feature/x" {
		t.Errorf("SplitLockKey = %q %q %q %v", team, project, ref, err)
	}
	if _, _, _, err := build.SplitLockKey("a/b"); !errors.Is(err, build.ErrInvalid) {
		t.Errorf("SplitLockKey(a/b) = %v, want ErrInvalid", err)
	}
}
