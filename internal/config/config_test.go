package config_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/decap-ci/decap/internal/config"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestLoadDefaults(t *testing.T) {
	t.Parallel()
	c, err := config.Load(env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if c.IngestAddr != "127.0.0.1:8080" || c.Backend != "embedded" || c.Cap != 4 || c.CatalogRefresh != 30*time.Second || c.AuthDisabled {
		t.Errorf("defaults: got %+v", c)
	}
	if c.DispatchWorkers != config.DefaultEmbeddedWorkers {
		t.Errorf("DispatchWorkers = %d on the embedded store, want %d", c.DispatchWorkers, config.DefaultEmbeddedWorkers)
	}
	for _, tt := range []struct {
		env  map[string]string
		want int
	}{
		{map[string]string{"DECAP_BACKEND": "aws"}, config.DefaultAWSWorkers},
		{map[string]string{"DECAP_BACKEND": "aws", "DECAP_DISPATCH_WORKERS": "64"}, 64},
		{map[string]string{"DECAP_DISPATCH_WORKERS": "8"}, 8},
	} {
		if c, err := config.Load(env(tt.env)); err != nil || c.DispatchWorkers != tt.want {
			t.Errorf("%v: DispatchWorkers %d (%v), want %d", tt.env, c.DispatchWorkers, err, tt.want)
		}
	}
	if c.ReadPublic || c.SessionTTL != 12*time.Hour {
		t.Errorf("read auth defaults: ReadPublic %v, SessionTTL %v; want reads behind the token, 12h sessions", c.ReadPublic, c.SessionTTL)
	}
	c, err = config.Load(env(map[string]string{"DECAP_READ_AUTH": "Public", "DECAP_SESSION_TTL": "30m"}))
	if err != nil || !c.ReadPublic || c.SessionTTL != 30*time.Minute {
		t.Errorf("DECAP_READ_AUTH=Public, DECAP_SESSION_TTL=30m: got %v, %v, %v", c.ReadPublic, c.SessionTTL, err)
	}
	if !c.PublicBadges {
		t.Errorf("DECAP_READ_AUTH=public: badges not public")
	}
	for _, tt := range []struct {
		env  map[string]string
		want bool
	}{
		{nil, false},
		{map[string]string{"DECAP_BADGES": "public"}, true},
		{map[string]string{"DECAP_READ_AUTH": "public", "DECAP_BADGES": "auth"}, false},
	} {
		if c, err := config.Load(env(tt.env)); err != nil || c.PublicBadges != tt.want {
			t.Errorf("%v: PublicBadges %v (%v), want %v", tt.env, c.PublicBadges, err, tt.want)
		}
	}
	if _, err := config.Load(env(map[string]string{"DECAP_BADGES": "yes"})); err == nil || !strings.Contains(err.Error(), "DECAP_BADGES") {
		t.Errorf("DECAP_BADGES=yes: err %v, want one naming DECAP_BADGES", err)
	}
	if !filepath.IsAbs(c.DataDir) {
		t.Errorf("DataDir = %q, want absolute", c.DataDir)
	}
}

func TestLoadKubernetes(t *testing.T) {
	t.Parallel()
	c, err := config.Load(env(map[string]string{
		"DECAP_EXECUTOR": "kubernetes", "DECAP_KUBECONFIG": "/etc/decap/kubeconfig", "DECAP_KUBE_QPS": "20",
		"DECAP_KUBE_BURST": "40", "DECAP_POD_PENDING_TIMEOUT": "90s", "DECAP_BUILD_MEMORY_LIMIT": "8Gi",
	}))
	if err != nil {
		t.Fatal(err)
	}
	want := config.Kube{Kubeconfig: "/etc/decap/kubeconfig", Namespace: "decap", QPS: 20, Burst: 40,
		EntrypointImage: "ghcr.io/decap-ci/decap-build:latest", PendingTimeout: 90 * time.Second,
		CPURequest: "500m", MemoryRequest: "1Gi", MemoryLimit: "8Gi"}
	if c.Executor != "kubernetes" || c.Kube != want {
		t.Errorf("kubernetes settings: got %s %+v, want %+v", c.Executor, c.Kube, want)
	}
}

