// Package catalog reads Decap's build-scripts repository: every
// <team>/<project>/project.json and <team>/<project>/build.sh, at one commit.
//
// A Catalog serves an immutable Snapshot. Refresh reads the source again and
// swaps in a new snapshot atomically; a refresh that fails leaves the previous
// snapshot in place, so readers always see one complete, consistent commit.
// Bad content never breaks the catalog: a project with a missing or invalid
// project.json or a missing build.sh is listed with the error that makes it
// unbuildable, and directories with hostile names are skipped (see
// Snapshot.Skipped). A refresh parses only the project.json files whose
// content it has not seen in the current catalog (they are cached by SHA-256),
// so a costly descriptor is paid for once, not on every refresh.
//
// # Sources
//
// Config.Source is interpreted, in this order, as:
//
//  1. "git+<location>": a git repository at <location>, which is passed to git
//     as is when it is a URL and made absolute otherwise. This is the way to
//     name a local bare or non-bare repository: "git+/srv/build-scripts.git".
//  2. "<scheme>://...", e.g. https://, http://, ssh://, git://, file://: a git
//     repository URL.
//  3. scp-like "[user@]host:path" (a colon before any slash), e.g.
//     "git@github.com:acme/build-scripts.git": a git repository.
//  4. Anything else: a local directory of plain files, read as it is now. A
//     directory that happens to be a git working tree is still read as plain
//     files; prefix it with "git+" to read its committed history instead. Write
//     "./a:b" for a relative directory whose name contains a colon.
//
// A git source is fetched into a bare repository under Config.CacheDir (one
// per source) and read at the fetched commit with git ls-tree and git
// cat-file; nothing is checked out. The commit of a git catalog is the commit
// SHA. A directory source has no history: its commit is "dir:" and the first 16
// hex digits of a SHA-256 over the sorted relative paths and contents of every
// file under its <team>/<project> directories (plus the project directories
// and skipped names themselves), so any edit changes it.
//
// # Names and hostile content
//
// Team and project directory names must pass build.ValidateName. Hidden
// entries (names starting with '.', such as .git or .github) are ignored
// silently; other invalid names (spaces, non-ASCII or non-UTF-8 bytes, a
// leading '-', more than build.MaxNameLen bytes) are skipped and reported,
// quoted and shortened, by Snapshot.Skipped: such names cannot be looked up or
// built, and are not safe to use as keys. Files at the team and project level
// are ignored. A project.json larger than build.MaxDescriptorSize is not read.
//
// A directory source follows symbolic links only when they resolve inside
// the directory (all reads go through os.Root); a project directory, team
// directory, project.json or build.sh whose link leaves it is reported as an
// error. A git source never follows symbolic links when scanning: a linked
// project directory, project.json or build.sh is an error for that project.
package catalog

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/decap-ci/decap/internal/build"
)

// refreshTimeout bounds one refresh started by Run, so a hung git transport
// cannot stop the refresh loop.
const refreshTimeout = 5 * time.Minute

// Config configures a Catalog.
type Config struct {
	// Source is a local directory or a git repository; see the package
	// comment for how it is interpreted.
	Source string
	// Branch is the branch of a git source to read; empty means the remote's
	// default branch (its HEAD). It must be empty for a directory source.
	Branch string
	// CacheDir holds the bare clones of git sources; required for them,
	// unused for directory sources. Several catalogs may share it; two
	// fetching the same source at the same moment may see one refresh fail
	// on git's ref lock, which the next refresh repairs.
	CacheDir string
	// Logger receives refresh failures and catalog changes; nil discards.
	Logger *slog.Logger
	// Now tells the time; nil means time.Now.
	Now func() time.Time
}

// source is where projects come from: a directory or a git repository.
type source interface {
	// scan reads the catalog. When the source is at commit prev already, it
	// may return a result with only the commit set.
	scan(ctx context.Context, prev string) (scanResult, error)
	// hasCommit reports whether export can read commit without a refresh.
	hasCommit(ctx context.Context, commit string) (bool, error)
	// export writes <team>/<project> at commit under dest. Names are valid.
	export(ctx context.Context, commit, team, project, dest string) error
}

type scanResult struct {
	commit     string
	candidates []candidate
	skipped    []string
}

// Catalog serves the projects of a build-scripts repository. Its methods are
// safe for concurrent use.
type Catalog struct {
	src    source
	desc   string // the source, for logs, without credentials
	logger *slog.Logger
	now    func() time.Time

	snap atomic.Pointer[Snapshot]
	// refreshing is a one-slot semaphore: refreshes run one at a time.
	refreshing chan struct{}
	// wake carries RequestRefresh to Run.
	wake chan struct{}

	// parsed caches descriptors by content; only Refresh, one at a time,
	// uses it.
	parsed *descriptorCache

	mu      sync.Mutex
	lastErr error
}

