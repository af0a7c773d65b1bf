// Package config reads Decap's settings from DECAP_* environment variables,
// the same for every service, so one table in the README describes them all.
// Secrets may come from a file (VAR_FILE) instead of the variable itself and
// are never part of an error message.
package config

import (
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/decap-ci/decap/internal/build"
)

// Config is every service's configuration; each service reads what it needs.
type Config struct {
	// Backend is where the queue, locks and records live: "embedded" or "aws".
	Backend string
	// Prefix starts the name of every AWS resource (queue, tables, bucket).
	Prefix string
	// Bucket is the S3 bucket of logs and artifacts (default Prefix-builds).
	Bucket string
	// Executor runs builds: "local" (processes on this machine) or
	// "kubernetes" (build Pods).
	Executor string
	// Kube configures the kubernetes executor.
	Kube Kube
	// DataDir holds the embedded backend's state (SQLite, blobs, run dirs).
	DataDir string
	// SecretsKeyFile holds the key that encrypts the builds' secrets on the
	// embedded backend (DECAP_SECRETS_KEY_FILE; <DataDir>/secrets.key by
	// default, made on first use).
	SecretsKeyFile string
	// BuildScripts is the build-scripts repository: a directory or git URL.
	BuildScripts string
	// CatalogRefresh is how often the catalog is rescanned.
	CatalogRefresh time.Duration

	// IngestAddr, DispatcherAddr and ReaperAddr are listen addresses.
	IngestAddr, DispatcherAddr, ReaperAddr string

	WebhookSecret         []byte
	InsecureSkipSignature bool
	APIToken              string
	AuthDisabled          bool
	// ReadPublic lets anyone read the API and the UI without the token or
	// a session (DECAP_READ_AUTH=public); SessionTTL is how long a UI
	// session lasts (DECAP_SESSION_TTL).
	ReadPublic bool
	SessionTTL time.Duration
	// PublicBadges lets anyone read the status badges (DECAP_BADGES=public;
	// the default where reads are public, auth otherwise).
	PublicBadges bool
	// Outgoing configures the outgoing webhooks (DECAP_OUTGOING_WEBHOOKS_*).
	Outgoing Outgoing

	// GitHubToken lets Decap read private repositories' refs and post
	// commit statuses; GitHubAPIURL points at GitHub Enterprise (or a test
	// server); PublicURL is where people reach the UI (status links).
	GitHubToken, GitHubAPIURL, PublicURL string

	// Cap bounds running builds; 0 means no cap.
	Cap int
	// DispatchWorkers bounds decisions in flight per dispatcher:
	// DefaultEmbeddedWorkers on the embedded store, whose group commit
	// makes the writes in flight durable with one fsync (more decisions
	// in flight, more writes to a commit), DefaultAWSWorkers on AWS, where
	// each call is a request of its own.
	DispatchWorkers int
	// MaxDeferAge is how long a request may wait before it expires.
	MaxDeferAge time.Duration
	// MaxInfraRetries caps project.json's retries.infra: how many times
	// the reaper may retry a build that an infrastructure failure ended.
	// 0 turns retries off.
	MaxInfraRetries int
	// Entrypoint is the decap-entrypoint binary the local executor runs.
	Entrypoint string
	// BuildIsolation is what the local executor does when it cannot run
	// builds under users of their own (Decap not running as root):
	// "best-effort" runs them as the services' user and warns at start,
	// "required" refuses to start.
	BuildIsolation string
	// BuildUIDFirst and BuildUIDLast bound the uids (each also a gid) that
	// local builds run as when Decap runs as root, one per running build;
	// zero for the executor's default range.
	BuildUIDFirst, BuildUIDLast int
	// RunDir is the local executor's directory of running builds; empty
	// lets the backend choose (<DataDir>/run, or a directory build users
	// can reach when the data directory's parents are closed to them).
	RunDir string
	// ReapInterval is how often the local reaper scans for ended builds
	// besides when a launcher wakes it: the fallback for ends nobody told.
	ReapInterval time.Duration
	// CancelInterval is how often the reaper looks for running builds
	// someone asked to cancel, and stops them.
	CancelInterval time.Duration

	// HTTP bounds what requests can cost: every service's server timeouts
	// and ingest's edge limits.
	HTTP HTTP

	LogLevel  slog.Level
	LogFormat string
}

