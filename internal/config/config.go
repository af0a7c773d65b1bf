// Package config reads Decap's settings from DECAP_* environment variables,
// the same for every service, so one table in the README describes them all.
// Secrets may come from a file (VAR_FILE) instead of the variable itself and
// are never part of an error message.
package config

import (
	"fmt"
	"io"
	"log/slog"
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

	// GitHubToken lets Decap read private repositories' refs and post
	// commit statuses; GitHubAPIURL points at GitHub Enterprise (or a test
	// server); PublicURL is where people reach the UI (status links).
	GitHubToken, GitHubAPIURL, PublicURL string

	// Cap bounds running builds; 0 means no cap.
	Cap int
	// DispatchWorkers bounds decisions in flight per dispatcher.
	DispatchWorkers int
	// MaxDeferAge is how long a request may wait before it expires.
	MaxDeferAge time.Duration
	// Entrypoint is the decap-entrypoint binary the local executor runs.
	Entrypoint string
	// ReapInterval is how often the local reaper scans for ended builds.
	ReapInterval time.Duration

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

// Load reads the configuration through getenv. A value that cannot be parsed
// is an error naming the variable (never the value of a secret).
func Load(getenv func(string) string) (Config, error) {
	c := Config{
		Backend:         or(getenv("DECAP_BACKEND"), "embedded"),
		Prefix:          or(getenv("DECAP_PREFIX"), "decap"),
		Executor:        or(getenv("DECAP_EXECUTOR"), "local"),
		DataDir:         or(getenv("DECAP_DATA_DIR"), ".decap"),
		BuildScripts:    or(getenv("DECAP_BUILD_SCRIPTS"), "examples/build-scripts"),
		IngestAddr:      or(getenv("DECAP_ADDR"), "127.0.0.1:8080"),
		DispatcherAddr:  or(getenv("DECAP_DISPATCHER_ADDR"), "127.0.0.1:8081"),
		ReaperAddr:      or(getenv("DECAP_REAPER_ADDR"), "127.0.0.1:8082"),
		Entrypoint:      getenv("DECAP_ENTRYPOINT"),
		LogFormat:       or(getenv("DECAP_LOG_FORMAT"), "json"),
		Cap:             4,
		DispatchWorkers: 32,
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
	c.Cap = integer("DECAP_MAX_RUNNING_BUILDS", c.Cap, 0)
	c.DispatchWorkers = integer("DECAP_DISPATCH_WORKERS", c.DispatchWorkers, 1)
	c.WebhookSecret = []byte(secret("DECAP_GITHUB_WEBHOOK_SECRET"))
	c.APIToken = secret("DECAP_API_TOKEN")
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
	c.SessionTTL = dur("DECAP_SESSION_TTL", 12*time.Hour)
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
	return c, nil
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