// New returns a Catalog for cfg. It does not read the source: until the first
// successful Refresh the catalog is empty and Lookup fails with
// build.ErrUnavailable. An empty or malformed Source, a directory source that
// is not an existing directory, a git source without CacheDir, or an invalid
// Branch is an error wrapping build.ErrInvalid.
func New(cfg Config) (*Catalog, error) {
	kind, loc, err := parseSource(cfg.Source)
	if err != nil {
		return nil, err
	}
	c := &Catalog{
		logger:     cfg.Logger,
		now:        cfg.Now,
		refreshing: make(chan struct{}, 1),
		wake:       make(chan struct{}, 1),
		parsed:     newDescriptorCache(build.ParseDescriptor),
	}
	if c.logger == nil {
		c.logger = slog.New(slog.DiscardHandler)
	}
	if c.now == nil {
		c.now = time.Now
	}
	switch kind {
	case kindDir:
		if cfg.Branch != "" {
			return nil, fmt.Errorf("%w: branch %q set for directory source %s", build.ErrInvalid, cfg.Branch, loc)
		}
		if err := checkDir(loc); err != nil {
			return nil, err
		}
		c.src = &dirSource{path: loc}
		c.desc = loc
	case kindGit:
		if cfg.CacheDir == "" {
			return nil, fmt.Errorf("%w: git source %s needs a cache directory", build.ErrInvalid, redactURL(loc))
		}
		if cfg.Branch != "" {
			if err := build.ValidateRef(cfg.Branch); err != nil {
				return nil, fmt.Errorf("branch: %w", err)
			}
		}
		cache, err := filepath.Abs(cfg.CacheDir)
		if err != nil {
			return nil, fmt.Errorf("%w: cache directory %q: %v", build.ErrInvalid, cfg.CacheDir, err)
		}
		sum := sha256.Sum256([]byte(loc))
		c.src = newGitSource(loc, cfg.Branch, cache, filepath.Join(cache, hex.EncodeToString(sum[:8])+".git"))
		c.desc = redactURL(loc)
		if cfg.Branch != "" {
			c.desc += " (" + cfg.Branch + ")"
		}
	}
	c.snap.Store(&Snapshot{})
	return c, nil
}

// checkDir tells a directory source that names no directory: a mistyped
// setting, which no later refresh repairs, is an error at start rather than
// a catalog that never loads. A directory that goes away later only fails
// refreshes (build.ErrUnavailable), and the catalog keeps what it had.
func checkDir(dir string) error {
	fi, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("%w: build-scripts directory %s does not exist", build.ErrInvalid, dir)
	case err != nil:
		return fmt.Errorf("%w: build-scripts directory %s: %v", build.ErrInvalid, dir, errors.Unwrap(err))
	case !fi.IsDir():
		return fmt.Errorf("%w: build-scripts directory %s is not a directory", build.ErrInvalid, dir)
	}
	return nil
}

// Refresh reads the source and, on success, atomically replaces the snapshot
// (or, when the source is still at the same commit, only its refresh time). On failure the previous snapshot stays in place and the error is
// returned: it wraps build.ErrUnavailable when the source could not be read
// (git unreachable, directory missing), or ctx's error. Content problems are
// never errors: they are recorded per project. Refreshes run one at a time;
// a caller waits for one in progress.
func (c *Catalog) Refresh(ctx context.Context) error {
	select {
	case c.refreshing <- struct{}{}:
	case <-ctx.Done():
		return fmt.Errorf("refresh catalog: %w", ctx.Err())
	}
	defer func() { <-c.refreshing }()

	prev := c.snap.Load()
	res, err := c.src.scan(ctx, prev.commit)
	c.mu.Lock()
	c.lastErr = err
	c.mu.Unlock()
	if err != nil {
		return err
	}
	now := c.now()
	if res.commit == prev.commit && prev.commit != "" {
		next := *prev
		next.refreshedAt = now
		c.snap.Store(&next)
		return nil
	}
	next := newSnapshot(res.commit, c.parsed.projects(res.candidates), res.skipped, now)
	c.snap.Store(next)
	invalid := 0
	for _, p := range next.projects {
		if p.Error != "" {
			invalid++
		}
	}
	c.logger.Info("catalog updated", "source", c.desc, "commit", next.commit,
		"projects", len(next.projects), "unbuildable", invalid, "skipped", len(next.skipped))
	if len(next.skipped) > 0 {
		c.logger.Warn("catalog entries skipped", "commit", next.commit, "entries", next.skipped)
	}
	return nil
}

