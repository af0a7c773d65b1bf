package build

import (
	"context"
	"fmt"
	"slices"
	"time"
)

// Secrets for builds: named values per project, written through the API
// and never read back by it, given to the builds that project.json says
// want them (DESIGN.md "Secrets for builds").

// Bounds on secrets.
const (
	// MaxSecretSize bounds a secret's value: AWS Secrets Manager's own
	// limit (65,536 bytes of SecretBinary), so every backend takes the
	// same values.
	MaxSecretSize = 64 << 10
	// MaxSecretNameLen bounds a secret's name.
	MaxSecretNameLen = 128
	// MaxBuildSecrets bounds the names project.json's "secrets" may list:
	// a build's secrets travel in one Kubernetes Secret, which holds at
	// most 1 MiB, and 10 values of MaxSecretSize fit.
	MaxBuildSecrets = 10
	// MaxProjectSecrets bounds how many secrets one project may store.
	MaxProjectSecrets = 100
)

// SecretsDir is where a build Pod finds its secrets, one read-only file
// per name; a local build finds them in its own directory. Either way the
// build's BUILD_SECRETS names the directory.
const SecretsDir = "/run/decap/secrets"

// ValidateSecretName checks a secret's name: 1 to MaxSecretNameLen of
// [A-Z0-9_], not starting with a digit (an environment variable's name in
// upper case, which is also a safe file name and a safe AWS name).
func ValidateSecretName(name string) error {
	if name == "" {
		return fmt.Errorf("%w: secret name is empty", ErrInvalid)
	}
	if len(name) > MaxSecretNameLen {
		return fmt.Errorf("%w: secret name is longer than %d characters", ErrInvalid, MaxSecretNameLen)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'A' && c <= 'Z' || c == '_' || i > 0 && c >= '0' && c <= '9') {
			return fmt.Errorf("%w: secret name %q must be upper-case letters, digits and '_', not starting with a digit", ErrInvalid, truncate(name, 40))
		}
	}
	return nil
}

// ValidateSecretValue checks a secret's value: 1 to MaxSecretSize bytes,
// any bytes (a key store is binary).
func ValidateSecretValue(value []byte) error {
	if len(value) == 0 {
		return fmt.Errorf("%w: secret value is empty", ErrInvalid)
	}
	if len(value) > MaxSecretSize {
		return fmt.Errorf("%w: secret value is %d bytes, more than %d", ErrInvalid, len(value), MaxSecretSize)
	}
	return nil
}

// ValidateSecretKey checks the team, project and name a secret is stored
// under; every Secrets store calls it first.
func ValidateSecretKey(team, project, name string) error {
	if err := ValidateProject(team, project); err != nil {
		return err
	}
	return ValidateSecretName(name)
}

// ValidateProject checks a project key's team and project names.
func ValidateProject(team, project string) error {
	if err := ValidateName("team", team); err != nil {
		return err
	}
	return ValidateName("project", project)
}

// SecretInfo is what may be known of a stored secret: never its value.
type SecretInfo struct {
	Name string `json:"name"`
	// Size is the value's length in bytes.
	Size int `json:"size"`
	// UpdatedAt is when the value was last written, by the store's clock.
	UpdatedAt time.Time `json:"updatedAt"`
}

// Secrets stores the secrets of projects. Team, project and name are
// checked by ValidateSecretKey (ErrInvalid). Values leave a store only
// through Reveal, which only the dispatcher calls; nothing else reads them.
type Secrets interface {
	// Put stores value under team/project/name, creating the secret or
	// replacing its value; its UpdatedAt becomes the store's now.
	// ErrInvalid for a value ValidateSecretValue refuses.
	Put(ctx context.Context, team, project, name string, value []byte) error
	// Delete removes the secret; ErrNotFound when there is none.
	Delete(ctx context.Context, team, project, name string) error
	// List returns the project's secrets, sorted by name; none is not an
	// error.
	List(ctx context.Context, team, project string) ([]SecretInfo, error)
	// Reveal returns the values of those of names that the project has;
	// a name it lacks is absent from the map, not an error. A name
	// ValidateSecretName refuses is ErrInvalid.
	Reveal(ctx context.Context, team, project string, names []string) (map[string][]byte, error)
}

// Secret is one secret as a build receives it. It travels from the
// dispatcher to the executor inside a Job and nowhere else: never in a
// queue message, a record, job.json or a Pod spec.
type Secret struct {
	Name  string
	Value []byte
}

// String never shows the value, whatever prints a Secret.
func (s Secret) String() string { return s.Name + "=***" }

// GoString never shows the value either (%#v).
func (s Secret) GoString() string { return fmt.Sprintf("build.Secret{Name: %q, Value: ***}", s.Name) }

// Reasons a build is given none of the secrets it wants (SecretGrant.Withheld).
const (
	ReasonSecretsUntrusted = "an untrusted build gets no secrets"
	reasonSecretsRef       = "ref %q does not match secretsRefRegex %q"
)

// SecretGrant is what a build may receive: the names of the secrets it
// is granted, and, when it wanted some and is granted none, why.
type SecretGrant struct {
	Names    []string
	Withheld string
}

// SecretsFor decides which secrets a build of req receives: the names the
// descriptor's "secrets" lists, unless the request is untrusted or its ref
// does not match secretsRefRegex, when it gets none and Withheld says why.
// It is a pure function: whether the project has the secrets is the
// store's business (see Record.GrantSecrets).
func SecretsFor(req Request, desc Descriptor) SecretGrant {
	if len(desc.Secrets) == 0 {
		return SecretGrant{}
	}
	if req.Untrusted() {
		return SecretGrant{Withheld: ReasonSecretsUntrusted}
	}
	if !desc.GrantsSecretsTo(req.Ref) {
		return SecretGrant{Withheld: fmt.Sprintf(reasonSecretsRef, req.Ref, desc.SecretsRefRegex)}
	}
	names := slices.Clone(desc.Secrets)
	slices.Sort(names)
	return SecretGrant{Names: slices.Compact(names)}
}
