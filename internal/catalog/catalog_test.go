package catalog_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/decap-ci/decap/internal/build"
	"github.com/decap-ci/decap/internal/catalog"
)

// The consumers' Catalog interfaces (ingest, dispatch) are met.
var _ interface {
	Lookup(team, project string) (build.Descriptor, string, error)
	Projects() []build.Project
	Refresh(ctx context.Context) error
} = (*catalog.Catalog)(nil)

const (
	validJSON = `{"buildImage": "debian:bookworm-slim", "repoManager": "github"}`
	script    = "#!/bin/sh\necho building\n"
)

// writeFiles creates files under root; build.sh files are executable.
func writeFiles(t *testing.T, root string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		mode := os.FileMode(0o644)
		if filepath.Base(name) == "build.sh" {
			mode = 0o755
		}
		if err := os.WriteFile(p, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
	}
}

func symlink(t *testing.T, target, name string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(name), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, name); err != nil {
		t.Fatal(err)
	}
}

func newCatalog(t *testing.T, cfg catalog.Config) *catalog.Catalog {
	t.Helper()
	c, err := catalog.New(cfg)
	if err != nil {
		t.Fatalf("New(%+v): %v", cfg, err)
	}
	return c
}

func refresh(t *testing.T, c *catalog.Catalog) {
	t.Helper()
	if err := c.Refresh(t.Context()); err != nil {
		t.Fatalf("Refresh: %v", err)
	}
}

// hostileRepo builds a directory with valid, invalid and hostile entries and
// returns it with the path of a directory outside it.
func hostileRepo(t *testing.T) (root, outside string) {
	t.Helper()
	base := t.TempDir()
	root = filepath.Join(base, "repo")
	outside = filepath.Join(base, "outside")
	writeFiles(t, outside, map[string]string{
		"proj/project.json": validJSON,
		"proj/build.sh":     script,
		"secret.json":       validJSON,
	})
	long := strings.Repeat("a", build.MaxNameLen+1)
	writeFiles(t, root, map[string]string{
		"README.md":                      "not a team",
		"teamfile":                       "a team that is a file",
		".git/HEAD":                      "ref: refs/heads/main\n",
		".hidden/proj/project.json":      validJSON,
		".hidden/proj/build.sh":          script,
		"good/notes.txt":                 "not a project",
		"good/ok/project.json":           validJSON,
		"good/ok/build.sh":               script,
		"good/ok/lib/helper.sh":          "echo help\n",
		"good/regex/project.json":        `{"buildImage": "golang:1.26", "managedRefRegex": "main|release/.+"}`,
		"good/regex/build.sh":            script,
		"good/.github/project.json":      validJSON,
		"good/.github/build.sh":          script,
		"bad/invalid-json/project.json":  `{"buildImage": `,
		"bad/invalid-json/build.sh":      script,
		"bad/no-image/project.json":      `{"repoManager": "github"}`,
		"bad/no-image/build.sh":          script,
		"bad/bad-regex/project.json":     `{"buildImage": "x", "managedRefRegex": "release/(.+"}`,
		"bad/bad-regex/build.sh":         script,
		"bad/unknown-field/project.json": `{"buildImage": "x", "managedRefRegexp": "main"}`,
		"bad/unknown-field/build.sh":     script,
		"bad/no-json/build.sh":           script,
		"bad/no-script/project.json":     validJSON,
		"bad/empty/.keep":                "",
		"bad/huge/project.json":          `{"buildImage": "x", "repoDescription": "` + strings.Repeat("x", build.MaxDescriptorSize) + `"}`,
		"bad/huge/build.sh":              script,
		"bad/json-dir/project.json/x":    "",
		"bad/json-dir/build.sh":          script,
		"bad/script-dir/project.json":    validJSON,
		"bad/script-dir/build.sh/x":      "",
		"bad/json-link-out/build.sh":     script,
		"bad name/proj/project.json":     validJSON,
		"bad name/proj/build.sh":         script,
		"good/has space/project.json":    validJSON,
		"good/-dash/project.json":        validJSON,
		"good/" + long + "/project.json": validJSON,
		"good/\xff\xfe/project.json":     validJSON,
		"good/ünïcode/project.json":      validJSON,
	})
	symlink(t, filepath.Join(outside, "secret.json"), filepath.Join(root, "bad/json-link-out/project.json"))
	symlink(t, filepath.Join(outside, "proj"), filepath.Join(root, "bad/escape"))
	symlink(t, "../../outside/proj", filepath.Join(root, "bad/escape-relative"))
	symlink(t, "ok", filepath.Join(root, "good/linked"))
	symlink(t, outside, filepath.Join(root, "outteam"))
	return root, outside
}

