package dispatch_test

import (
	"context"
	"fmt"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/decap-ci/decap/internal/build"
	"github.com/decap-ci/decap/internal/buildtest"
	"github.com/decap-ci/decap/internal/dispatch"
)

// failingSecrets is a secret store that does not answer.
type failingSecrets struct{ calls int }

func (f *failingSecrets) Reveal(context.Context, string, string, []string) (map[string][]byte, error) {
	f.calls++
	return nil, fmt.Errorf("secrets manager: %w", build.ErrUnavailable)
}

// TestSecretsGranted: a build gets, in its job, the values of the secrets
// its project.json names and the project has (and no other project's, and
// none it does not name); its record names them, never their values, and
// says which were not set. A ref outside secretsRefRegex gets none, and
// the store is not even asked; a store that does not answer defers the
// request and launches nothing.
func TestSecretsGranted(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	store := buildtest.NewSecrets(nil)
	for _, s := range []struct{ team, project, name, value string }{
		{"decap-ci", "secret", "NPM_TOKEN", "npm-value"},
		{"decap-ci", "secret", "DEPLOY_KEY", "deploy-value"},
		{"decap-ci", "secret", "NOT_WANTED", "not-wanted-value"},
		{"decap-ci", "other", "MISSING", "another project's value"},
	} {
		if err := store.Put(ctx, s.team, s.project, s.name, []byte(s.value)); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name         string
		ref          string
		wantSecrets  []build.Secret
		wantNames    []string
		wantWithheld string
		wantAction   dispatch.Action
	}{
		{"main gets what it wants and has", "main",
			[]build.Secret{{Name: "DEPLOY_KEY", Value: []byte("deploy-value")}, {Name: "NPM_TOKEN", Value: []byte("npm-value")}},
			[]string{"DEPLOY_KEY", "NPM_TOKEN"}, "not set for decap-ci/secret: MISSING", dispatch.Launched},
		{"a ref outside secretsRefRegex gets none", "feature/x", nil, nil,
			`ref "feature/x" does not match secretsRefRegex "main|release/.*"`, dispatch.Launched},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(0, nil)
			f.catalog = buildtest.NewCatalog("c0ffee", map[string]string{
				"decap-ci/secret": `{"buildImage":"x","secrets":["NPM_TOKEN","DEPLOY_KEY","MISSING"],"secretsRefRegex":"main|release/.*"}`,
			})
			before := store.Reveals()
			d := dispatch.New(f.cfg, dispatch.Deps{Queue: f.queue, Catalog: f.catalog, Locks: f.locks, Idempotency: f.idem,
				Records: f.records, Launcher: f.launcher, Secrets: store})
			req := request("decap-ci/secret", tc.ref, build.TriggerPush, t0)
			dec := d.Decide(ctx, req, message(t, req))
			if dec.Action != tc.wantAction {
				t.Fatalf("Decide() = %+v, want %v", dec, tc.wantAction)
			}
			job, ok := f.launcher.Job(req.BuildID)
			if !ok {
				t.Fatal("no job launched")
			}
			if diff := cmp.Diff(tc.wantSecrets, job.Secrets); diff != "" {
				t.Errorf("job's secrets (-want +got):\n%s", diff)
			}
			rec := record(t, f, req.BuildID)
			if !slices.Equal(rec.Secrets, tc.wantNames) || rec.SecretsWithheld != tc.wantWithheld {
				t.Errorf("record's secrets = %q withheld %q, want %q withheld %q", rec.Secrets, rec.SecretsWithheld, tc.wantNames, tc.wantWithheld)
			}
			if tc.wantNames == nil && store.Reveals() != before {
				t.Errorf("the store was asked for values of a build that gets none")
			}
		})
	}

	t.Run("a store that does not answer defers", func(t *testing.T) {
		f := newFixture(0, nil)
		f.catalog = buildtest.NewCatalog("c0ffee", map[string]string{
			"decap-ci/secret": `{"buildImage":"x","secrets":["NPM_TOKEN"]}`,
		})
		failing := &failingSecrets{}
		d := dispatch.New(f.cfg, dispatch.Deps{Queue: f.queue, Catalog: f.catalog, Locks: f.locks, Idempotency: f.idem,
			Records: f.records, Launcher: f.launcher, Secrets: failing})
		req := request("decap-ci/secret", "main", build.TriggerPush, t0)
		dec := d.Decide(ctx, req, message(t, req))
		if dec.Action == dispatch.Launched || len(f.launcher.Launched()) != 0 || failing.calls != 1 {
			t.Errorf("Decide() with a store that fails = %+v, %d launched, %d calls; want a retry, nothing launched", dec, len(f.launcher.Launched()), failing.calls)
		}
		if leases, _ := f.locks.List(ctx); len(leases) != 0 {
			t.Errorf("locks held after the failed read: %v", leases)
		}
	})
}
