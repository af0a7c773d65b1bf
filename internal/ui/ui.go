// Package ui is Decap's status UI: server-rendered HTML pages (html/template)
// over the build records, the catalog, the queue, the locks and the dispatch
// gate, with a little hand-written CSS and JavaScript embedded in the binary.
//
// The pages only read. Everything that changes state — requesting or
// cancelling a build, force-releasing a lock, pausing dispatch, signing in —
// is done by the browser through ingest's JSON API with fetch, the session
// cookie and the X-Decap-CSRF header; ingest authorizes it, not this package.
// Who may read the pages is ingest's decision too (Deps.Auth): every page
// but the sign-in page and the static files goes through it.
package ui

import (
	"bytes"
	"context"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"html/template"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/decap-ci/decap/internal/build"
)

// Records reads build records. Get fails with build.ErrNotFound for an
// unknown build; the lists follow build.Records (ListProject newest first,
// paged by cursor; AverageDuration reports how many builds it averaged, 0 for
// none); Waiting returns a page of the queued and deferred records, oldest
// first, and how many there are.
type Records interface {
	Get(ctx context.Context, id build.ID) (build.Record, error)
	ListProject(ctx context.Context, team, project string, limit int, cursor string) ([]build.Record, string, error)
	AverageDuration(ctx context.Context, team, project string, n int) (time.Duration, int, error)
	Running(ctx context.Context) ([]build.Record, error)
	Waiting(ctx context.Context, offset, limit int) ([]build.Record, int, error)
}

// Catalog lists the projects of the build-scripts repository, buildable or
// not, sorted by key, and the entries it skipped for their names.
type Catalog interface {
	Projects() []build.Project
	Skipped() []string
}

// QueueStats counts the messages of the build queue.
type QueueStats interface {
	Stats(ctx context.Context) (build.QueueStats, error)
}

// Locks lists the held branch locks, ordered by key.
type Locks interface {
	List(ctx context.Context) ([]build.Lease, error)
}

// Gate reads the dispatch gate.
type Gate interface {
	Get(ctx context.Context) (build.GateState, error)
}

// Pulls lists a project's open pull requests, by number (the
// build.PullRequests store).
type Pulls interface {
	ListOpen(ctx context.Context, team, project string) ([]build.PullRequestState, error)
}

// Auth decides who may read the pages (ingest's sessions).
type Auth interface {
	// Pages wraps a page's handler: it lets through a reader with a valid
	// session (or everyone, where reads are public) and sends anyone else
	// to /ui/login?next=<the page>.
	Pages(next echo.HandlerFunc) echo.HandlerFunc
	// SignedIn reports whether Pages found a valid session on c.
	SignedIn(c echo.Context) bool
}

// Config configures the UI.
type Config struct {
	// AuthDisabled says ingest lets mutations through without a token; the
	// UI then hides its sign-in links.
	AuthDisabled bool
	// PageSize is how many builds a project page lists (default 20).
	PageSize int
	// RecentBuilds is how many builds the dashboard lists (default 20).
	RecentBuilds int
	// RecentPerProject is how many of each project's newest builds the
	// dashboard considers (default 5).
	RecentPerProject int
	// AverageOver is how many successful builds the progress estimate
	// averages (default 10, as the JSON API does).
	AverageOver int
	// Timeout bounds the backend reads of one page (default 10s).
	Timeout time.Duration
	// LogTailBytes is how much of a finished build's log its page loads
	// (default 2 MiB, at most 4 MiB: ingest's ?tail=); the raw log has the
	// rest. LogMaxLines is how many lines the page keeps of a log it
	// follows (default 20000), dropping the oldest.
	LogTailBytes int
	LogMaxLines  int
}

// Deps are the UI's collaborators. Any of Records, Catalog, Queue, Locks and
// Gate may be nil (a nil interface, not a typed nil pointer): the panels that
// need it then say "not available". A nil Auth lets everyone read every page
// (tests, and a UI mounted behind another guard).
type Deps struct {
	Records Records
	Catalog Catalog
	Queue   QueueStats
	Locks   Locks
	Gate    Gate
	// Pulls, when set, lists the open pull requests on a project's page.
	Pulls Pulls
	// Webhooks, when set, lists the outgoing webhooks (/ui/webhooks).
	Webhooks Webhooks
	Auth     Auth
	Logger   *slog.Logger
	Now      func() time.Time
}

