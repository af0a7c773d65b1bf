package ingest_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/decap-ci/decap/internal/build"
	"github.com/decap-ci/decap/internal/buildtest"
	"github.com/decap-ci/decap/internal/ingest"
)

const secretsPath = "/api/v1/projects/decap-ci/hello/secrets"

func newSecretsFixture(t *testing.T) (*fixture, *buildtest.FakeSecrets) {
	t.Helper()
	store := buildtest.NewSecrets(nil)
	f := newFixtureDeps(t, nil, func(d *ingest.Deps) { d.Secrets = store })
	return f, store
}

func secretRequest(method, path, tok string, body []byte) *http.Request {
	r := httptest.NewRequest(method, path, bytes.NewReader(body))
	r.Header.Set("Content-Type", "application/octet-stream")
	if tok != "" {
		r.Header.Set("Authorization", "Bearer "+tok)
	}
	return r
}

// TestSecretsAPI writes, lists and deletes secrets: values go in as the
// raw body and never come out, in no answer and no log line; writes need
// the token, the list read access; bad names, values and projects are
// refused.
func TestSecretsAPI(t *testing.T) {
	t.Parallel()
	f, store := newSecretsFixture(t)
	value := []byte("npm_Secret-Value-7f3a\x00binary\n")
	largest := bytes.Repeat([]byte("L"), build.MaxSecretSize)
	steps := []struct {
		name       string
		method     string
		path       string
		tok        string
		body       []byte
		wantStatus int
		wantBody   string
	}{
		{"put without a token", "PUT", secretsPath + "/NPM_TOKEN", "", value, 401, ""},
		{"put with a wrong token", "PUT", secretsPath + "/NPM_TOKEN", "not-the-token", value, 401, ""},
		{"put", "PUT", secretsPath + "/NPM_TOKEN", token, value, 200, `{"name":"NPM_TOKEN","size":29}`},
		{"put the largest value", "PUT", secretsPath + "/LARGEST", token, largest, 200, `"size":65536`},
		{"put a value a byte too large", "PUT", secretsPath + "/HUGE", token, append(largest, 'x'), 413, ""},
		{"put an empty value", "PUT", secretsPath + "/EMPTY", token, nil, 400, "secret value is empty"},
		{"put a lower-case name", "PUT", secretsPath + "/npm_token", token, value, 400, "upper-case"},
		{"put a name with a dot", "PUT", secretsPath + "/A.B", token, value, 400, "upper-case"},
		{"put to a project not in the catalog", "PUT", "/api/v1/projects/decap-ci/nowhere/secrets/X_TOKEN", token, value, 404, "not in the build-scripts repository"},
		{"put to a hostile team", "PUT", "/api/v1/projects/..%2F..%2Fetc/hello/secrets/X_TOKEN", token, value, 400, ""},
		{"put to a project whose project.json is invalid", "PUT", "/api/v1/projects/decap-ci/broken/secrets/FIX_ME", token, []byte("v-for-broken"), 200, ""},
		{"list without a token", "GET", secretsPath, "", nil, 401, ""},
		{"list", "GET", secretsPath, token, nil, 200, `"name":"LARGEST","size":65536`},
		{"get of one secret is no route", "GET", secretsPath + "/NPM_TOKEN", token, nil, 405, ""},
		{"delete without a token", "DELETE", secretsPath + "/NPM_TOKEN", "", nil, 401, ""},
		{"delete", "DELETE", secretsPath + "/NPM_TOKEN", token, nil, 200, `{"name":"NPM_TOKEN","deleted":true}`},
		{"delete again", "DELETE", secretsPath + "/NPM_TOKEN", token, nil, 404, ""},
	}
	var answers bytes.Buffer
	for _, st := range steps {
		w := f.do(secretRequest(st.method, st.path, st.tok, st.body))
		answers.Write(w.Body.Bytes())
		for k, v := range w.Header() {
			answers.WriteString(k + ": " + strings.Join(v, ",") + "\n")
		}
		if w.Code != st.wantStatus || !strings.Contains(w.Body.String(), st.wantBody) {
			t.Errorf("%s: got %d %.300s, want %d with %q", st.name, w.Code, w.Body, st.wantStatus, st.wantBody)
		}
	}
	for where, data := range map[string][]byte{"an answer": answers.Bytes(), "the log": []byte(f.logs.String())} {
		for _, form := range []string{"npm_Secret-Value-7f3a", base64.StdEncoding.EncodeToString(value)[:16], strings.Repeat("L", 64)} {
			if bytes.Contains(data, []byte(form)) {
				t.Errorf("%s holds a secret's value (%q)", where, form)
			}
		}
	}
	w := f.do(secretRequest("GET", secretsPath, token, nil))
	var list struct {
		Secrets []struct {
			Name      string `json:"name"`
			Size      int    `json:"size"`
			UpdatedAt string `json:"updatedAt"`
		} `json:"secrets"`
	}
	if err := json.Unmarshal(w.Body.Bytes(), &list); err != nil || len(list.Secrets) != 1 || list.Secrets[0].Name != "LARGEST" || list.Secrets[0].UpdatedAt == "" {
		t.Errorf("list after the delete = %s, %v; want LARGEST alone, with its time", w.Body, err)
	}
	if store.Reveals() != 0 {
		t.Errorf("ingest read secret values %d times, want never", store.Reveals())
	}
	if v, _ := store.Reveal(t.Context(), "decap-ci", "broken", []string{"FIX_ME"}); string(v["FIX_ME"]) != "v-for-broken" {
		t.Errorf("stored value = %q", v["FIX_ME"])
	}
}

// TestSecretsAPIWithoutStore: an ingest without a secret store says so.
func TestSecretsAPIWithoutStore(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil)
	if w := f.do(secretRequest("PUT", secretsPath+"/NPM_TOKEN", token, []byte("v"))); w.Code != http.StatusNotImplemented {
		t.Errorf("PUT without a store: got %d %s, want 501", w.Code, w.Body)
	}
}

// TestSecretsPerProjectBound: a project holds at most MaxProjectSecrets;
// replacing one of them is still allowed.
func TestSecretsPerProjectBound(t *testing.T) {
	t.Parallel()
	f, store := newSecretsFixture(t)
	for i := range build.MaxProjectSecrets {
		if err := store.Put(t.Context(), "decap-ci", "hello", "S"+strings.Repeat("A", i+1), []byte("v")); err != nil {
			t.Fatal(err)
		}
	}
	if w := f.do(secretRequest("PUT", secretsPath+"/ONE_MORE", token, []byte("v"))); w.Code != 400 {
		t.Errorf("PUT of one secret too many: got %d %s, want 400", w.Code, w.Body)
	}
	if w := f.do(secretRequest("PUT", secretsPath+"/SA", token, []byte("w"))); w.Code != 200 {
		t.Errorf("PUT replacing a secret at the bound: got %d %s, want 200", w.Code, w.Body)
	}
}