func TestDirectorySource(t *testing.T) {
	t.Parallel()
	root, _ := hostileRepo(t)
	c := newCatalog(t, catalog.Config{Source: root})
	refresh(t, c)

	if got := c.Commit(); !regexp.MustCompile(`^dir:[0-9a-f]{16}$`).MatchString(got) {
		t.Errorf("Commit() = %q, want dir: and 16 hex digits", got)
	}
	if got, want := c.Teams(), []string{"bad", "good"}; !reflect.DeepEqual(got, want) {
		t.Errorf("Teams() = %q, want %q", got, want)
	}

	// The project error, "" for a buildable project; every project listed.
	want := map[string]string{
		"bad/bad-regex":       "project.json: managedRefRegex does not compile",
		"bad/empty":           "project.json is missing; build.sh is missing",
		"bad/escape":          "project directory is a symbolic link that leaves the repository",
		"bad/escape-relative": "project directory is a symbolic link that leaves the repository",
		"bad/huge":            fmt.Sprintf("more than %d", build.MaxDescriptorSize),
		"bad/invalid-json":    "project.json: line 1, column 15: unexpected end of JSON input",
		"bad/json-dir":        "project.json is not a regular file",
		"bad/json-link-out":   "project.json is a symbolic link that leaves the repository",
		"bad/no-image":        "buildImage is required",
		"bad/no-json":         "project.json is missing",
		"bad/no-script":       "build.sh is missing",
		"bad/script-dir":      "build.sh is not a regular file",
		"bad/unknown-field":   `unknown field "managedRefRegexp"`,
		"good/linked":         "",
		"good/ok":             "",
		"good/regex":          "",
	}
	projects := c.Projects()
	var keys, wantKeys []string
	for _, p := range projects {
		keys = append(keys, p.Key())
	}
	for k := range want {
		wantKeys = append(wantKeys, k)
	}
	slices.Sort(wantKeys)
	if !reflect.DeepEqual(keys, wantKeys) {
		t.Fatalf("project keys = %q, want %q", keys, wantKeys)
	}
	for _, p := range projects {
		t.Run(p.Key(), func(t *testing.T) {
			t.Parallel()
			wantErr := want[p.Key()]
			if wantErr == "" {
				if p.Error != "" || p.Descriptor == nil {
					t.Fatalf("project error = %q, descriptor = %v, want buildable", p.Error, p.Descriptor)
				}
				return
			}
			if !strings.Contains(p.Error, wantErr) {
				t.Errorf("project error = %q, want it to contain %q", p.Error, wantErr)
			}
			if strings.HasPrefix(p.Error, "invalid:") {
				t.Errorf("project error = %q, want no sentinel prefix", p.Error)
			}
			if p.Descriptor != nil {
				t.Errorf("descriptor = %+v, want nil for an unbuildable project", p.Descriptor)
			}
		})
	}

	skipped := c.Snapshot().Skipped()
	wantSkipped := []string{
		`"bad name": team "bad name" contains ' '`,
		`"good/has space": project "has space" contains ' '`,
		`"good/-dash": project "-dash" starts with "-"`,
		`"good/aaaa`, // long names are shortened
		`"good/\xff\xfe": project`,
		`"good/ünïcode": project "ünïcode" contains 'ü'`,
		`"outteam": team directory is a symbolic link that leaves the repository`,
	}
	if len(skipped) != len(wantSkipped) {
		t.Errorf("Skipped() = %q, want %d entries", skipped, len(wantSkipped))
	}
	for _, w := range wantSkipped {
		found := false
		for _, s := range skipped {
			found = found || strings.HasPrefix(s, w)
		}
		if !found {
			t.Errorf("Skipped() = %q, want an entry starting with %q", skipped, w)
		}
	}
	for _, s := range skipped {
		if len(s) > 200 {
			t.Errorf("skipped entry is %d bytes long, want it shortened: %q", len(s), s)
		}
	}
}

