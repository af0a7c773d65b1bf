package buildtest

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/decap-ci/decap/internal/build"
)

// NewSecretsFunc returns a new, empty Secrets that reads time from clock
// (unless its features say the store keeps its own clock).
type NewSecretsFunc func(t *testing.T, clock *Clock) Secrets

// SecretsFeatures says what a Secrets store cannot do.
type SecretsFeatures struct {
	// ServerClock: update times come from the store's server (AWS), not
	// from the clock the test gives; they are only checked to move
	// forward.
	ServerClock bool
}

// TestSecrets runs the Secrets contract. Subtests run in parallel.
func TestSecrets(t *testing.T, newSecrets NewSecretsFunc, f SecretsFeatures) {
	for _, tc := range []struct {
		name string
		test func(*testing.T, NewSecretsFunc, SecretsFeatures)
	}{
		{"put, list and reveal", testSecretsRoundTrip},
		{"replace", testSecretsReplace},
		{"delete", testSecretsDelete},
		{"projects are apart", testSecretsProjectsApart},
		{"invalid input", testSecretsInvalid},
		{"concurrent puts of one name", testSecretsConcurrentPuts},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.test(t, newSecrets, f)
		})
	}
}

func putSecret(t *testing.T, s Secrets, team, project, name string, value []byte) {
	t.Helper()
	if err := s.Put(t.Context(), team, project, name, value); err != nil {
		t.Fatalf("Put(%s/%s/%s) error = %v", team, project, name, err)
	}
}

func listSecrets(t *testing.T, s Secrets, team, project string) []build.SecretInfo {
	t.Helper()
	got, err := s.List(t.Context(), team, project)
	if err != nil {
		t.Fatalf("List(%s/%s) error = %v", team, project, err)
	}
	return got
}

func revealSecrets(t *testing.T, s Secrets, team, project string, names ...string) map[string][]byte {
	t.Helper()
	got, err := s.Reveal(t.Context(), team, project, names)
	if err != nil {
		t.Fatalf("Reveal(%s/%s, %q) error = %v", team, project, names, err)
	}
	return got
}

// names returns the names of infos.
func secretNames(infos []build.SecretInfo) []string {
	out := []string{}
	for _, i := range infos {
		out = append(out, i.Name)
	}
	return out
}

// binaryValue is a value no text encoding survives: every byte value,
// NULs and invalid UTF-8 among them.
func binaryValue(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i * 7)
	}
	return b
}

