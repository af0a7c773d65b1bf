package ingest_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/decap-ci/decap/internal/api"
	"github.com/decap-ci/decap/internal/build"
	"github.com/decap-ci/decap/internal/buildtest"
	"github.com/decap-ci/decap/internal/ingest"
	"github.com/decap-ci/decap/internal/webhooks"
)

const subscriptionSecret = "whsec-Very-Secret-0451-abcdef"

func newSubscriptionsFixture(t *testing.T) (*fixture, *buildtest.FakeWebhooks) {
	t.Helper()
	store := buildtest.NewWebhooks(buildtest.NewClock(time.Time{}).Now)
	f := newFixtureDeps(t, func(c *ingest.Config) { c.ReadPublic = true }, func(d *ingest.Deps) {
		d.Webhooks = store
		d.WebhookURLs = webhooks.Policy{Allow: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}}
	})
	return f, store
}

func jsonRequest(method, path, tok, body string) *http.Request {
	r := httptest.NewRequest(method, path, strings.NewReader(body))
	r.Header.Set("Content-Type", "application/json")
	if tok != "" {
		r.Header.Set("Authorization", "Bearer "+tok)
	}
	return r
}

// TestSubscriptionsAPI creates, lists, inspects and deletes outgoing
// webhooks: every route needs the token even where reads are public; the
// secret never comes back, in no answer and no log line; URLs the policy
// refuses (not https, link-local, metadata, private) are refused.
func TestSubscriptionsAPI(t *testing.T) {
	t.Parallel()
	f, store := newSubscriptionsFixture(t)
	good := `{"url":"https://hooks.example.com/decap?token=t0k","secret":"` + subscriptionSecret + `","types":["io.decap.build.succeeded"],"team":"decap-ci"}`
	var answers bytes.Buffer
	for _, st := range []struct {
		name, method, path, tok, body string
		wantStatus                    int
		wantBody                      string
	}{
		{"list without a token, reads public", "GET", "/api/v1/subscriptions", "", "", 401, ""},
		{"create without a token", "POST", "/api/v1/subscriptions", "", good, 401, ""},
		{"create", "POST", "/api/v1/subscriptions", token, good, 201, `"types":["io.decap.build.succeeded"],"team":"decap-ci"`},
		{"create http", "POST", "/api/v1/subscriptions", token, strings.Replace(good, "https:", "http:", 1), 400, "not https"},
		{"create to the metadata endpoint", "POST", "/api/v1/subscriptions", token, strings.Replace(good, "hooks.example.com", "169.254.169.254", 1), 400, "link-local"},
		{"create to ec2's v6 metadata", "POST", "/api/v1/subscriptions", token, strings.Replace(good, "hooks.example.com", "[fd00:ec2::254]", 1), 400, "refused"},
		{"create to loopback", "POST", "/api/v1/subscriptions", token, strings.Replace(good, "hooks.example.com", "localhost", 1), 400, "not a public address"},
		{"create to a private network", "POST", "/api/v1/subscriptions", token, strings.Replace(good, "hooks.example.com", "10.0.0.7", 1), 400, "not a public address"},
		{"create with a user in the URL", "POST", "/api/v1/subscriptions", token, strings.Replace(good, "hooks.example.com", "u:p@hooks.example.com", 1), 400, "user or password"},
		{"create with a short secret", "POST", "/api/v1/subscriptions", token, strings.Replace(good, subscriptionSecret, "short", 1), 400, "secret"},
		{"create with an unknown type", "POST", "/api/v1/subscriptions", token, strings.Replace(good, "succeeded", "exploded", 1), 400, "io.decap.build.exploded"},
		{"create with an unknown field", "POST", "/api/v1/subscriptions", token, `{"url":"https://x.example.com/","secret":"` + subscriptionSecret + `","admin":true}`, 400, "unknown field"},
		{"create with trailing data", "POST", "/api/v1/subscriptions", token, good + `{}`, 400, "after the JSON"},
		{"list", "GET", "/api/v1/subscriptions", token, "", 200, `"url":"https://hooks.example.com/decap?token=t0k"`},
		{"delete a malformed id", "DELETE", "/api/v1/subscriptions/..%2F..", token, "", 404, ""},
		{"delete an unknown id", "DELETE", "/api/v1/subscriptions/sub-000000000000000000000000", token, "", 404, ""},
		{"deliveries of an unknown id", "GET", "/api/v1/subscriptions/sub-000000000000000000000000/deliveries", token, "", 404, ""},
	} {
		w := f.do(jsonRequest(st.method, st.path, st.tok, st.body))
		answers.Write(w.Body.Bytes())
		if w.Code != st.wantStatus || !strings.Contains(w.Body.String(), st.wantBody) {
			t.Errorf("%s: got %d %.300s, want %d with %q", st.name, w.Code, w.Body, st.wantStatus, st.wantBody)
		}
	}
	subs, _ := store.Subscriptions(t.Context())
	if len(subs) != 1 || subs[0].Secret != subscriptionSecret || subs[0].Team != "decap-ci" {
		t.Fatalf("store holds %+v, want the one subscription with its secret", subs)
	}
	id := subs[0].ID
	// A delivery that failed for good shows as a dead letter with its reason.
	if err := store.Enqueue(t.Context(), 10, build.Delivery{Subscription: id, EventID: "b:1", EventType: build.EventSucceeded, BuildID: "b", Body: []byte("{}")}); err != nil {
		t.Fatal(err)
	}
	d, _, _ := store.Claim(t.Context(), id, 0)
	d.State, d.Attempts, d.LastError = build.DeliveryDead, 5, "HTTP 503: down for maintenance"
	if err := store.Settle(t.Context(), d); err != nil {
		t.Fatal(err)
	}
	w := f.do(jsonRequest("GET", "/api/v1/subscriptions/"+id+"/deliveries", token, ""))
	answers.Write(w.Body.Bytes())
	var got api.Deliveries
	if err := json.Unmarshal(w.Body.Bytes(), &got); err != nil || w.Code != 200 || len(got.Deliveries) != 1 ||
		got.Deliveries[0].State != build.DeliveryDead || got.Deliveries[0].LastError != "HTTP 503: down for maintenance" || got.Deliveries[0].Attempts != 5 {
		t.Errorf("deliveries = %d %s, want the dead letter with its reason", w.Code, w.Body)
	}
	if w := f.do(jsonRequest("GET", "/api/v1/subscriptions/"+id+"/deliveries?limit=1000", token, "")); w.Code != 400 {
		t.Errorf("deliveries?limit=1000 = %d, want 400", w.Code)
	}
	if w := f.do(jsonRequest("DELETE", "/api/v1/subscriptions/"+id, token, "")); w.Code != 200 || !strings.Contains(w.Body.String(), `"deleted":true`) {
		t.Errorf("delete = %d %s", w.Code, w.Body)
	}
	if subs, _ := store.Subscriptions(t.Context()); len(subs) != 0 {
		t.Errorf("after delete the store holds %d subscriptions", len(subs))
	}
	for where, data := range map[string]string{"an answer": answers.String(), "the log": f.logs.String()} {
		if strings.Contains(data, subscriptionSecret) || strings.Contains(data, "whsec") {
			t.Errorf("%s holds the subscription's secret", where)
		}
	}
	if strings.Contains(f.logs.String(), "t0k") {
		t.Error("the log holds the URL's query (it may be a credential)")
	}
}

// TestSubscriptionsAPIWithoutStore: an ingest without webhooks says so.
func TestSubscriptionsAPIWithoutStore(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil)
	if w := f.do(jsonRequest("GET", "/api/v1/subscriptions", token, "")); w.Code != http.StatusNotImplemented {
		t.Errorf("GET without a store: got %d %s, want 501", w.Code, w.Body)
	}
}
