package awssecrets_test

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager/types"

	"github.com/decap-ci/decap/internal/awssecrets"
	"github.com/decap-ci/decap/internal/build"
	"github.com/decap-ci/decap/internal/buildtest"
)

func newClient(t *testing.T) *secretsmanager.Client {
	t.Helper()
	endpoint := os.Getenv("AWS_ENDPOINT_URL")
	if endpoint == "" {
		t.Skip("AWS_ENDPOINT_URL not set: run under scripts/with-moto.sh to test the Secrets Manager adapter")
	}
	cfg, err := config.LoadDefaultConfig(t.Context(),
		config.WithRegion("us-east-1"),
		config.WithCredentialsProvider(credentials.NewStaticCredentialsProvider("test", "test", "")),
	)
	if err != nil {
		t.Fatalf("LoadDefaultConfig() error = %v", err)
	}
	return secretsmanager.NewFromConfig(cfg, func(o *secretsmanager.Options) { o.BaseEndpoint = aws.String(endpoint) })
}

// newStore returns a store under a prefix of its own, whose secrets are
// deleted when the test ends.
func newStore(t *testing.T, client *secretsmanager.Client) (*awssecrets.Secrets, string) {
	t.Helper()
	var b [6]byte
	_, _ = rand.Read(b[:])
	prefix := "decaptest-" + hex.EncodeToString(b[:])
	s, err := awssecrets.New(client, prefix)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		out, err := client.ListSecrets(t.Context(), &secretsmanager.ListSecretsInput{
			Filters: []types.Filter{{Key: types.FilterNameStringTypeName, Values: []string{prefix + "/"}}}, MaxResults: aws.Int32(100)})
		if err != nil {
			return
		}
		for _, e := range out.SecretList {
			client.DeleteSecret(t.Context(), &secretsmanager.DeleteSecretInput{SecretId: e.Name, ForceDeleteWithoutRecovery: aws.Bool(true)})
		}
	})
	return s, prefix
}

func TestContract(t *testing.T) {
	t.Parallel()
	client := newClient(t)
	buildtest.TestSecrets(t, func(t *testing.T, _ *buildtest.Clock) buildtest.Secrets {
		s, _ := newStore(t, client)
		return s
	}, buildtest.SecretsFeatures{ServerClock: true})
}

// TestStoredAs: a secret is <prefix>/<team>/<project>/<NAME>, its value
// the SecretBinary; one an operator wrote as text is revealed too.
func TestStoredAs(t *testing.T) {
	t.Parallel()
	client := newClient(t)
	s, prefix := newStore(t, client)
	if err := s.Put(t.Context(), "ae6rt", "lab", "NPM_TOKEN", []byte("npm\x00binary")); err != nil {
		t.Fatal(err)
	}
	got, err := client.GetSecretValue(t.Context(), &secretsmanager.GetSecretValueInput{SecretId: aws.String(prefix + "/ae6rt/lab/NPM_TOKEN")})
	if err != nil {
		t.Fatalf("GetSecretValue(%s/ae6rt/lab/NPM_TOKEN) error = %v", prefix, err)
	}
	if string(got.SecretBinary) != "npm\x00binary" || got.SecretString != nil {
		t.Errorf("stored as binary %q, string %v; want the value as SecretBinary", got.SecretBinary, got.SecretString)
	}
	if _, err := client.CreateSecret(t.Context(), &secretsmanager.CreateSecretInput{
		Name: aws.String(prefix + "/ae6rt/lab/BY_HAND"), SecretString: aws.String("typed in the console")}); err != nil {
		t.Fatal(err)
	}
	v, err := s.Reveal(t.Context(), "ae6rt", "lab", []string{"BY_HAND", "NPM_TOKEN"})
	if err != nil || string(v["BY_HAND"]) != "typed in the console" {
		t.Errorf("Reveal() of a text secret = %q, %v", v["BY_HAND"], err)
	}
	list, err := s.List(t.Context(), "ae6rt", "lab")
	if err != nil || len(list) != 2 || list[0].Name != "BY_HAND" || list[0].Size != 0 || list[1].Size != len("npm\x00binary") {
		t.Errorf("List() = %+v, %v; want BY_HAND (size unknown: 0) and NPM_TOKEN", list, err)
	}
}

func TestNewRefusesBadPrefixes(t *testing.T) {
	t.Parallel()
	for _, p := range []string{"", "a/b", "a b", "ä", strings.Repeat("a", 65)} {
		if _, err := awssecrets.New(nil, p); !errors.Is(err, build.ErrInvalid) {
			t.Errorf("New(%q) error = %v, want ErrInvalid", p, err)
		}
	}
}