func TestLookup(t *testing.T) {
	t.Parallel()
	root, _ := hostileRepo(t)
	c := newCatalog(t, catalog.Config{Source: root})
	if _, _, err := c.Lookup("good", "ok"); !errors.Is(err, build.ErrUnavailable) {
		t.Errorf("Lookup before the first refresh: error = %v, want build.ErrUnavailable", err)
	}
	refresh(t, c)
	tests := []struct {
		name, team, project string
		wantErr             error
		wantMsg             string
		wantImage           string
	}{
		{name: "buildable", team: "good", project: "ok", wantImage: "debian:bookworm-slim"},
		{name: "through a symlink inside", team: "good", project: "linked", wantImage: "debian:bookworm-slim"},
		{name: "invalid descriptor", team: "bad", project: "bad-regex", wantErr: build.ErrInvalid, wantMsg: "managedRefRegex does not compile"},
		{name: "missing build.sh", team: "bad", project: "no-script", wantErr: build.ErrInvalid, wantMsg: "build.sh is missing"},
		{name: "unknown project", team: "good", project: "nope", wantErr: build.ErrNotFound},
		{name: "unknown team", team: "nobody", project: "ok", wantErr: build.ErrNotFound},
		{name: "hidden", team: "good", project: ".github", wantErr: build.ErrInvalid},
		{name: "dot-dot", team: "good", project: "..", wantErr: build.ErrInvalid},
		{name: "space", team: "bad name", project: "proj", wantErr: build.ErrInvalid},
		{name: "empty", team: "", project: "", wantErr: build.ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			d, commit, err := c.Lookup(tt.team, tt.project)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Lookup(%q, %q) error = %v, want %v", tt.team, tt.project, err, tt.wantErr)
			}
			if err != nil && !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("Lookup(%q, %q) error = %q, want it to contain %q", tt.team, tt.project, err, tt.wantMsg)
			}
			if d.BuildImage != tt.wantImage {
				t.Errorf("Lookup(%q, %q) buildImage = %q, want %q", tt.team, tt.project, d.BuildImage, tt.wantImage)
			}
			if commit != c.Commit() {
				t.Errorf("Lookup(%q, %q) commit = %q, want %q", tt.team, tt.project, commit, c.Commit())
			}
		})
	}
	d, _, err := c.Lookup("good", "regex")
	if err != nil {
		t.Fatal(err)
	}
	if !d.Manages("release/1.0") || d.Manages("main-old") {
		t.Errorf("Lookup(good, regex) descriptor manages release/1.0: %v, main-old: %v; want true, false",
			d.Manages("release/1.0"), d.Manages("main-old"))
	}
}

func TestDirectoryRefreshPicksUpChanges(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	writeFiles(t, root, map[string]string{"acme/app/project.json": validJSON, "acme/app/build.sh": script})
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); now = now.Add(time.Minute); return now }
	c := newCatalog(t, catalog.Config{Source: root, Now: clock})
	refresh(t, c)
	first, firstAt := c.Commit(), c.RefreshedAt()

	steps := []struct {
		name       string
		change     func()
		wantChange bool
		check      func(t *testing.T)
	}{
		{name: "nothing changed", change: func() {}},
		{name: "build.sh edited", wantChange: true, change: func() {
			writeFiles(t, root, map[string]string{"acme/app/build.sh": script + "echo more\n"})
		}},
		{name: "helper file added", wantChange: true, change: func() {
			writeFiles(t, root, map[string]string{"acme/app/lib/x.sh": "x"})
		}},
		{name: "empty project added", wantChange: true, change: func() {
			if err := os.MkdirAll(filepath.Join(root, "acme/new"), 0o755); err != nil {
				t.Fatal(err)
			}
		}, check: func(t *testing.T) {
			if _, _, err := c.Lookup("acme", "new"); !errors.Is(err, build.ErrInvalid) {
				t.Errorf("Lookup(acme, new) error = %v, want build.ErrInvalid", err)
			}
		}},
		{name: "project.json broken", wantChange: true, change: func() {
			writeFiles(t, root, map[string]string{"acme/app/project.json": `{"buildImage": ""}`})
		}, check: func(t *testing.T) {
			if _, _, err := c.Lookup("acme", "app"); !errors.Is(err, build.ErrInvalid) {
				t.Errorf("Lookup(acme, app) error = %v, want build.ErrInvalid", err)
			}
		}},
		{name: "hidden file at the top", change: func() {
			writeFiles(t, root, map[string]string{".gitignore": "x"})
		}},
	}
	prev, prevAt := first, firstAt
	// Steps build on each other: no t.Parallel here.
	for _, st := range steps {
		st.change()
		refresh(t, c)
		got := c.Commit()
		if changed := got != prev; changed != st.wantChange {
			t.Errorf("%s: commit %q → %q, want changed: %v", st.name, prev, got, st.wantChange)
		}
		if at := c.RefreshedAt(); !at.After(prevAt) {
			t.Errorf("%s: RefreshedAt() = %v, want after %v", st.name, at, prevAt)
		}
		if st.check != nil {
			st.check(t)
		}
		prev, prevAt = got, c.RefreshedAt()
	}
}