// Kube is the kubernetes executor's configuration.
type Kube struct {
	// Kubeconfig is a kubeconfig file; empty means the in-cluster config
	// (the Pod's ServiceAccount).
	Kubeconfig string
	// Namespace holds the build Pods.
	Namespace string
	// QPS and Burst bound the client's request rate (client-go defaults to
	// 5 and 10, too few for a dispatcher under load).
	QPS   float32
	Burst int
	// EntrypointImage is the Decap build container image (build-container/):
	// the build Pod's init container checks the build scripts out with its
	// git and copies decap-entrypoint into the Pod for the project's
	// buildImage to run.
	EntrypointImage string
	// PendingTimeout is how long a build Pod may stay Pending with an image
	// it cannot pull or no node to run on before its build errors.
	PendingTimeout time.Duration
	// CPURequest, MemoryRequest and MemoryLimit size the build container
	// (Kubernetes quantities such as 500m, 1Gi).
	CPURequest, MemoryRequest, MemoryLimit string
}

// HTTP bounds what requests can cost a service (see internal/health's
// Timeouts and internal/ingest's Limits).
type HTTP struct {
	// ReadTimeout bounds the arrival of a request, headers and body;
	// WriteTimeout the writing of an answer (streamed answers get it per
	// chunk); IdleTimeout a keep-alive connection between requests.
	ReadTimeout, WriteTimeout, IdleTimeout time.Duration
	// WebhookMaxBody bounds a GitHub webhook's body.
	WebhookMaxBody int64
	// BodyBudget bounds the bytes of request bodies ingest reads at once,
	// ClientBodyBudget those of one client.
	BodyBudget, ClientBodyBudget int64
	// MaxFollowers bounds the log follows open at once, ClientFollowers
	// those of one client; FollowMaxDuration one follow.
	MaxFollowers, ClientFollowers int
	FollowMaxDuration             time.Duration
	// TrustedProxies are the load balancers whose X-Forwarded-For ingest
	// believes, to tell clients apart.
	TrustedProxies []netip.Prefix
}

// The dispatcher's workers when DECAP_DISPATCH_WORKERS is unset: on the
// embedded store 128 in flight made the group commit's transactions per
// launch 0.3 where 32 made 0.5 (docs/BENCHMARKS.md, tuning 16).
const (
	DefaultEmbeddedWorkers = 128
	DefaultAWSWorkers      = 32
)

