// Package embedded wires the embedded default: the SQLite queue, locks,
// idempotency records and build records, the blob directory, the catalog
// and the local executor, all under one data directory, so that separate
// ingest, dispatcher and reaper processes share one state.
//
// Layout of the data directory:
//
//	decap.db      SQLite: queue, dead letters, locks, idempotency, records
//	wake/         sockets through which processes wake queue receivers
//	blobs/        logs/<id>/console.log.gz, artifacts/<id>/artifacts.tar.gz
//	run/          one directory per build being run by the local executor
//	catalog/      bare clones of git build-scripts repositories
package embedded

import (
	"context"
	"errors"
	"fmt"
	"github.com/decap-ci/decap/internal/build"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/decap-ci/decap/internal/catalog"
	"github.com/decap-ci/decap/internal/config"
	"github.com/decap-ci/decap/internal/localexec"
	"github.com/decap-ci/decap/internal/localfs"
	"github.com/decap-ci/decap/internal/sqlite"
)

// Backend is the embedded default's state, opened from one data directory.
type Backend struct {
	DB          *sqlite.DB
	Queue       *sqlite.Queue
	Locks       *sqlite.Locks
	Idempotency *sqlite.Idempotency
	Records     *sqlite.Records
	Blobs       *localfs.Blobs
	Catalog     *catalog.Catalog
	// Executor is nil until OpenExecutor is called.
	Executor *localexec.Executor
	cfg      config.Config
	log      *slog.Logger
}

// Open opens (creating if needed) the data directory's database and blob
// store, and the catalog of cfg.BuildScripts (not yet scanned: call
// Catalog.Refresh or Catalog.Run).
func Open(cfg config.Config, logger *slog.Logger, now func() time.Time) (*Backend, error) {
	if err := os.MkdirAll(cfg.DataDir, 0o755); err != nil {
		return nil, fmt.Errorf("create data directory: %w", err)
	}
	db, err := sqlite.Open(filepath.Join(cfg.DataDir, "decap.db"), sqlite.Options{Now: now})
	if err != nil {
		return nil, err
	}
	blobs, err := localfs.NewBlobs(filepath.Join(cfg.DataDir, "blobs"))
	if err != nil {
		db.Close()
		return nil, err
	}
	cat, err := catalog.New(catalog.Config{
		Source: cfg.BuildScripts, CacheDir: filepath.Join(cfg.DataDir, "catalog"),
		Logger: logger.With("component", "catalog"), Now: now,
	})
	if err != nil {
		db.Close()
		return nil, err
	}
	return &Backend{
		DB: db, Queue: sqlite.NewQueue(db, sqlite.QueueOptions{}), Locks: sqlite.NewLocks(db),
		Idempotency: sqlite.NewIdempotency(db), Records: sqlite.NewRecords(db),
		Blobs: blobs, Catalog: cat, cfg: cfg, log: logger,
	}, nil
}

// OpenExecutor opens the local executor. The entrypoint binary is
// cfg.Entrypoint, or decap-entrypoint next to this program's executable.
func (b *Backend) OpenExecutor(now func() time.Time) (*localexec.Executor, error) {
	path := b.cfg.Entrypoint
	if path == "" {
		self, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("find decap-entrypoint: %w", err)
		}
		path = filepath.Join(filepath.Dir(self), "decap-entrypoint")
	}
	ex, err := localexec.New(localexec.Config{
		RunDir: filepath.Join(b.cfg.DataDir, "run"), BlobsDir: filepath.Join(b.cfg.DataDir, "blobs"),
		EntrypointPath: path, Scripts: b.Catalog, PollInterval: b.cfg.ReapInterval,
		Logger: b.log.With("component", "executor"), Now: now,
	})
	if err != nil {
		return nil, fmt.Errorf("local executor (set DECAP_ENTRYPOINT to the decap-entrypoint binary; `make build` makes bin/decap-entrypoint): %w", err)
	}
	b.Executor = ex
	return ex, nil
}

// Ping checks that the database answers; it is the readiness check.
func (b *Backend) Ping(ctx context.Context) error {
	_, err := b.Queue.Stats(ctx)
	return err
}

// Close closes the database.
func (b *Backend) Close() error { return b.DB.Close() }

// CatalogLoaded is a readiness check: the catalog has loaded a commit.
func CatalogLoaded(c *catalog.Catalog) func(context.Context) error {
	return func(context.Context) error {
		if c.Commit() == "" {
			if err := c.LastError(); err != nil {
				return fmt.Errorf("build-scripts repository not loaded yet: %w", err)
			}
			return errors.New("build-scripts repository not loaded yet")
		}
		return nil
	}
}

// FreshCatalog wraps a catalog whose Lookup refreshes once, at most every
// minAge, when a project is not found: a project added to the build-scripts
// repository is built at once rather than after the next periodic refresh.
func FreshCatalog(c *catalog.Catalog, minAge time.Duration) *Fresh {
	return &Fresh{c: c, minAge: minAge}
}

// Fresh is the catalog FreshCatalog returns.
type Fresh struct {
	c      *catalog.Catalog
	minAge time.Duration
	mu     sync.Mutex
}

// Lookup looks the project up, refreshing first if it is unknown and the
// catalog is older than minAge.
func (f *Fresh) Lookup(team, project string) (build.Descriptor, string, error) {
	d, commit, err := f.c.Lookup(team, project)
	if !errors.Is(err, build.ErrNotFound) {
		return d, commit, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if time.Since(f.c.RefreshedAt()) >= f.minAge {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if rerr := f.c.Refresh(ctx); rerr != nil {
			return d, commit, err
		}
	}
	return f.c.Lookup(team, project)
}