func TestDirectoryExport(t *testing.T) {
	t.Parallel()
	root, _ := hostileRepo(t)
	c := newCatalog(t, catalog.Config{Source: root})
	refresh(t, c)
	tests := []struct {
		name, team, project string
		wantFiles           map[string]os.FileMode // relative to dest
		wantErr             error
	}{
		{name: "project", team: "good", project: "ok", wantFiles: map[string]os.FileMode{
			"good/ok/project.json":  0o644,
			"good/ok/build.sh":      0o755,
			"good/ok/lib/helper.sh": 0o644,
		}},
		{name: "symlinked project inside", team: "good", project: "linked", wantFiles: map[string]os.FileMode{
			"good/linked/project.json":  0o644,
			"good/linked/build.sh":      0o755,
			"good/linked/lib/helper.sh": 0o644,
		}},
		{name: "link out of the repository left out", team: "bad", project: "json-link-out", wantFiles: map[string]os.FileMode{
			"bad/json-link-out/build.sh": 0o755,
		}},
		{name: "project escaping the repository", team: "bad", project: "escape", wantErr: build.ErrNotFound},
		{name: "unknown", team: "good", project: "nope", wantErr: build.ErrNotFound},
		{name: "dot-dot", team: "..", project: "..", wantErr: build.ErrInvalid},
		{name: "hostile", team: "good", project: "../../etc", wantErr: build.ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dest := filepath.Join(t.TempDir(), "checkout")
			err := c.Export(t.Context(), c.Commit(), tt.team, tt.project, dest)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Export(%s/%s) error = %v, want %v", tt.team, tt.project, err, tt.wantErr)
			}
			if err != nil {
				return
			}
			got := listTree(t, dest)
			if !reflect.DeepEqual(got, tt.wantFiles) {
				t.Errorf("exported files = %v, want %v", got, tt.wantFiles)
			}
		})
	}
}