func TestLoadSecretsFromFile(t *testing.T) {
	t.Parallel()
	f := filepath.Join(t.TempDir(), "secret")
	const fromFile, token = "s3cr3t-value-from-a-file-8d1f0c7b5a3e", "tok-0f8e2d4c6b9a1735e2c4a6b8d0f13579"
	if err := os.WriteFile(f, []byte(fromFile+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := config.Load(env(map[string]string{"DECAP_GITHUB_WEBHOOK_SECRET_FILE": f, "DECAP_API_TOKEN": token}))
	if err != nil {
		t.Fatal(err)
	}
	if string(c.WebhookSecret) != fromFile || c.APIToken != token {
		t.Errorf("secrets: got %q and %q", c.WebhookSecret, c.APIToken)
	}
}

func TestLoadErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		env  map[string]string
		want string
	}{
		{"bad duration", map[string]string{"DECAP_CATALOG_REFRESH": "often"}, "DECAP_CATALOG_REFRESH"},
		{"negative cap", map[string]string{"DECAP_MAX_RUNNING_BUILDS": "-1"}, "DECAP_MAX_RUNNING_BUILDS"},
		{"bad auth", map[string]string{"DECAP_AUTH": "maybe"}, "DECAP_AUTH"},
		{"bad read auth", map[string]string{"DECAP_READ_AUTH": "anyone"}, "DECAP_READ_AUTH"},
		{"bad session ttl", map[string]string{"DECAP_SESSION_TTL": "-1h"}, "DECAP_SESSION_TTL"},
		{"unknown backend", map[string]string{"DECAP_BACKEND": "etcd"}, "DECAP_BACKEND"},
		{"bad prefix", map[string]string{"DECAP_PREFIX": "Bad_Prefix!"}, "DECAP_PREFIX"},
		{"both secret forms", map[string]string{"DECAP_API_TOKEN": "hunter2", "DECAP_API_TOKEN_FILE": "/x"}, "not both"},
		{"missing secret file", map[string]string{"DECAP_API_TOKEN_FILE": "/nonexistent/hunter2"}, "DECAP_API_TOKEN_FILE"},
		{"unknown executor", map[string]string{"DECAP_EXECUTOR": "nomad"}, "DECAP_EXECUTOR"},
		{"bad namespace", map[string]string{"DECAP_EXECUTOR": "kubernetes", "DECAP_KUBE_NAMESPACE": "Decap_Builds"}, "DECAP_KUBE_NAMESPACE"},
		{"zero qps", map[string]string{"DECAP_KUBE_QPS": "0"}, "DECAP_KUBE_QPS"},
		{"bad pending timeout", map[string]string{"DECAP_POD_PENDING_TIMEOUT": "soon"}, "DECAP_POD_PENDING_TIMEOUT"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := config.Load(env(tt.env))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Load: got %v, want error naming %s", err, tt.want)
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Errorf("error %q leaks a secret", err)
			}
		})
	}
}

func TestLoadMaxInfraRetries(t *testing.T) {
	t.Parallel()
	for v, want := range map[string]int{"": 3, "0": 0, "2": 2, "10": 10} {
		c, err := config.Load(env(map[string]string{"DECAP_MAX_INFRA_RETRIES": v}))
		if err != nil || c.MaxInfraRetries != want {
			t.Errorf("DECAP_MAX_INFRA_RETRIES=%q: got %d, %v; want %d", v, c.MaxInfraRetries, err, want)
		}
	}
	for _, v := range []string{"-1", "11", "two"} {
		if _, err := config.Load(env(map[string]string{"DECAP_MAX_INFRA_RETRIES": v})); err == nil || !strings.Contains(err.Error(), "DECAP_MAX_INFRA_RETRIES") {
			t.Errorf("DECAP_MAX_INFRA_RETRIES=%q: error %v, want one naming the variable", v, err)
		}
	}
}