// UI serves the status pages.
type UI struct {
	cfg    Config
	deps   Deps
	log    *slog.Logger
	now    func() time.Time
	pages  map[string]*template.Template
	static fs.FS
	// etags are the static files' content hashes, also their URLs' ?v=.
	etags map[string]string
}

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// pageNames are the templates/*.html that render whole pages; each is
// parsed together with layout.html.
var pageNames = []string{"dashboard", "teams", "team", "project", "build", "builds", "queue", "locks", "webhooks", "login", "error"}

// New returns a UI; it panics only if the embedded templates are broken,
// which the package's tests rule out.
func New(cfg Config, deps Deps) *UI {
	if cfg.PageSize <= 0 {
		cfg.PageSize = 20
	}
	if cfg.RecentBuilds <= 0 {
		cfg.RecentBuilds = 20
	}
	if cfg.RecentPerProject <= 0 {
		cfg.RecentPerProject = 5
	}
	if cfg.AverageOver <= 0 {
		cfg.AverageOver = 10
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Second
	}
	if cfg.LogTailBytes <= 0 || cfg.LogTailBytes > 4<<20 {
		cfg.LogTailBytes = 2 << 20
	}
	if cfg.LogMaxLines <= 0 {
		cfg.LogMaxLines = 20000
	}
	if deps.Logger == nil {
		deps.Logger = slog.New(slog.DiscardHandler)
	}
	if deps.Now == nil {
		deps.Now = time.Now
	}
	static, err := fs.Sub(staticFS, "static")
	if err != nil {
		panic(fmt.Sprintf("ui: embedded static files: %v", err))
	}
	u := &UI{cfg: cfg, deps: deps, log: deps.Logger, now: deps.Now, static: static, etags: map[string]string{}}
	err = fs.WalkDir(static, ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := fs.ReadFile(static, path)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(data)
		u.etags[path] = hex.EncodeToString(sum[:6])
		return nil
	})
	if err != nil {
		panic(fmt.Sprintf("ui: embedded static files: %v", err))
	}
	u.pages = map[string]*template.Template{}
	for _, name := range pageNames {
		t, err := template.New(name).Funcs(u.funcs()).ParseFS(templateFS, "templates/layout.html", "templates/"+name+".html")
		if err != nil {
			panic(fmt.Sprintf("ui: template %s: %v", name, err))
		}
		u.pages[name] = t
	}
	return u
}

// Register mounts the UI on e: GET / (the dashboard) and GET /ui/...,
// including /ui/static/*. Unknown /ui/ paths answer an HTML 404 page.
// Every page but /ui/login and the static files is read through Deps.Auth.
func (u *UI) Register(e *echo.Echo) {
	e.GET("/", u.page(u.dashboard))
	g := e.Group("/ui")
	g.GET("", func(c echo.Context) error { return c.Redirect(http.StatusFound, "/") })
	g.GET("/", func(c echo.Context) error { return c.Redirect(http.StatusFound, "/") })
	g.GET("/teams", u.page(u.teams))
	g.GET("/teams/:team", u.page(u.team))
	g.GET("/projects/:team/:project", u.page(u.project))
	g.GET("/builds", u.page(u.allBuilds))
	g.GET("/builds/:id", u.page(u.build))
	g.GET("/queue", u.page(u.queue))
	g.GET("/locks", u.page(u.locks))
	g.GET("/webhooks", u.page(u.webhooks))
	g.GET("/login", u.handle(u.login))
	g.GET("/static/*", u.serveStatic)
	g.GET("/*", u.page(func(c echo.Context) error {
		return fmt.Errorf("%w: no page at %s", errNoPage, c.Request().URL.Path)
	}))
	// A browser's GET of a path that is no route at all (a mistyped URL)
	// gets the 404 page too; everything else keeps the server's own
	// answer (ingest's JSON). Wrapping the error handler, rather than a
	// catch-all route, turns no other method's 404 into a 405.
	next := e.HTTPErrorHandler
	notFound := u.handle(func(c echo.Context) error {
		return fmt.Errorf("%w: no page at %s", errNoPage, c.Request().URL.Path)
	})
	e.HTTPErrorHandler = func(err error, c echo.Context) {
		if c.Path() == "" && errors.Is(err, echo.ErrNotFound) && browserPage(c.Request()) && !c.Response().Committed {
			if herr := notFound(c); herr == nil {
				return
			}
		}
		next(err, c)
	}
}

// browserPage reports whether r is a browser's request for a page: a GET
// or HEAD that accepts HTML, outside the API's and the hooks' paths.
func browserPage(r *http.Request) bool {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return false
	}
	if p := r.URL.Path; strings.HasPrefix(p, "/api/") || strings.HasPrefix(p, "/hooks/") {
		return false
	}
	return strings.Contains(r.Header.Get("Accept"), "text/html")
}

