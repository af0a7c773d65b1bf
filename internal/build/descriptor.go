package build

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"regexp/syntax"
	"strings"
	"time"
)

// MaxDescriptorSize bounds a project.json.
const MaxDescriptorSize = 64 << 10

// DefaultBuildTimeout applies when a descriptor sets none.
const DefaultBuildTimeout = time.Hour

// MaxBuildTimeout bounds what a descriptor may ask for.
const MaxBuildTimeout = 24 * time.Hour

// Descriptor is a parsed, validated project.json.
type Descriptor struct {
	BuildImage      string    `json:"buildImage"`
	RepoManager     string    `json:"repoManager,omitempty"`
	RepoURL         string    `json:"repoUrl,omitempty"`
	RepoDescription string    `json:"repoDescription,omitempty"`
	ManagedRefRegex string    `json:"managedRefRegex,omitempty"`
	TimeoutSeconds  int       `json:"buildTimeoutSeconds,omitempty"`
	Sidecars        []Sidecar `json:"sidecars,omitempty"`
	// Supersede says which waiting (and running) requests of a lock key a
	// newer request of the key ends; absent means DESIGN.md's defaults.
	Supersede *Supersede `json:"supersede,omitempty"`
	// Retries says how often a build is tried again after an
	// infrastructure failure; absent means the defaults.
	Retries *Retries `json:"retries,omitempty"`
	// PullRequests, when present, has the project's pull requests built
	// (see PullRequestPolicy); absent, none are.
	PullRequests *PullRequestPolicy `json:"pullRequests,omitempty"`
	// Secrets names the project's secrets its builds want (at most
	// MaxBuildSecrets); SecretsRefRegex, if set, gives them only to builds
	// of the refs it matches (anchored, like managedRefRegex). See
	// SecretsFor.
	Secrets         []string `json:"secrets,omitempty"`
	SecretsRefRegex string   `json:"secretsRefRegex,omitempty"`

	managed    *regexp.Regexp
	secretsRef *regexp.Regexp
}

// Supersede is project.json's "supersede": when a newer request for a lock
// key is accepted, the key's older queued and deferred requests end
// superseded (Queued, default true), and its running build is stopped and
// ends superseded too (Running, default false), unless the ref matches
// ExceptRefRegex (anchored, like managedRefRegex; e.g. "main|release/.*",
// whose every commit is wanted). An absent field takes its default.
type Supersede struct {
	Queued         *bool  `json:"queued,omitempty"`
	Running        *bool  `json:"running,omitempty"`
	ExceptRefRegex string `json:"exceptRefRegex,omitempty"`

	except *regexp.Regexp
}

// Retries is project.json's "retries": Infra is how many times a build
// that ended by an infrastructure failure (see InfraCause) is tried again,
// each retry a build of its own (default DefaultInfraRetries, at most
// MaxInfraRetries; the operator may cap it lower).
type Retries struct {
	Infra *int `json:"infra,omitempty"`
}

// DefaultInfraRetries is retries.infra when project.json does not set it.
const DefaultInfraRetries = 2

// MaxInfraRetries bounds retries.infra.
const MaxInfraRetries = 10

// SupersedePolicy is what Supersede says about one ref: whether a newer
// request of its lock key ends the older waiting requests (Queued) and the
// running build (Running). The zero value supersedes nothing.
type SupersedePolicy struct {
	Queued, Running bool
}

// Any reports whether a newer request ends anything at all.
func (p SupersedePolicy) Any() bool { return p.Queued || p.Running }

// Sidecar is a container run next to the build container.
type Sidecar struct {
	Name    string   `json:"name"`
	Image   string   `json:"image"`
	Command []string `json:"command,omitempty"`
	Args    []string `json:"args,omitempty"`
	Env     []EnvVar `json:"env,omitempty"`
}

// EnvVar is one environment variable of a sidecar.
type EnvVar struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// IsDNSLabel reports whether s is a DNS-1123 label (lower-case letters,
// digits and '-', at most 63): a sidecar's or a Kubernetes namespace's
// name.
func IsDNSLabel(s string) bool { return dnsLabel.MatchString(s) }

// Repository managers Decap knows.
const RepoManagerGitHub = "github"