func testSecretsRoundTrip(t *testing.T, newSecrets NewSecretsFunc, f SecretsFeatures) {
	clock := NewClock(time.Time{})
	s := newSecrets(t, clock)
	if got := listSecrets(t, s, "ae6rt", "lab"); len(got) != 0 {
		t.Errorf("List() of a project without secrets = %v, want none", got)
	}
	values := map[string][]byte{
		"NPM_TOKEN":     []byte("npm_0123456789abcdef"),
		"A":             []byte("x"),
		"DEPLOY_KEY":    []byte("-----BEGIN KEY-----\nline two\n-----END KEY-----\n"),
		"BINARY":        binaryValue(300),
		"LARGEST":       bytes.Repeat([]byte("z"), build.MaxSecretSize),
		"_UNDERSCORE_9": []byte(" spaces and ünïcode "),
	}
	order := []string{"NPM_TOKEN", "A", "DEPLOY_KEY", "BINARY", "LARGEST", "_UNDERSCORE_9"}
	start := time.Now()
	for _, name := range order {
		putSecret(t, s, "ae6rt", "lab", name, values[name])
		clock.Advance(time.Second)
	}
	got := listSecrets(t, s, "ae6rt", "lab")
	wantNames := []string{"A", "BINARY", "DEPLOY_KEY", "LARGEST", "NPM_TOKEN", "_UNDERSCORE_9"}
	if diff := cmp.Diff(wantNames, secretNames(got)); diff != "" {
		t.Fatalf("List() names (-want +got):\n%s", diff)
	}
	for _, info := range got {
		if info.Size != len(values[info.Name]) {
			t.Errorf("List(): %s has size %d, want %d", info.Name, info.Size, len(values[info.Name]))
		}
		if f.ServerClock {
			if info.UpdatedAt.IsZero() || info.UpdatedAt.Before(start.Add(-time.Hour)) {
				t.Errorf("List(): %s updated at %v, want about now", info.Name, info.UpdatedAt)
			}
			continue
		}
		i := 0
		for order[i] != info.Name {
			i++
		}
		if want := NewClock(time.Time{}).Now().Add(time.Duration(i) * time.Second); !info.UpdatedAt.Equal(want) {
			t.Errorf("List(): %s updated at %v, want %v", info.Name, info.UpdatedAt, want)
		}
	}
	all := revealSecrets(t, s, "ae6rt", "lab", order...)
	if diff := cmp.Diff(values, all); diff != "" {
		t.Errorf("Reveal() of every name (-want +got):\n%s", diff)
	}
	some := revealSecrets(t, s, "ae6rt", "lab", "A", "MISSING", "BINARY")
	if diff := cmp.Diff(map[string][]byte{"A": values["A"], "BINARY": values["BINARY"]}, some); diff != "" {
		t.Errorf("Reveal() of two names and a missing one (-want +got):\n%s", diff)
	}
	if none := revealSecrets(t, s, "ae6rt", "lab"); len(none) != 0 {
		t.Errorf("Reveal() of no names = %v, want nothing", none)
	}
	// What Reveal returns is the caller's: changing it changes nothing
	// stored.
	all["A"][0] = 'y'
	if again := revealSecrets(t, s, "ae6rt", "lab", "A"); string(again["A"]) != "x" {
		t.Errorf("Reveal() after the caller changed an earlier answer = %q, want %q", again["A"], "x")
	}
}

func testSecretsReplace(t *testing.T, newSecrets NewSecretsFunc, f SecretsFeatures) {
	clock := NewClock(time.Time{})
	s := newSecrets(t, clock)
	putSecret(t, s, "ae6rt", "lab", "TOKEN", []byte("a much longer first value"))
	first := listSecrets(t, s, "ae6rt", "lab")
	clock.Advance(time.Hour)
	if f.ServerClock {
		time.Sleep(1100 * time.Millisecond) // AWS's times are in seconds
	}
	putSecret(t, s, "ae6rt", "lab", "TOKEN", []byte("second"))
	got := listSecrets(t, s, "ae6rt", "lab")
	if len(got) != 1 || len(first) != 1 {
		t.Fatalf("List() after a replace = %v (before %v), want one secret", got, first)
	}
	if got[0].Size != len("second") {
		t.Errorf("size after a replace = %d, want %d", got[0].Size, len("second"))
	}
	if !got[0].UpdatedAt.After(first[0].UpdatedAt) {
		t.Errorf("updated at %v after a replace, want after the first write's %v", got[0].UpdatedAt, first[0].UpdatedAt)
	}
	if !f.ServerClock && !got[0].UpdatedAt.Equal(clock.Now()) {
		t.Errorf("updated at %v after a replace, want %v", got[0].UpdatedAt, clock.Now())
	}
	if v := revealSecrets(t, s, "ae6rt", "lab", "TOKEN"); string(v["TOKEN"]) != "second" {
		t.Errorf("Reveal() after a replace = %q, want %q", v["TOKEN"], "second")
	}
}