// Load reads the configuration through getenv. A value that cannot be parsed
// is an error naming the variable (never the value of a secret).
func Load(getenv func(string) string) (Config, error) {
	c := Config{
		Backend:        or(getenv("DECAP_BACKEND"), "embedded"),
		Prefix:         or(getenv("DECAP_PREFIX"), "decap"),
		Executor:       or(getenv("DECAP_EXECUTOR"), "local"),
		DataDir:        or(getenv("DECAP_DATA_DIR"), ".decap"),
		BuildScripts:   or(getenv("DECAP_BUILD_SCRIPTS"), "examples/build-scripts"),
		IngestAddr:     or(getenv("DECAP_ADDR"), "127.0.0.1:8080"),
		DispatcherAddr: or(getenv("DECAP_DISPATCHER_ADDR"), "127.0.0.1:8081"),
		ReaperAddr:     or(getenv("DECAP_REAPER_ADDR"), "127.0.0.1:8082"),
		Entrypoint:     getenv("DECAP_ENTRYPOINT"),
		LogFormat:      or(getenv("DECAP_LOG_FORMAT"), "json"),
		Cap:            4,
	}
	var errs []string
	fail := func(name, why string) { errs = append(errs, name+": "+why) }

	dur := func(name string, def time.Duration) time.Duration {
		v := getenv(name)
		if v == "" {
			return def
		}
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			fail(name, "want a positive duration such as 30s or 5m")
			return def
		}
		return d
	}
	integer := func(name string, def, min int) int {
		v := getenv(name)
		if v == "" {
			return def
		}
		n, err := strconv.Atoi(v)
		if err != nil || n < min {
			fail(name, fmt.Sprintf("want a whole number >= %d", min))
			return def
		}
		return n
	}
	boolean := func(name string) bool {
		switch strings.ToLower(getenv(name)) {
		case "", "0", "false", "no", "off":
			return false
		case "1", "true", "yes", "on":
			return true
		}
		fail(name, "want true or false")
		return false
	}
	secret := func(name string) string {
		v, file := getenv(name), getenv(name+"_FILE")
		if v != "" && file != "" {
			fail(name, "set either "+name+" or "+name+"_FILE, not both")
			return ""
		}
		if file == "" {
			return v
		}
		b, err := os.ReadFile(file)
		if err != nil {
			fail(name+"_FILE", "cannot read the file it names")
			return ""
		}
		return strings.TrimSpace(string(b))
	}

	c.Kube = Kube{
		Kubeconfig:      getenv("DECAP_KUBECONFIG"),
		Namespace:       or(getenv("DECAP_KUBE_NAMESPACE"), "decap"),
		QPS:             float32(integer("DECAP_KUBE_QPS", 50, 1)),
		Burst:           integer("DECAP_KUBE_BURST", 100, 1),
		EntrypointImage: or(getenv("DECAP_ENTRYPOINT_IMAGE"), "ghcr.io/decap-ci/decap-build:latest"),
		PendingTimeout:  dur("DECAP_POD_PENDING_TIMEOUT", 5*time.Minute),
		CPURequest:      or(getenv("DECAP_BUILD_CPU_REQUEST"), "500m"),
		MemoryRequest:   or(getenv("DECAP_BUILD_MEMORY_REQUEST"), "1Gi"),
		MemoryLimit:     or(getenv("DECAP_BUILD_MEMORY_LIMIT"), "4Gi"),
	}
	c.CatalogRefresh = dur("DECAP_CATALOG_REFRESH", 30*time.Second)
	c.MaxDeferAge = dur("DECAP_MAX_DEFER_AGE", 24*time.Hour)
	c.ReapInterval = dur("DECAP_REAP_INTERVAL", 500*time.Millisecond)
	c.CancelInterval = dur("DECAP_CANCEL_INTERVAL", time.Second)
	c.Cap = integer("DECAP_MAX_RUNNING_BUILDS", c.Cap, 0)
	workers := DefaultAWSWorkers
	if c.Backend == "embedded" {
		workers = DefaultEmbeddedWorkers
	}
	c.DispatchWorkers = integer("DECAP_DISPATCH_WORKERS", workers, 1)
	c.MaxInfraRetries = integer("DECAP_MAX_INFRA_RETRIES", 3, 0)
	if c.MaxInfraRetries > build.MaxInfraRetries {
		fail("DECAP_MAX_INFRA_RETRIES", fmt.Sprintf("want a whole number from 0 to %d", build.MaxInfraRetries))
	}
	c.WebhookSecret = []byte(secret("DECAP_GITHUB_WEBHOOK_SECRET"))
	c.APIToken = secret("DECAP_API_TOKEN")
	// A service refuses a guessable secret rather than run with it; unset,
	// ingest warns and refuses what the secret would guard.
	for _, s := range [][2]string{{"DECAP_GITHUB_WEBHOOK_SECRET", string(c.WebhookSecret)}, {"DECAP_API_TOKEN", c.APIToken}} {
		name, v := s[0], s[1]
		if why := weakSecret(v); v != "" && why != "" {
			if getenv(name+"_FILE") != "" {
				name += " (read from " + name + "_FILE)"
			}
			fail(name, why)
		}
	}
	c.GitHubToken = secret("DECAP_GITHUB_TOKEN")
	c.GitHubAPIURL = getenv("DECAP_GITHUB_API_URL")
	c.PublicURL = strings.TrimSuffix(or(getenv("DECAP_PUBLIC_URL"), "http://"+c.IngestAddr), "/")
	c.InsecureSkipSignature = boolean("DECAP_INSECURE_SKIP_SIGNATURE")
	switch strings.ToLower(or(getenv("DECAP_AUTH"), "on")) {
	case "on":
	case "off":
		c.AuthDisabled = true
	default:
		fail("DECAP_AUTH", "want on or off")
	}
	switch strings.ToLower(or(getenv("DECAP_READ_AUTH"), "token")) {
	case "token":
	case "public":
		c.ReadPublic = true
	default:
		fail("DECAP_READ_AUTH", "want token or public")
	}
	badges := "auth"
	if c.ReadPublic {
		badges = "public"
	}
	switch strings.ToLower(or(getenv("DECAP_BADGES"), badges)) {
	case "auth":
	case "public":
		c.PublicBadges = true
	default:
		fail("DECAP_BADGES", "want public or auth")
	}
	c.SessionTTL = dur("DECAP_SESSION_TTL", 12*time.Hour)
	c.Outgoing = loadOutgoing(getenv, dur, integer, boolean, fail)
	// The edge: what requests can cost (README: "Limits").
	size := func(name string, def int64) int64 {
		v := getenv(name)
		if v == "" {
			return def
		}
		n, err := parseSize(v)
		if err != nil {
			fail(name, "want a size in bytes, such as 65536, 512KiB or 5MiB")
			return def
		}
		return n
	}
	c.HTTP = HTTP{
		ReadTimeout:       dur("DECAP_HTTP_READ_TIMEOUT", 30*time.Second),
		WriteTimeout:      dur("DECAP_HTTP_WRITE_TIMEOUT", 60*time.Second),
		IdleTimeout:       dur("DECAP_HTTP_IDLE_TIMEOUT", 75*time.Second),
		WebhookMaxBody:    size("DECAP_WEBHOOK_MAX_BODY", 5<<20),
		BodyBudget:        size("DECAP_BODY_BUDGET", 16<<20),
		ClientBodyBudget:  size("DECAP_BODY_BUDGET_PER_CLIENT", 10<<20),
		MaxFollowers:      integer("DECAP_MAX_FOLLOWERS", 256, 1),
		ClientFollowers:   integer("DECAP_MAX_FOLLOWERS_PER_CLIENT", 8, 1),
		FollowMaxDuration: dur("DECAP_FOLLOW_MAX_DURATION", 30*time.Minute),
	}
	switch h := c.HTTP; {
	case h.WebhookMaxBody < 1<<10 || h.WebhookMaxBody > 25<<20:
		fail("DECAP_WEBHOOK_MAX_BODY", "want 1KiB to 25MiB (GitHub sends at most 25 MB)")
	case h.ClientBodyBudget < h.WebhookMaxBody:
		fail("DECAP_BODY_BUDGET_PER_CLIENT", "want at least DECAP_WEBHOOK_MAX_BODY, or a webhook that large is never read")
	case h.BodyBudget < h.ClientBodyBudget:
		fail("DECAP_BODY_BUDGET", "want at least DECAP_BODY_BUDGET_PER_CLIENT")
	}
	if c.HTTP.ClientFollowers > c.HTTP.MaxFollowers {
		fail("DECAP_MAX_FOLLOWERS_PER_CLIENT", "want at most DECAP_MAX_FOLLOWERS")
	}
	if v := getenv("DECAP_TRUSTED_PROXIES"); v != "" {
		ps, err := parseProxies(v)
		if err != nil {
			fail("DECAP_TRUSTED_PROXIES", err.Error())
		}
		c.HTTP.TrustedProxies = ps
	}
	switch strings.ToLower(or(getenv("DECAP_LOG_LEVEL"), "info")) {
	case "debug":
		c.LogLevel = slog.LevelDebug
	case "info":
		c.LogLevel = slog.LevelInfo
	case "warn":
		c.LogLevel = slog.LevelWarn
	case "error":
		c.LogLevel = slog.LevelError
	default:
		fail("DECAP_LOG_LEVEL", "want debug, info, warn or error")
	}
	if c.LogFormat != "json" && c.LogFormat != "text" {
		fail("DECAP_LOG_FORMAT", "want json or text")
	}
	if c.Backend != "embedded" && c.Backend != "aws" {
		fail("DECAP_BACKEND", fmt.Sprintf("%q is not supported (want embedded or aws)", c.Backend))
	}
	if !validPrefix(c.Prefix) {
		fail("DECAP_PREFIX", "want 3-40 lowercase letters, digits or hyphens, starting with a letter")
	}
	c.Bucket = or(getenv("DECAP_BUCKET"), c.Prefix+"-builds")
	switch c.Executor {
	case "local":
		c.BuildIsolation = strings.ToLower(or(getenv("DECAP_BUILD_ISOLATION"), "best-effort"))
		if c.BuildIsolation != "best-effort" && c.BuildIsolation != "required" {
			fail("DECAP_BUILD_ISOLATION", "want best-effort or required")
		}
		var ok bool
		if c.BuildUIDFirst, c.BuildUIDLast, ok = uidRange(getenv("DECAP_BUILD_UIDS")); !ok {
			fail("DECAP_BUILD_UIDS", fmt.Sprintf("want first-last, such as 1900000000-1900000999, within 1-%d", maxBuildUID))
		}
		if c.RunDir = getenv("DECAP_RUN_DIR"); c.RunDir != "" {
			abs, err := filepath.Abs(c.RunDir)
			if err != nil {
				fail("DECAP_RUN_DIR", "want a directory path")
			}
			c.RunDir = abs
		}
	case "kubernetes":
		if !build.IsDNSLabel(c.Kube.Namespace) {
			fail("DECAP_KUBE_NAMESPACE", "want a Kubernetes namespace name")
		}
	default:
		fail("DECAP_EXECUTOR", fmt.Sprintf("%q is not supported (want local or kubernetes)", c.Executor))
	}
	if len(errs) > 0 {
		return Config{}, fmt.Errorf("configuration: %s", strings.Join(errs, "; "))
	}
	abs, err := filepath.Abs(c.DataDir)
	if err != nil {
		return Config{}, fmt.Errorf("configuration: DECAP_DATA_DIR: %w", err)
	}
	c.DataDir = abs
	c.SecretsKeyFile = or(getenv("DECAP_SECRETS_KEY_FILE"), filepath.Join(c.DataDir, "secrets.key"))
	if c.SecretsKeyFile, err = filepath.Abs(c.SecretsKeyFile); err != nil {
		return Config{}, fmt.Errorf("configuration: DECAP_SECRETS_KEY_FILE: %w", err)
	}
	return c, nil
}