var (
	dnsLabel = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`)
	envName  = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	// An image reference: no spaces or control characters, a sane length.
	imageRef = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._/:@-]{0,254}$`)
)

// ParseDescriptor parses and validates a project.json. Unknown fields are an
// error, so a typo such as "managedRefRegexp" does not silently build every
// branch.
func ParseDescriptor(data []byte) (Descriptor, error) {
	if len(data) > MaxDescriptorSize {
		return Descriptor{}, fmt.Errorf("%w: project.json is %d bytes, more than %d", ErrInvalid, len(data), MaxDescriptorSize)
	}
	if err := checkDescriptorKeys(data); err != nil {
		return Descriptor{}, err
	}
	var d Descriptor
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&d); err != nil {
		var typ *json.UnmarshalTypeError
		if errors.As(err, &typ) {
			off := typ.Offset // past the value: a number's text is in Value
			if n, ok := strings.CutPrefix(typ.Value, "number "); ok {
				off -= int64(len(n))
			}
			return Descriptor{}, errorAt(data, off, typeMismatch(typ))
		}
		return Descriptor{}, fmt.Errorf("%w: project.json: %v", ErrInvalid, err)
	}
	if !atEnd(dec) {
		return Descriptor{}, fmt.Errorf("%w: project.json has data after the JSON object", ErrInvalid)
	}
	if err := d.validate(); err != nil {
		return Descriptor{}, fmt.Errorf("%w: project.json: %s", ErrInvalid, err)
	}
	return d, nil
}

func (d *Descriptor) validate() error {
	if d.BuildImage == "" {
		return fmt.Errorf("buildImage is required")
	}
	if !imageRef.MatchString(d.BuildImage) {
		return fmt.Errorf("buildImage %q is not an image reference", truncate(d.BuildImage, 80))
	}
	switch d.RepoManager {
	case "", RepoManagerGitHub:
	default:
		return fmt.Errorf("repoManager %q is not known (want %q)", truncate(d.RepoManager, 40), RepoManagerGitHub)
	}
	if d.RepoURL != "" && !strings.HasPrefix(d.RepoURL, "https://") && !strings.HasPrefix(d.RepoURL, "git@") && !strings.HasPrefix(d.RepoURL, "ssh://") {
		return fmt.Errorf("repoUrl %q must be an https://, ssh:// or git@ URL", truncate(d.RepoURL, 80))
	}
	if d.ManagedRefRegex != "" {
		re, err := compileRefRegex("managedRefRegex", d.ManagedRefRegex)
		if err != nil {
			return err
		}
		d.managed = re
	}
	if d.Supersede != nil && d.Supersede.ExceptRefRegex != "" {
		re, err := compileRefRegex("supersede.exceptRefRegex", d.Supersede.ExceptRefRegex)
		if err != nil {
			return err
		}
		d.Supersede.except = re
	}
	if err := d.validateSecrets(); err != nil {
		return err
	}
	if d.PullRequests != nil {
		if err := d.PullRequests.validate(); err != nil {
			return err
		}
	}
	if d.Retries != nil && d.Retries.Infra != nil && (*d.Retries.Infra < 0 || *d.Retries.Infra > MaxInfraRetries) {
		return fmt.Errorf("retries.infra must be between 0 and %d", MaxInfraRetries)
	}
	// Compared in seconds: a huge value would overflow a Duration.
	if d.TimeoutSeconds < 0 || d.TimeoutSeconds > int(MaxBuildTimeout/time.Second) {
		return fmt.Errorf("buildTimeoutSeconds must be between 0 and %d", int(MaxBuildTimeout/time.Second))
	}
	if len(d.Sidecars) > 8 {
		return fmt.Errorf("at most 8 sidecars, got %d", len(d.Sidecars))
	}
	seen := map[string]bool{}
	for i, s := range d.Sidecars {
		if !dnsLabel.MatchString(s.Name) {
			return fmt.Errorf("sidecars[%d].name %q is not a DNS label", i, truncate(s.Name, 70))
		}
		if s.Name == "build" || s.Name == "checkout" || seen[s.Name] {
			return fmt.Errorf("sidecars[%d].name %q is reserved or repeated", i, s.Name)
		}
		seen[s.Name] = true
		if !imageRef.MatchString(s.Image) {
			return fmt.Errorf("sidecars[%d].image %q is not an image reference", i, truncate(s.Image, 80))
		}
		for j, e := range s.Env {
			if !envName.MatchString(e.Name) {
				return fmt.Errorf("sidecars[%d].env[%d].name %q is not a variable name", i, j, truncate(e.Name, 40))
			}
		}
	}
	return nil
}

