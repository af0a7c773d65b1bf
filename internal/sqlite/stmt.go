package sqlite

import (
	"context"
	"database/sql"
	"strings"
	"sync"
)

// Prepared statements. Parsing a statement's SQL cost about a quarter of
// the writer's CPU (BenchmarkStoreWebhook's profile: sqlite3_prepare_v2
// under every Exec), so the write connection keeps its statements
// prepared: a write's transaction (Tx) runs a statement it has met before
// as a prepared statement, and one it meets for the first time as plain
// SQL, marking its text to be prepared. The writer prepares the marked
// texts between two transactions, when the only write connection is free
// (database/sql would wait for it during one). SQLite prepares a kept
// statement again by itself when the schema changed (another process's
// migration), and database/sql does when the connection was replaced.

// maxPrepared bounds the statements kept. The package's statements are
// fixed texts, far fewer; a text beyond the bound runs unprepared.
const maxPrepared = 128

// Tx is a write transaction that runs statements through the write
// connection's prepared statements. Its other methods are *sql.Tx's.
type Tx struct {
	*sql.Tx
	stmts *stmtCache
}

// ExecContext is sql.Tx.ExecContext with query prepared once.
func (tx *Tx) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	if s := tx.stmts.lookup(query); s != nil {
		return tx.Tx.StmtContext(ctx, s).ExecContext(ctx, args...)
	}
	return tx.Tx.ExecContext(ctx, query, args...)
}

// QueryContext is sql.Tx.QueryContext with query prepared once.
func (tx *Tx) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	if s := tx.stmts.lookup(query); s != nil {
		return tx.Tx.StmtContext(ctx, s).QueryContext(ctx, args...)
	}
	return tx.Tx.QueryContext(ctx, query, args...)
}

// QueryRowContext is sql.Tx.QueryRowContext with query prepared once.
func (tx *Tx) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	if s := tx.stmts.lookup(query); s != nil {
		return tx.Tx.StmtContext(ctx, s).QueryRowContext(ctx, args...)
	}
	return tx.Tx.QueryRowContext(ctx, query, args...)
}

// stmtCache holds the write connection's prepared statements by SQL text,
// and the texts met since the writer last prepared.
type stmtCache struct {
	mu     sync.Mutex
	ready  map[string]*sql.Stmt
	wanted map[string]struct{}
}

func newStmtCache() *stmtCache {
	return &stmtCache{ready: map[string]*sql.Stmt{}, wanted: map[string]struct{}{}}
}

// lookup returns query's prepared statement, or nil after marking query
// to be prepared (within maxPrepared). A text of several statements (a
// migration) is never prepared: a prepared statement is one statement.
func (c *stmtCache) lookup(query string) *sql.Stmt {
	if strings.Contains(query, ";") {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if s, ok := c.ready[query]; ok {
		return s
	}
	if len(c.ready)+len(c.wanted) < maxPrepared {
		c.wanted[query] = struct{}{}
	}
	return nil
}

// prepare prepares the marked texts on wdb. The writer calls it between
// transactions. A text that fails to prepare (a table a newer migration
// adds, say) stays unprepared and is marked again when next run.
func (c *stmtCache) prepare(wdb *sql.DB) {
	c.mu.Lock()
	wanted := c.wanted
	if len(wanted) == 0 {
		c.mu.Unlock()
		return
	}
	c.wanted = map[string]struct{}{}
	c.mu.Unlock()
	for q := range wanted {
		s, err := wdb.PrepareContext(context.Background(), q)
		if err != nil {
			continue
		}
		c.mu.Lock()
		c.ready[q] = s
		c.mu.Unlock()
	}
}

// close closes the prepared statements.
func (c *stmtCache) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	closeStmts(c.ready)
}

// closeStmts closes the statements of m and empties it.
func closeStmts(m map[string]*sql.Stmt) {
	for q, s := range m {
		s.Close()
		delete(m, q)
	}
}

// readStmts holds the read pool's prepared statements by SQL text, for the
// reads every request makes (a record by ID, a claim): parsing their SQL
// was 7% of the dispatcher's CPU. database/sql prepares a statement
// on each read connection the first time it runs there, and again on a
// connection that replaced a closed one.
type readStmts struct {
	mu sync.Mutex
	m  map[string]*sql.Stmt
}

// queryRow is rdb.QueryRowContext with query prepared once; a query that
// cannot be prepared (or one beyond maxPrepared) runs as plain SQL, whose
// error the row reports.
func (c *readStmts) queryRow(ctx context.Context, rdb *sql.DB, query string, args ...any) *sql.Row {
	c.mu.Lock()
	s, ok := c.m[query]
	full := len(c.m) >= maxPrepared
	c.mu.Unlock()
	if !ok && !full {
		// Prepared outside the mutex: it waits for a free connection.
		if p, err := rdb.PrepareContext(ctx, query); err == nil {
			c.mu.Lock()
			if s, ok = c.m[query]; ok {
				p.Close() // another caller's came first
			} else {
				if c.m == nil {
					c.m = map[string]*sql.Stmt{}
				}
				c.m[query], s = p, p
			}
			c.mu.Unlock()
		}
	}
	if s == nil {
		return rdb.QueryRowContext(ctx, query, args...)
	}
	return s.QueryRowContext(ctx, args...)
}

// close closes the prepared statements.
func (c *readStmts) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	closeStmts(c.m)
}