// listTree returns the regular files under dir with their permissions, and
// fails on anything else but directories.
func listTree(t *testing.T, dir string) map[string]os.FileMode {
	t.Helper()
	files := map[string]os.FileMode{}
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		switch {
		case d.IsDir():
		case d.Type().IsRegular():
			fi, err := d.Info()
			if err != nil {
				return err
			}
			files[filepath.ToSlash(rel)] = fi.Mode().Perm()
		default:
			t.Errorf("%s is a %v, want a regular file", rel, d.Type())
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

// git runs git in dir with no user or system configuration.
func git(t *testing.T, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", append([]string{"-C", dir, "-c", "user.name=Decap Test", "-c", "user.email=test@example.com", "-c", "init.defaultBranch=main", "-c", "commit.gpgsign=false"}, args...)...)
	cmd.Env = append(os.Environ(), "GIT_CONFIG_GLOBAL=/dev/null", "GIT_CONFIG_NOSYSTEM=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// gitRepo makes a repository with files committed and returns it with the
// commit.
func gitRepo(t *testing.T, files map[string]string) (string, string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "scripts")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	git(t, dir, "init", "--quiet")
	return dir, commitFiles(t, dir, files)
}

func commitFiles(t *testing.T, dir string, files map[string]string) string {
	t.Helper()
	writeFiles(t, dir, files)
	git(t, dir, "add", "--all")
	git(t, dir, "commit", "--quiet", "--allow-empty", "-m", "change")
	return git(t, dir, "rev-parse", "HEAD")
}

func TestGitSource(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		source func(t *testing.T, repo string) string
	}{
		{name: "git+ working tree", source: func(_ *testing.T, repo string) string { return "git+" + repo }},
		{name: "file URL", source: func(_ *testing.T, repo string) string { return "file://" + repo }},
		{name: "git+ bare repository", source: func(t *testing.T, repo string) string {
			bare := repo + ".git"
			git(t, filepath.Dir(repo), "clone", "--quiet", "--bare", repo, bare)
			return "git+" + bare
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			repo, old := gitRepo(t, map[string]string{
				"acme/app/project.json":         validJSON,
				"acme/app/build.sh":             "#!/bin/sh\necho old\n",
				"acme/app/lib/helper.sh":        "echo helper\n",
				"acme/broken/project.json":      `{"buildImage": "x", "managedRefRegex": "("}`,
				"acme/broken/build.sh":          script,
				"acme/no-script/project.json":   validJSON,
				"acme/has space/project.json":   validJSON,
				"acme/.github/workflows/x.yaml": "x",
				"README.md":                     "scripts",
			})
			symlink(t, "app", filepath.Join(repo, "acme/linked"))
			git(t, repo, "add", "--all")
			git(t, repo, "commit", "--quiet", "-m", "link")
			old = git(t, repo, "rev-parse", "HEAD")
			source := tt.source(t, repo)
			c := newCatalog(t, catalog.Config{Source: source, CacheDir: t.TempDir()})
			refresh(t, c)
			if got := c.Commit(); got != old {
				t.Fatalf("Commit() = %q, want %q", got, old)
			}
			wantErrs := map[string]string{
				"acme/app":       "",
				"acme/broken":    "managedRefRegex does not compile",
				"acme/linked":    "project directory is a symbolic link",
				"acme/no-script": "build.sh is missing",
			}
			for _, p := range c.Projects() {
				w, ok := wantErrs[p.Key()]
				if !ok {
					t.Errorf("unexpected project %s", p.Key())
					continue
				}
				delete(wantErrs, p.Key())
				if w == "" && (p.Error != "" || p.Descriptor == nil) || w != "" && !strings.Contains(p.Error, w) {
					t.Errorf("project %s error = %q, want %q", p.Key(), p.Error, w)
				}
			}
			if len(wantErrs) > 0 {
				t.Errorf("projects missing: %v", wantErrs)
			}
			if got := c.Snapshot().Skipped(); len(got) != 1 || !strings.Contains(got[0], `"acme/has space"`) {
				t.Errorf("Skipped() = %q, want acme/has space", got)
			}

			next := commitFiles(t, repo, map[string]string{
				"acme/app/build.sh":     "#!/bin/sh\necho new\n",
				"acme/new/project.json": validJSON,
				"acme/new/build.sh":     script,
			})
			if strings.HasSuffix(source, ".git") { // a bare copy: push to it
				git(t, repo, "push", "--quiet", strings.TrimPrefix(source, "git+"), "HEAD:main")
			}
			refresh(t, c)
			if got := c.Commit(); got != next {
				t.Fatalf("Commit() after the second commit = %q, want %q", got, next)
			}
			if _, commit, err := c.Lookup("acme", "new"); err != nil || commit != next {
				t.Errorf("Lookup(acme, new) = %q, %v; want %q, nil", commit, err, next)
			}

			for _, ex := range []struct{ commit, want string }{{old, "echo old"}, {next, "echo new"}} {
				dest := t.TempDir()
				if err := c.Export(t.Context(), ex.commit, "acme", "app", dest); err != nil {
					t.Fatalf("Export(%s): %v", ex.commit, err)
				}
				wantFiles := map[string]os.FileMode{
					"acme/app/project.json":  0o644,
					"acme/app/build.sh":      0o755,
					"acme/app/lib/helper.sh": 0o644,
				}
				if got := listTree(t, dest); !reflect.DeepEqual(got, wantFiles) {
					t.Errorf("Export(%s) files = %v, want %v", ex.commit, got, wantFiles)
				}
				data, err := os.ReadFile(filepath.Join(dest, "acme/app/build.sh"))
				if err != nil {
					t.Fatal(err)
				}
				if !strings.Contains(string(data), ex.want) {
					t.Errorf("Export(%s) build.sh = %q, want it to contain %q", ex.commit, data, ex.want)
				}
			}
		})
	}
}

func TestGitExportErrors(t *testing.T) {
	t.Parallel()
	repo, commit := gitRepo(t, map[string]string{
		"acme/app/project.json": validJSON,
		"acme/app/build.sh":     script,
		"acme/file":             "x",
	})
	c := newCatalog(t, catalog.Config{Source: "git+" + repo, CacheDir: t.TempDir()})
	refresh(t, c)
	tests := []struct {
		name, commit, team, project string
		wantErr                     error
	}{
		{name: "unknown project", commit: commit, team: "acme", project: "nope", wantErr: build.ErrNotFound},
		{name: "not a directory", commit: commit, team: "acme", project: "file", wantErr: build.ErrInvalid},
		{name: "unknown commit", commit: strings.Repeat("0", 40), team: "acme", project: "app", wantErr: build.ErrNotFound},
		{name: "symbolic commit", commit: "HEAD", team: "acme", project: "app", wantErr: build.ErrInvalid},
		{name: "option as commit", commit: "--output=/tmp/x", team: "acme", project: "app", wantErr: build.ErrInvalid},
		{name: "hostile project", commit: commit, team: "acme", project: "..", wantErr: build.ErrInvalid},
		{name: "abbreviated commit", commit: commit[:12], team: "acme", project: "app"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := c.Export(t.Context(), tt.commit, tt.team, tt.project, t.TempDir())
			if !errors.Is(err, tt.wantErr) {
				t.Errorf("Export(%q, %s/%s) error = %v, want %v", tt.commit, tt.team, tt.project, err, tt.wantErr)
			}
		})
	}
}

// An exporter that never refreshed (another replica, a checkout step) still
// finds a commit the source has.
func TestGitExportFetchesUnknownCommit(t *testing.T) {
	t.Parallel()
	repo, first := gitRepo(t, map[string]string{"acme/app/project.json": validJSON, "acme/app/build.sh": "#!/bin/sh\necho first\n"})
	commitFiles(t, repo, map[string]string{"acme/app/build.sh": "#!/bin/sh\necho second\n"})
	c := newCatalog(t, catalog.Config{Source: "git+" + repo, CacheDir: t.TempDir()})
	dest := t.TempDir()
	if err := c.Export(t.Context(), first, "acme", "app", dest); err != nil {
		t.Fatalf("Export(first) without a refresh: %v", err)
	}
	data, err := os.ReadFile(filepath.Join(dest, "acme/app/build.sh"))
	if err != nil || !strings.Contains(string(data), "first") {
		t.Errorf("build.sh = %q, %v; want the first version", data, err)
	}
}

func TestFailingRefreshKeepsSnapshot(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		source func(t *testing.T) (source, path string)
	}{
		{name: "directory", source: func(t *testing.T) (string, string) {
			dir := filepath.Join(t.TempDir(), "scripts")
			writeFiles(t, dir, map[string]string{"acme/app/project.json": validJSON, "acme/app/build.sh": script})
			return dir, dir
		}},
		{name: "git", source: func(t *testing.T) (string, string) {
			repo, _ := gitRepo(t, map[string]string{"acme/app/project.json": validJSON, "acme/app/build.sh": script})
			return "git+" + repo, repo
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			source, path := tt.source(t)
			c := newCatalog(t, catalog.Config{Source: source, CacheDir: t.TempDir()})
			refresh(t, c)
			before, beforeAt := c.Commit(), c.RefreshedAt()

			if err := os.Rename(path, path+".away"); err != nil {
				t.Fatal(err)
			}
			err := c.Refresh(t.Context())
			if !errors.Is(err, build.ErrUnavailable) {
				t.Fatalf("Refresh of a vanished source: error = %v, want build.ErrUnavailable", err)
			}
			if got := c.LastError(); got == nil {
				t.Errorf("LastError() = nil, want the refresh error")
			}
			if got := c.Commit(); got != before {
				t.Errorf("Commit() after a failed refresh = %q, want %q", got, before)
			}
			if got := c.RefreshedAt(); !got.Equal(beforeAt) {
				t.Errorf("RefreshedAt() after a failed refresh = %v, want %v", got, beforeAt)
			}
			if _, _, err := c.Lookup("acme", "app"); err != nil {
				t.Errorf("Lookup after a failed refresh: %v", err)
			}

			if err := os.Rename(path+".away", path); err != nil {
				t.Fatal(err)
			}
			refresh(t, c)
			if got := c.LastError(); got != nil {
				t.Errorf("LastError() after recovery = %v, want nil", got)
			}
		})
	}
}