// Manages reports whether push-triggered builds of ref are wanted: true when
// the descriptor has no managedRefRegex, else whether the whole ref matches.
func (d Descriptor) Manages(ref string) bool {
	if d.managed == nil {
		if d.ManagedRefRegex == "" {
			return true
		}
		// A Descriptor built by hand rather than parsed: compile now,
		// with the same limits.
		re, err := compileRefRegex("managedRefRegex", d.ManagedRefRegex)
		if err != nil {
			return false
		}
		return re.MatchString(ref)
	}
	return d.managed.MatchString(ref)
}

func (d *Descriptor) validateSecrets() error {
	if len(d.Secrets) > MaxBuildSecrets {
		return fmt.Errorf("secrets lists %d names, more than %d", len(d.Secrets), MaxBuildSecrets)
	}
	seen := map[string]bool{}
	for i, name := range d.Secrets {
		if err := ValidateSecretName(name); err != nil {
			return fmt.Errorf("secrets[%d]: %s", i, strings.TrimPrefix(err.Error(), ErrInvalid.Error()+": "))
		}
		if seen[name] {
			return fmt.Errorf("secrets[%d]: %q is listed twice", i, name)
		}
		seen[name] = true
	}
	if d.SecretsRefRegex != "" {
		re, err := compileRefRegex("secretsRefRegex", d.SecretsRefRegex)
		if err != nil {
			return err
		}
		d.secretsRef = re
	}
	return nil
}

// GrantsSecretsTo reports whether builds of ref may receive the project's
// secrets: true without a secretsRefRegex, else whether the whole ref
// matches it. A hand-built descriptor's regex is compiled now, with the
// same limits; one that does not compile grants to no ref (giving a
// secret to too few builds fails a build, to too many leaks it).
func (d Descriptor) GrantsSecretsTo(ref string) bool {
	if d.SecretsRefRegex == "" {
		return true
	}
	re := d.secretsRef
	if re == nil {
		var err error
		if re, err = compileRefRegex("secretsRefRegex", d.SecretsRefRegex); err != nil {
			return false
		}
	}
	return re.MatchString(ref)
}

// SupersedeFor returns what a newer request of ref's lock key ends:
// supersede's queued and running (defaults true and false), or nothing when
// ref matches exceptRefRegex. A hand-built descriptor's exceptRefRegex is
// compiled now, with the same limits; one that does not compile exempts
// every ref (superseding too much loses builds, too little only costs
// time).
//
// A pull request's ref ("pull/<N>") supersedes both, whatever supersede
// says: a new push to a pull request makes its older heads' builds
// worthless (DESIGN.md "Supersede, retry, rebuild"), and such a ref is
// no branch that exceptRefRegex could mean.
func (d Descriptor) SupersedeFor(ref string) SupersedePolicy {
	if _, ok := PullNumber(ref); ok {
		return SupersedePolicy{Queued: true, Running: true}
	}
	p := SupersedePolicy{Queued: true}
	s := d.Supersede
	if s == nil {
		return p
	}
	if s.Queued != nil {
		p.Queued = *s.Queued
	}
	if s.Running != nil {
		p.Running = *s.Running
	}
	if s.ExceptRefRegex == "" {
		return p
	}
	re := s.except
	if re == nil {
		var err error
		if re, err = compileRefRegex("supersede.exceptRefRegex", s.ExceptRefRegex); err != nil {
			return SupersedePolicy{}
		}
	}
	if re.MatchString(ref) {
		return SupersedePolicy{}
	}
	return p
}

// InfraRetries returns how many times a build of the project that ended by
// an infrastructure failure is tried again: retries.infra, or
// DefaultInfraRetries when it is not set, and at most limit (the
// operator's DECAP_MAX_INFRA_RETRIES; limit < 0 means no limit but
// MaxInfraRetries).
func (d Descriptor) InfraRetries(limit int) int {
	n := DefaultInfraRetries
	if d.Retries != nil && d.Retries.Infra != nil {
		n = min(max(*d.Retries.Infra, 0), MaxInfraRetries)
	}
	if limit >= 0 {
		n = min(n, limit)
	}
	return n
}