// RequestRefresh asks Run to refresh now instead of at its next tick, without
// waiting; requests made while one is pending are merged. It suits handlers
// such as POST /hooks/buildscripts, whose request context ends before a
// refresh would.
func (c *Catalog) RequestRefresh() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// Run refreshes the catalog every interval, and whenever RequestRefresh is
// called, until ctx is done. It refreshes at once when nothing has been
// loaded yet. Failures are logged once per distinct error while they last, and
// the recovery is logged once; nothing is returned.
func (c *Catalog) Run(ctx context.Context, interval time.Duration) {
	if interval <= 0 {
		interval = time.Minute
	}
	first := interval
	if c.Commit() == "" {
		first = 0
	}
	t := time.NewTimer(first)
	defer t.Stop()
	var (
		failing  string // the last error logged, "" while refreshes succeed
		failures int
		since    time.Time
	)
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-c.wake:
		}
		rctx, cancel := context.WithTimeout(ctx, refreshTimeout)
		err := c.Refresh(rctx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		switch {
		case err != nil:
			if failures == 0 {
				since = c.now()
			}
			failures++
			if msg := err.Error(); msg != failing {
				failing = msg
				c.logger.Error("catalog refresh failed; serving the previous commit",
					"source", c.desc, "commit", c.Commit(), "err", err)
			}
		case failures > 0:
			c.logger.Info("catalog refresh recovered", "source", c.desc, "commit", c.Commit(),
				"failures", failures, "since", since)
			failing, failures = "", 0
		}
		t.Reset(interval)
	}
}

// Snapshot returns the current snapshot, never nil. It is immutable: hold it
// to read several things at one commit.
func (c *Catalog) Snapshot() *Snapshot { return c.snap.Load() }

// Commit returns the current catalog commit, "" before the first successful
// refresh.
func (c *Catalog) Commit() string { return c.snap.Load().commit }

// Projects returns every project of the current snapshot; see
// Snapshot.Projects.
func (c *Catalog) Projects() []build.Project { return c.snap.Load().Projects() }

// Teams returns the teams of the current snapshot; see Snapshot.Teams.
func (c *Catalog) Teams() []string { return c.snap.Load().Teams() }

// Skipped returns the entries of the current snapshot skipped for their
// names; see Snapshot.Skipped.
func (c *Catalog) Skipped() []string { return c.snap.Load().Skipped() }

// RefreshedAt returns when a refresh last succeeded, zero if none has.
func (c *Catalog) RefreshedAt() time.Time { return c.snap.Load().refreshedAt }

// LastError returns the error of the most recent refresh, nil if it
// succeeded or none ran yet. Readiness checks may report it.
func (c *Catalog) LastError() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lastErr
}

// Lookup returns the descriptor of team/project and the commit it was read
// at, both from one snapshot. Errors: build.ErrUnavailable before the first
// successful refresh; build.ErrInvalid for a malformed name or an unbuildable
// project (the message says why); build.ErrNotFound for an unknown project.
func (c *Catalog) Lookup(team, project string) (build.Descriptor, string, error) {
	s := c.snap.Load()
	d, err := s.Lookup(team, project)
	return d, s.commit, err
}

// Export writes the files of team/project as they were at commit into dest,
// keeping their layout: dest/<team>/<project>/... . Regular files keep their
// executable bit; dest is created if needed and existing files are
// overwritten.
//
// For a git source, commit is a hex commit ID; a commit not in the cache
// triggers one Refresh first, so a commit another replica already saw can be
// exported. Symbolic links in the project are recreated only when they resolve
// inside dest, and tar entries that would land outside dest are refused.
//
// A directory source has no history: Export copies the current files whatever
// commit says, following symbolic links only inside the source root and
// writing their targets as regular files.
//
// Errors: build.ErrInvalid for a malformed team, project or commit, or
// unsafe repository content; build.ErrNotFound when the commit or the
// project at that commit does not exist; build.ErrUnavailable when git cannot
// be reached.
func (c *Catalog) Export(ctx context.Context, commit, team, project, dest string) error {
	if err := build.ValidateName("team", team); err != nil {
		return err
	}
	if err := build.ValidateName("project", project); err != nil {
		return err
	}
	ok, err := c.src.hasCommit(ctx, commit)
	if err != nil {
		return err
	}
	if !ok {
		if err := c.Refresh(ctx); err != nil {
			return err
		}
		if ok, err = c.src.hasCommit(ctx, commit); err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("export %s: commit %s: %w", build.ProjectKey(team, project), commit, build.ErrNotFound)
		}
	}
	return c.src.export(ctx, commit, team, project, dest)
}