func TestRefreshHonoursContext(t *testing.T) {
	t.Parallel()
	repo, _ := gitRepo(t, map[string]string{"acme/app/project.json": validJSON, "acme/app/build.sh": script})
	c := newCatalog(t, catalog.Config{Source: "git+" + repo, CacheDir: t.TempDir()})
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := c.Refresh(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("Refresh(cancelled ctx) error = %v, want context.Canceled", err)
	}
	if got := c.Commit(); got != "" {
		t.Errorf("Commit() = %q, want empty", got)
	}
}

func TestConcurrentLookupDuringRefresh(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	writeFiles(t, root, map[string]string{"acme/app/project.json": validJSON, "acme/app/build.sh": script})
	c := newCatalog(t, catalog.Config{Source: root})
	refresh(t, c)

	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for ctx.Err() == nil {
				s := c.Snapshot()
				if _, err := s.Lookup("acme", "app"); err != nil {
					t.Errorf("Lookup during refresh: %v", err)
					return
				}
				if got := len(s.Projects()); got < 1 {
					t.Errorf("snapshot %s has %d projects, want at least 1", s.Commit(), got)
					return
				}
				_, _, _ = c.Lookup("acme", "other")
				_ = c.Teams()
			}
		})
	}
	seen := map[string]bool{}
	for i := range 20 {
		writeFiles(t, root, map[string]string{
			fmt.Sprintf("acme/p%d/project.json", i): validJSON,
			"acme/app/build.sh":                     fmt.Sprintf("%secho %d\n", script, i),
		})
		wg.Go(func() { _ = c.Refresh(ctx) }) // concurrent refreshes queue up
		refresh(t, c)
		seen[c.Commit()] = true
	}
	cancel()
	wg.Wait()
	if len(seen) != 20 {
		t.Errorf("saw %d distinct commits over 20 changes, want 20", len(seen))
	}
	if got := len(c.Projects()); got != 21 {
		t.Errorf("%d projects, want 21", got)
	}
}