// MaxRegexInsts bounds a managedRefRegex by the size of its compiled program
// (regexp/syntax instructions, anchored), not by its text: Go allows {n,m} up
// to 1000, but repeats multiply, and ".{0,1000}" a hundred times over is 900
// bytes of text that compile to 200,004 instructions and cost about 150 MiB
// to compile and match in every service that reads the catalog. Branch filters
// projects really use compile to a few dozen instructions
// ("main|release/.*|feature/[A-Z]+-[0-9]+" is 33, ".{0,255}" is 514); the
// bound leaves room for ".{0,1000}" (2,004) and keeps a worst case to a few
// MiB.
const MaxRegexInsts = 4096

// compileRefRegex compiles field's ref regex (managedRefRegex,
// supersede.exceptRefRegex) anchored at both ends, refusing one that does
// not parse on its own or whose program exceeds MaxRegexInsts. The errors
// name the field and are shown as the project's error.
func compileRefRegex(field, expr string) (*regexp.Regexp, error) {
	// Parsed alone first: a regex such as "x)|(.*" would otherwise close the
	// anchoring group and match every ref.
	if _, err := syntax.Parse(expr, syntax.Perl); err != nil {
		return nil, fmt.Errorf("%s does not compile: %v", field, err)
	}
	anchored := "^(?:" + expr + ")$"
	tree, err := syntax.Parse(anchored, syntax.Perl)
	if err != nil {
		return nil, fmt.Errorf("%s does not compile: %v", field, err)
	}
	// Parsing does not expand repeats; simplifying and compiling do. The
	// estimate refuses a bomb before it is expanded, the program's length
	// decides the rest.
	if progEstimate(tree) > 2*MaxRegexInsts {
		return nil, fmt.Errorf("%s is too large: it compiles to more than %d instructions (repeats such as {0,1000} multiply the size of what they repeat)", field, MaxRegexInsts)
	}
	prog, err := syntax.Compile(tree.Simplify())
	if err != nil {
		return nil, fmt.Errorf("%s does not compile: %v", field, err)
	}
	if n := len(prog.Inst); n > MaxRegexInsts {
		return nil, fmt.Errorf("%s is too large: it compiles to %d instructions, more than %d (repeats such as {0,1000} multiply the size of what they repeat)", field, n, MaxRegexInsts)
	}
	re, err := regexp.Compile(anchored)
	if err != nil {
		return nil, fmt.Errorf("%s does not compile: %v", field, err)
	}
	return re, nil
}

// progEstimate is about the number of instructions re compiles to, counting
// repeats as their expansion without expanding them (as regexp/syntax's own
// size check does). It saturates instead of overflowing.
func progEstimate(re *syntax.Regexp) int64 {
	const limit = 1 << 40
	var n int64
	switch re.Op {
	case syntax.OpLiteral:
		n = int64(len(re.Rune))
	case syntax.OpCapture, syntax.OpStar:
		n = 2 + progEstimate(re.Sub[0])
	case syntax.OpPlus, syntax.OpQuest:
		n = 1 + progEstimate(re.Sub[0])
	case syntax.OpConcat, syntax.OpAlternate:
		for _, sub := range re.Sub {
			n += progEstimate(sub) + 1
		}
	case syntax.OpRepeat:
		sub := progEstimate(re.Sub[0])
		times := int64(re.Max)
		if re.Max == -1 {
			times = int64(re.Min) + 1
		}
		n = (times+1)*sub + times
	}
	return min(max(1, n), limit)
}

// Timeout is the build's deadline: the descriptor's, or DefaultBuildTimeout.
func (d Descriptor) Timeout() time.Duration {
	if d.TimeoutSeconds > 0 {
		return time.Duration(d.TimeoutSeconds) * time.Second
	}
	return DefaultBuildTimeout
}

// atEnd reports whether nothing but white space follows the value dec
// decoded. (Decoder.More is false before a stray ']' or '}'.)
func atEnd(dec *json.Decoder) bool {
	_, err := dec.Token()
	return err == io.EOF
}
