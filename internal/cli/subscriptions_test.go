package cli_test

import (
	"bytes"
	"context"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/decap-ci/decap/internal/build"
	"github.com/decap-ci/decap/internal/buildtest"
	"github.com/decap-ci/decap/internal/cli"
	"github.com/decap-ci/decap/internal/ingest"
	"github.com/decap-ci/decap/internal/webhooks"
)

// TestSubscriptionsCommands adds, lists, inspects and removes an outgoing
// webhook through a real ingest: the secret goes in from stdin, reaches
// the store, and no output shows it.
func TestSubscriptionsCommands(t *testing.T) {
	t.Parallel()
	store := buildtest.NewWebhooks(time.Now)
	srv := httptest.NewServer(ingest.New(ingest.Config{WebhookSecret: []byte(secret), APIToken: token}, ingest.Deps{
		Catalog:  buildtest.NewCatalog("c0ffee", map[string]string{"decap-ci/hello": `{"buildImage":"x"}`}),
		Webhooks: store, WebhookURLs: webhooks.Policy{Allow: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}}, Now: time.Now,
	}))
	t.Cleanup(srv.Close)
	env := map[string]string{"DECAP_URL": srv.URL, "DECAP_TOKEN": token, "HOME": t.TempDir()}
	run := func(stdin string, args ...string) (string, string, int) {
		var out, errOut bytes.Buffer
		err := cli.RunIO(context.Background(), args, func(k string) string { return env[k] }, strings.NewReader(stdin), &out, &errOut)
		if err != nil {
			errOut.WriteString(err.Error())
		}
		return out.String(), errOut.String(), cli.ExitCode(err)
	}
	const hookSecret = "cli-Hook-Secret-0123456789\n"
	var outputs strings.Builder
	step := func(name, stdin string, wantCode int, wantOut string, args ...string) string {
		out, errOut, code := run(stdin, args...)
		outputs.WriteString(out + errOut)
		if code != wantCode || !strings.Contains(out+errOut, wantOut) {
			t.Errorf("%s: exit %d, out %q, err %q; want exit %d with %q", name, code, out, errOut, wantCode, wantOut)
		}
		return out
	}
	step("list none", "", 0, "no subscriptions", "subscriptions", "list")
	step("add", hookSecret, 0, "added", "subscriptions", "add", "https://hooks.example.com/decap", "--type", "succeeded", "--type", "io.decap.build.failed", "--of", "decap-ci/hello")
	step("add a bad type", hookSecret, 2, "--type", "subscriptions", "add", "https://hooks.example.com/decap", "--type", "exploded")
	step("add without a secret", "", 2, "no value on stdin", "subscriptions", "add", "https://hooks.example.com/decap")
	step("add to the metadata endpoint", hookSecret, 1, "link-local", "subscriptions", "add", "https://169.254.169.254/")
	step("list", "", 0, "succeeded,failed", "subscriptions", "list")
	subs, _ := store.Subscriptions(t.Context())
	if len(subs) != 1 || subs[0].Secret != strings.TrimSpace(hookSecret) || subs[0].Team != "decap-ci" || subs[0].Project != "hello" ||
		len(subs[0].Types) != 2 || subs[0].Types[1] != build.EventFailed {
		t.Fatalf("store holds %+v, want the subscription as added", subs)
	}
	id := subs[0].ID
	step("deliveries, none", "", 0, "no deliveries", "subscriptions", "deliveries", id)
	step("deliveries of an unknown one", "", 3, "no subscription", "subscriptions", "deliveries", "sub-000000000000000000000000")
	step("rm", "", 0, "removed", "subscriptions", "rm", id)
	step("rm again", "", 3, "no subscription", "subscriptions", "rm", id)
	if strings.Contains(outputs.String(), "cli-Hook-Secret") {
		t.Error("decapctl printed the subscription's secret")
	}
}