func testSecretsDelete(t *testing.T, newSecrets NewSecretsFunc, _ SecretsFeatures) {
	s := newSecrets(t, NewClock(time.Time{}))
	putSecret(t, s, "ae6rt", "lab", "KEEP", []byte("kept"))
	putSecret(t, s, "ae6rt", "lab", "GONE", []byte("gone"))
	if err := s.Delete(t.Context(), "ae6rt", "lab", "GONE"); err != nil {
		t.Fatalf("Delete() error = %v", err)
	}
	if got := secretNames(listSecrets(t, s, "ae6rt", "lab")); !cmp.Equal(got, []string{"KEEP"}) {
		t.Errorf("List() after a delete = %q, want [KEEP]", got)
	}
	if got := revealSecrets(t, s, "ae6rt", "lab", "GONE", "KEEP"); len(got) != 1 || string(got["KEEP"]) != "kept" {
		t.Errorf("Reveal() after a delete = %q, want KEEP alone", secretKeys(got))
	}
	for _, name := range []string{"GONE", "NEVER"} {
		if err := s.Delete(t.Context(), "ae6rt", "lab", name); !errors.Is(err, build.ErrNotFound) {
			t.Errorf("Delete(%s) of no secret error = %v, want ErrNotFound", name, err)
		}
	}
	// A deleted name can be written again at once (AWS keeps a deleted
	// secret's name for days unless it is deleted without recovery).
	putSecret(t, s, "ae6rt", "lab", "GONE", []byte("back"))
	if got := revealSecrets(t, s, "ae6rt", "lab", "GONE"); string(got["GONE"]) != "back" {
		t.Errorf("Reveal() of a secret written again after its delete = %q, want %q", got["GONE"], "back")
	}
}

func secretKeys(m map[string][]byte) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// testSecretsProjectsApart: a secret belongs to one team/project; names
// that share a prefix, differ only in case or would join to the same
// path are other projects.
func testSecretsProjectsApart(t *testing.T, newSecrets NewSecretsFunc, _ SecretsFeatures) {
	s := newSecrets(t, NewClock(time.Time{}))
	projects := [][2]string{
		{"ae6rt", "lab"}, {"ae6rt", "lab2"}, {"ae6rt", "la"}, {"AE6RT", "lab"}, {"ae6rt", "Lab"},
		{"ae6rt-lab", "x"}, {"ae6rt", "lab-x"}, {"other", "lab"},
	}
	for _, p := range projects {
		putSecret(t, s, p[0], p[1], "TOKEN", []byte("token of "+p[0]+"/"+p[1]))
	}
	putSecret(t, s, "ae6rt", "lab", "ONLY_LAB", []byte("lab's alone"))
	for _, p := range projects {
		got := listSecrets(t, s, p[0], p[1])
		want := []string{"TOKEN"}
		if p == [2]string{"ae6rt", "lab"} {
			want = []string{"ONLY_LAB", "TOKEN"}
		}
		if diff := cmp.Diff(want, secretNames(got)); diff != "" {
			t.Errorf("List(%s/%s) (-want +got):\n%s", p[0], p[1], diff)
		}
		v := revealSecrets(t, s, p[0], p[1], "TOKEN", "ONLY_LAB")
		if string(v["TOKEN"]) != "token of "+p[0]+"/"+p[1] {
			t.Errorf("Reveal(%s/%s, TOKEN) = %q, want its own", p[0], p[1], v["TOKEN"])
		}
		if _, ok := v["ONLY_LAB"]; ok != (p == [2]string{"ae6rt", "lab"}) {
			t.Errorf("Reveal(%s/%s, ONLY_LAB) found %t", p[0], p[1], ok)
		}
	}
	if err := s.Delete(t.Context(), "ae6rt", "lab2", "ONLY_LAB"); !errors.Is(err, build.ErrNotFound) {
		t.Errorf("Delete() of another project's secret error = %v, want ErrNotFound", err)
	}
	if err := s.Delete(t.Context(), "AE6RT", "lab", "TOKEN"); err != nil {
		t.Fatalf("Delete() error = %v", err)
	}
	if v := revealSecrets(t, s, "ae6rt", "lab", "TOKEN"); string(v["TOKEN"]) != "token of ae6rt/lab" {
		t.Errorf("Reveal(ae6rt/lab) after AE6RT/lab's delete = %q, want its own", v["TOKEN"])
	}
}