// parseSize reads a size in bytes: a whole number, optionally followed by
// KiB, MiB or GiB.
func parseSize(v string) (int64, error) {
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}} {
		if n, ok := strings.CutSuffix(v, u.suffix); ok {
			v, mult = n, u.mult
			break
		}
	}
	n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
	if err != nil || n < 0 || n > (1<<40)/mult {
		return 0, fmt.Errorf("not a size: %q", v)
	}
	return n * mult, nil
}

// parseProxies reads a comma-separated list of networks (CIDR) or single
// addresses. A network of every address is refused: believing anybody's
// X-Forwarded-For lets every client pick its own address.
func parseProxies(v string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, f := range strings.Split(v, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		p, err := netip.ParsePrefix(f)
		if err != nil {
			a, aerr := netip.ParseAddr(f)
			if aerr != nil {
				return nil, fmt.Errorf("%q is not a network (10.0.0.0/8) or an address", f)
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		if p.Bits() == 0 {
			return nil, fmt.Errorf("%q trusts every address, so any client could choose its own", f)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// maxBuildUID keeps build uids below 2^31-1, which tools reading uid_t as
// a signed number, and (uid_t)-1, never reach.
const maxBuildUID = 1<<31 - 2

// uidRange parses "first-last" (or one uid); "" gives zeros, the
// executor's default.
func uidRange(v string) (first, last int, ok bool) {
	if v == "" {
		return 0, 0, true
	}
	a, b, found := strings.Cut(v, "-")
	if !found {
		b = a
	}
	first, err1 := strconv.Atoi(strings.TrimSpace(a))
	last, err2 := strconv.Atoi(strings.TrimSpace(b))
	if err1 != nil || err2 != nil || first < 1 || last < first || last > maxBuildUID {
		return 0, 0, false
	}
	return first, last, true
}

func validPrefix(p string) bool {
	if len(p) < 3 || len(p) > 40 || p[0] < 'a' || p[0] > 'z' {
		return false
	}
	for _, r := range p {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-') {
			return false
		}
	}
	return true
}

func or(v, def string) string {
	if v == "" {
		return def
	}
	return v
}

// Logger returns the slog logger the configuration asks for, writing to w.
func (c Config) Logger(w io.Writer, service string) *slog.Logger {
	opts := &slog.HandlerOptions{Level: c.LogLevel}
	var h slog.Handler = slog.NewJSONHandler(w, opts)
	if c.LogFormat == "text" {
		h = slog.NewTextHandler(w, opts)
	}
	return slog.New(h).With("service", service)
}
