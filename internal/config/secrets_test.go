package config_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/decap-ci/decap/internal/config"
)

// goodSecret is what `openssl rand -hex 32` prints.
const goodSecret = "9f2c4e7a1b3d5f608e9a7c2b4d6f1e3a5c7b9d0f2e4a6c8b1d3f5e7a9c0b2d4f"

// TestLoadRefusesWeakSecrets checks that a service will not start with a
// placeholder, short or low-entropy API token or webhook secret: the error
// names the variable and never contains the value.
func TestLoadRefusesWeakSecrets(t *testing.T) {
	t.Parallel()
	weak := []struct {
		name, value, want string
	}{
		{"manifests' example", "REPLACE-ME", "placeholder"},
		{"example lower case", "replace-me", "placeholder"},
		{"changeme", "changeme", "placeholder"},
		{"secret", "Secret", "placeholder"},
		{"example", "example", "placeholder"},
		{"long placeholder", "REPLACE-ME-WITH-A-REAL-SECRET-PLEASE-0000", "placeholder"},
		{"your token here", "<your-token-goes-here-please-1234567890>", "placeholder"},
		{"short", "hunter2-but-longer-still-31byte", "shorter than 32 bytes"},
		{"31 random hex", goodSecret[:31], "shorter than 32 bytes"},
		{"one character repeated", strings.Repeat("a", 64), "distinct"},
		{"two characters", strings.Repeat("ab", 20), "distinct"},
		{"pattern repeated", strings.Repeat("0123456789abcdef", 4), "pattern"},
		{"word repeated", strings.Repeat("hunter2!", 5), "pattern"},
	}
	for _, tt := range weak {
		for _, variable := range []string{"DECAP_API_TOKEN", "DECAP_GITHUB_WEBHOOK_SECRET"} {
			t.Run(tt.name+"/"+variable, func(t *testing.T) {
				t.Parallel()
				_, err := config.Load(env(map[string]string{variable: tt.value}))
				if err == nil || !strings.Contains(err.Error(), variable+": ") || !strings.Contains(err.Error(), tt.want) {
					t.Fatalf("Load(%s=<%s>) error = %v, want one naming %s and saying %q", variable, tt.name, err, variable, tt.want)
				}
				if strings.Contains(err.Error(), tt.value) {
					t.Errorf("error %q contains the value", err)
				}
			})
		}
	}
}

func TestLoadAcceptsRandomSecrets(t *testing.T) {
	t.Parallel()
	for _, v := range []string{
		goodSecret,
		goodSecret[:32], // openssl rand -hex 16
		"q3Vd9XkT2mWz8LpR5nYc1HsB7fJg4AeU0oIi6yKt+/Q=", // openssl rand -base64 32
		"whsec-ABCDEFGHJKLMNPQRSTUVWXYZabcdefghij2345", // a prefix and random letters
	} {
		c, err := config.Load(env(map[string]string{"DECAP_API_TOKEN": v, "DECAP_GITHUB_WEBHOOK_SECRET": v}))
		if err != nil {
			t.Errorf("Load(a random secret of %d bytes): %v", len(v), err)
			continue
		}
		if c.APIToken != v || string(c.WebhookSecret) != v {
			t.Errorf("Load: got other secrets than given")
		}
	}
}

// A weak secret read from a file is refused the same way; the error says
// where it came from.
func TestLoadRefusesWeakSecretFile(t *testing.T) {
	t.Parallel()
	f := filepath.Join(t.TempDir(), "api-token")
	if err := os.WriteFile(f, []byte("REPLACE-ME\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := config.Load(env(map[string]string{"DECAP_API_TOKEN_FILE": f}))
	if err == nil || !strings.Contains(err.Error(), "DECAP_API_TOKEN (read from DECAP_API_TOKEN_FILE): is a placeholder") {
		t.Fatalf("Load(DECAP_API_TOKEN_FILE with REPLACE-ME) error = %v, want it named", err)
	}
	if strings.Contains(err.Error(), "REPLACE-ME") {
		t.Errorf("error %q contains the value", err)
	}
}