func testSecretsInvalid(t *testing.T, newSecrets NewSecretsFunc, _ SecretsFeatures) {
	s := newSecrets(t, NewClock(time.Time{}))
	putSecret(t, s, "ae6rt", "lab", "TOKEN", []byte("kept"))
	for _, tc := range []struct {
		name               string
		team, project, key string
		value              []byte
	}{
		{"lower-case name", "ae6rt", "lab", "token", []byte("v")},
		{"empty name", "ae6rt", "lab", "", []byte("v")},
		{"name with a slash", "ae6rt", "lab", "A/B", []byte("v")},
		{"name with dots", "ae6rt", "lab", "..", []byte("v")},
		{"name starting with a digit", "ae6rt", "lab", "1TOKEN", []byte("v")},
		{"name with a hyphen", "ae6rt", "lab", "NPM-TOKEN", []byte("v")},
		{"name too long", "ae6rt", "lab", strings.Repeat("A", build.MaxSecretNameLen+1), []byte("v")},
		{"team ..", "..", "lab", "TOKEN", []byte("v")},
		{"team with a slash", "ae6rt/lab", "x", "TOKEN", []byte("v")},
		{"empty project", "ae6rt", "", "TOKEN", []byte("v")},
		{"empty value", "ae6rt", "lab", "EMPTY", nil},
		{"value too large", "ae6rt", "lab", "HUGE", make([]byte, build.MaxSecretSize+1)},
	} {
		if err := s.Put(t.Context(), tc.team, tc.project, tc.key, tc.value); !errors.Is(err, build.ErrInvalid) {
			t.Errorf("Put() of a %s error = %v, want ErrInvalid", tc.name, err)
		}
		if tc.value != nil && len(tc.value) <= build.MaxSecretSize {
			if _, err := s.Reveal(t.Context(), tc.team, tc.project, []string{tc.key}); !errors.Is(err, build.ErrInvalid) {
				t.Errorf("Reveal() of a %s error = %v, want ErrInvalid", tc.name, err)
			}
			if err := s.Delete(t.Context(), tc.team, tc.project, tc.key); !errors.Is(err, build.ErrInvalid) {
				t.Errorf("Delete() of a %s error = %v, want ErrInvalid", tc.name, err)
			}
		}
	}
	if _, err := s.List(t.Context(), "..", "lab"); !errors.Is(err, build.ErrInvalid) {
		t.Errorf("List() of team .. error = %v, want ErrInvalid", err)
	}
	if got := secretNames(listSecrets(t, s, "ae6rt", "lab")); !cmp.Equal(got, []string{"TOKEN"}) {
		t.Errorf("List() after refused writes = %q, want [TOKEN]", got)
	}
	if v := revealSecrets(t, s, "ae6rt", "lab", "TOKEN"); string(v["TOKEN"]) != "kept" {
		t.Errorf("Reveal() after refused writes = %q, want %q", v["TOKEN"], "kept")
	}
}

func testSecretsConcurrentPuts(t *testing.T, newSecrets NewSecretsFunc, _ SecretsFeatures) {
	s := newSecrets(t, NewClock(time.Time{}))
	const writers = 4
	var wg sync.WaitGroup
	errs := make([]error, writers)
	for i := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = s.Put(t.Context(), "ae6rt", "lab", "RACED", fmt.Appendf(nil, "value %d", i))
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("Put() %d error = %v", i, err)
		}
	}
	got := listSecrets(t, s, "ae6rt", "lab")
	if len(got) != 1 || got[0].Name != "RACED" {
		t.Fatalf("List() after concurrent puts = %v, want RACED once", got)
	}
	v := revealSecrets(t, s, "ae6rt", "lab", "RACED")
	if !strings.HasPrefix(string(v["RACED"]), "value ") || got[0].Size != len(v["RACED"]) {
		t.Errorf("after concurrent puts: value %q, size %d; want one writer's value and its size", v["RACED"], got[0].Size)
	}
}