// recorder is a slog.Handler that keeps records.
type recorder struct {
	mu      sync.Mutex
	records []slog.Record
}

func (r *recorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *recorder) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.records = append(r.records, rec.Clone())
	return nil
}
func (r *recorder) WithAttrs([]slog.Attr) slog.Handler { return r }
func (r *recorder) WithGroup(string) slog.Handler      { return r }

func (r *recorder) count(level slog.Level, msg string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, rec := range r.records {
		if rec.Level == level && strings.Contains(rec.Message, msg) {
			n++
		}
	}
	return n
}

// eventually polls cond for up to 10 seconds.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestRun(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "scripts")
	writeFiles(t, dir, map[string]string{"acme/app/project.json": validJSON, "acme/app/build.sh": script})
	rec := &recorder{}
	c := newCatalog(t, catalog.Config{Source: dir, Logger: slog.New(rec)})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.Run(ctx, 5*time.Millisecond)
	}()
	eventually(t, "the first refresh", func() bool { return c.Commit() != "" })
	first := c.Commit()

	if err := os.Rename(dir, dir+".away"); err != nil {
		t.Fatal(err)
	}
	eventually(t, "a failing refresh", func() bool { return c.LastError() != nil })
	time.Sleep(50 * time.Millisecond) // ten more failing refreshes
	if got := rec.count(slog.LevelError, "catalog refresh failed"); got != 1 {
		t.Errorf("logged %d refresh failures during one outage, want 1", got)
	}
	if got := c.Commit(); got != first {
		t.Errorf("Commit() during the outage = %q, want %q", got, first)
	}

	if err := os.Rename(dir+".away", dir); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the recovery", func() bool { return rec.count(slog.LevelInfo, "catalog refresh recovered") == 1 })

	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after ctx was cancelled")
	}
}

func TestRequestRefresh(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"acme/app/project.json": validJSON, "acme/app/build.sh": script})
	c := newCatalog(t, catalog.Config{Source: dir})
	refresh(t, c)
	first := c.Commit()
	go c.Run(t.Context(), time.Hour) // loaded already: no refresh before an hour

	writeFiles(t, dir, map[string]string{"acme/app/build.sh": script + "echo changed\n"})
	c.RequestRefresh()
	eventually(t, "the requested refresh", func() bool { return c.Commit() != first })
}

func TestNewRejects(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		cfg  catalog.Config
	}{
		{name: "no source", cfg: catalog.Config{}},
		{name: "git without cache", cfg: catalog.Config{Source: "https://example.com/scripts.git"}},
		{name: "bad branch", cfg: catalog.Config{Source: "git+/srv/x", CacheDir: "/tmp/c", Branch: "a..b"}},
		{name: "branch for a directory", cfg: catalog.Config{Source: "/srv/x", Branch: "main"}},
		// A mistyped directory is a configuration error at start, not a
		// catalog that never loads.
		{name: "missing directory", cfg: catalog.Config{Source: filepath.Join(os.TempDir(), "decap-no-such-build-scripts")}},
		{name: "a file, not a directory", cfg: catalog.Config{Source: "/dev/null"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if _, err := catalog.New(tt.cfg); !errors.Is(err, build.ErrInvalid) {
				t.Errorf("New(%+v) error = %v, want build.ErrInvalid", tt.cfg, err)
			}
		})
	}
}

func TestGitBranch(t *testing.T) {
	t.Parallel()
	repo, mainCommit := gitRepo(t, map[string]string{"acme/app/project.json": validJSON, "acme/app/build.sh": script})
	git(t, repo, "checkout", "--quiet", "-b", "staging")
	staging := commitFiles(t, repo, map[string]string{"acme/next/project.json": validJSON, "acme/next/build.sh": script})
	git(t, repo, "checkout", "--quiet", "main")
	tests := []struct {
		branch, want string
	}{
		{branch: "", want: mainCommit},
		{branch: "main", want: mainCommit},
		{branch: "staging", want: staging},
	}
	cache := t.TempDir() // shared, as several services on one machine would
	for _, tt := range tests {
		t.Run("branch "+tt.branch, func(t *testing.T) {
			t.Parallel()
			c := newCatalog(t, catalog.Config{Source: "git+" + repo, Branch: tt.branch, CacheDir: cache})
			refresh(t, c)
			if got := c.Commit(); got != tt.want {
				t.Errorf("Commit() = %q, want %q", got, tt.want)
			}
		})
	}
}