// page is handle behind Deps.Auth.
func (u *UI) page(h echo.HandlerFunc) echo.HandlerFunc {
	if u.deps.Auth == nil {
		return u.handle(h)
	}
	return u.deps.Auth.Pages(u.handle(h))
}

// errNoPage is a path under /ui/ that names no page: 404.
var errNoPage = errors.New("not found")

// handle turns a page handler's error into an HTML error page with a
// fitting status, decided here and only here.
func (u *UI) handle(h echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		err := h(c)
		if err == nil {
			return nil
		}
		status, title := http.StatusInternalServerError, "Something went wrong"
		switch {
		case errors.Is(err, build.ErrNotFound), errors.Is(err, errNoPage):
			status, title = http.StatusNotFound, "Not found"
		case errors.Is(err, build.ErrInvalid):
			status, title = http.StatusBadRequest, "Bad request"
		case errors.Is(err, build.ErrUnavailable), errors.Is(err, context.DeadlineExceeded):
			status, title = http.StatusServiceUnavailable, "Backend unavailable"
		}
		msg := err.Error()
		if status >= 500 {
			u.log.Error("page failed", "path", c.Request().URL.Path, "status", status, "err", err)
			if status == http.StatusInternalServerError {
				msg = "internal error"
			}
		}
		return u.render(c, status, "error", title, "", errorView{Status: status, Title: title, Message: msg})
	}
}

// layout is what every page's frame needs; Body is the page's own view.
type layout struct {
	Title        string
	Nav          string
	SignedIn     bool
	AuthDisabled bool
	Body         any
}

// render executes a page into a buffer first, so that a template error
// becomes a clean 500 instead of half a page.
func (u *UI) render(c echo.Context, status int, page, title, nav string, body any) error {
	data := layout{Title: title, Nav: nav, SignedIn: u.signedIn(c), AuthDisabled: u.cfg.AuthDisabled, Body: body}
	var buf bytes.Buffer
	if err := u.pages[page].ExecuteTemplate(&buf, "layout", data); err != nil {
		u.log.Error("render page", "page", page, "err", err)
		return c.String(http.StatusInternalServerError, "internal error: the page could not be rendered")
	}
	h := c.Response().Header()
	h.Set(echo.HeaderContentSecurityPolicy, contentSecurityPolicy)
	h.Set(echo.HeaderXContentTypeOptions, "nosniff")
	h.Set(echo.HeaderXFrameOptions, "DENY")
	h.Set("Referrer-Policy", "same-origin")
	h.Set(echo.HeaderCacheControl, "no-store")
	return c.HTMLBlob(status, buf.Bytes())
}

// sessionCookie is the cookie ingest sets on POST /api/v1/session. Without
// an Auth the UI only looks whether it is there, to offer "Sign out"
// instead of "Sign in".
const sessionCookie = "decap_session"

// signedIn reports whether c's reader has a session, to offer "Sign out".
func (u *UI) signedIn(c echo.Context) bool {
	if u.deps.Auth != nil {
		return u.deps.Auth.SignedIn(c)
	}
	_, err := c.Cookie(sessionCookie)
	return err == nil
}

// contentSecurityPolicy allows only this origin's own scripts, styles and
// connections: no inline script, no inline style, nothing external.
const contentSecurityPolicy = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

func (u *UI) serveStatic(c echo.Context) error {
	name := c.Param("*")
	tag, ok := u.etags[name]
	if !ok {
		return u.handle(func(echo.Context) error { return fmt.Errorf("%w: no static file %q", errNoPage, name) })(c)
	}
	f, err := u.static.Open(name)
	if err != nil {
		return fmt.Errorf("open static %s: %w", name, err)
	}
	defer f.Close()
	h := c.Response().Header()
	h.Set(echo.HeaderXContentTypeOptions, "nosniff")
	h.Set("ETag", `"`+tag+`"`)
	if c.QueryParam("v") == tag {
		h.Set(echo.HeaderCacheControl, "public, max-age=31536000, immutable")
	} else {
		h.Set(echo.HeaderCacheControl, "no-cache")
	}
	http.ServeContent(c.Response(), c.Request(), name, time.Time{}, f.(io.ReadSeeker))
	return nil
}

// ctx returns the request's context bounded by the page timeout.
func (u *UI) ctx(c echo.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(c.Request().Context(), u.cfg.Timeout)
}