// The example repository must stay what its README says.
func TestExamples(t *testing.T) {
	t.Parallel()
	c := newCatalog(t, catalog.Config{Source: "../../examples/build-scripts"})
	refresh(t, c)
	want := map[string]string{
		"Codertocat/Hello-World": "",
		"decap-ci/broken":        "managedRefRegex does not compile",
		"decap-ci/failing":       "",
		"decap-ci/hello":         "",
		"decap-ci/slow":          "",
	}
	got := map[string]string{}
	for _, p := range c.Projects() {
		got[p.Key()] = p.Error
	}
	for k, w := range want {
		if g, ok := got[k]; !ok || w == "" && g != "" || w != "" && !strings.Contains(g, w) {
			t.Errorf("project %s error = %q (listed: %v), want %q", k, g, ok, w)
		}
	}
	if len(got) != len(want) {
		t.Errorf("projects = %v, want %d", got, len(want))
	}
	if len(c.Snapshot().Skipped()) != 0 {
		t.Errorf("Skipped() = %q, want none", c.Snapshot().Skipped())
	}
	d, _, err := c.Lookup("Codertocat", "Hello-World")
	if err != nil {
		t.Fatal(err)
	}
	if d.BuildImage != "debian:bookworm-slim" || !d.Manages("main") || !d.Manages("release/1.2") || d.Manages("feature/x") {
		t.Errorf("Codertocat/Hello-World descriptor = %+v, want debian:bookworm-slim managing main and release/*", d)
	}
	if d, _, _ := c.Lookup("decap-ci", "slow"); d.Timeout() != 120*time.Second {
		t.Errorf("decap-ci/slow timeout = %v, want 2m0s", d.Timeout())
	}
	dest := t.TempDir()
	for _, p := range c.Projects() {
		if err := c.Export(t.Context(), c.Commit(), p.Team, p.Project, dest); err != nil {
			t.Fatalf("Export(%s): %v", p.Key(), err)
		}
		fi, err := os.Stat(filepath.Join(dest, p.Team, p.Project, "build.sh"))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm()&0o111 == 0 {
			t.Errorf("%s/build.sh mode = %v, want executable", p.Key(), fi.Mode())
		}
	}
}

func TestGitURL(t *testing.T) {
	for _, tc := range []struct {
		source, want, err string
	}{
		{"https://github.com/example/build-scripts.git", "https://github.com/example/build-scripts.git", ""},
		{"git@github.com:example/build-scripts.git", "git@github.com:example/build-scripts.git", ""},
		{"git+https://git.example/scripts", "https://git.example/scripts", ""},
		{"examples/build-scripts", "", "directory"},
		{"https://ghp_s3cr3tT0ken@github.com/example/build-scripts.git", "", "credential"},
		{"https://user:hunter2@git.example/scripts", "", "credential"},
	} {
		got, err := catalog.GitURL(tc.source)
		switch {
		case tc.err == "" && (err != nil || got != tc.want):
			t.Errorf("GitURL(%q) = %q, %v; want %q", tc.source, got, err, tc.want)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err) || !errors.Is(err, build.ErrInvalid)):
			t.Errorf("GitURL(%q): got %q, %v; want an ErrInvalid error about a %s", tc.source, got, err, tc.err)
		case err != nil && (strings.Contains(err.Error(), "s3cr3t") || strings.Contains(err.Error(), "hunter2")):
			t.Errorf("GitURL(%q): error %q shows the credential", tc.source, err)
		}
	}
}

// TestCatalogSkipped checks that the Catalog tells the entries its
// snapshot skipped, for the UI and the API.
func TestCatalogSkipped(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "scripts")
	writeFiles(t, dir, map[string]string{"acme/app/project.json": validJSON, "acme/app/build.sh": script,
		"acme/my app/project.json": validJSON, "acme/my app/build.sh": script})
	c := newCatalog(t, catalog.Config{Source: dir})
	refresh(t, c)
	if got := c.Skipped(); len(got) != 1 || !strings.Contains(got[0], "acme/my app") {
		t.Errorf("Skipped() = %q, want the project with a space in its name", got)
	}
}
