package catalog

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/decap-ci/decap/internal/build"
)

// Tree entry modes, as git ls-tree prints them.
const (
	modeTree      = "040000"
	modeFile      = "100644"
	modeExec      = "100755"
	modeSymlink   = "120000"
	modeSubmodule = "160000"
)

// gitSource reads a git repository through a bare repository in the cache
// directory. It runs the git command line; nothing is checked out.
//
// The first use initializes the bare repository, every scan fetches the
// remote's branch into a private ref and reads that commit. The bare
// repository never prunes unreachable objects (gc.pruneExpire=never), so a
// commit served once can still be exported after a force push.
type gitSource struct {
	url      string // passed to git fetch
	ref      string // the remote ref to fetch: HEAD or refs/heads/<branch>
	track    string // the local ref the fetch updates
	cacheDir string
	repo     string // the bare repository under cacheDir
	secret   string // a credential in url, scrubbed from messages
	display  string // url without credentials
	env      []string
}

func newGitSource(url, branch, cacheDir, repo string) *gitSource {
	g := &gitSource{
		url:      url,
		ref:      "HEAD",
		track:    "refs/decap/HEAD",
		cacheDir: cacheDir,
		repo:     repo,
		secret:   secretOf(url),
		display:  redactURL(url),
	}
	if branch != "" {
		g.ref = "refs/heads/" + branch
		g.track = "refs/decap/heads/" + branch
	}
	g.env = append(os.Environ(),
		"GIT_TERMINAL_PROMPT=0", // fail instead of asking for credentials
		"LC_ALL=C",
	)
	if os.Getenv("GIT_SSH_COMMAND") == "" && os.Getenv("GIT_SSH") == "" {
		g.env = append(g.env, "GIT_SSH_COMMAND=ssh -o BatchMode=yes")
	}
	if bare, header := credentialHeader(url); header != "" {
		// Not in the URL git is given: every local user, a build too,
		// may read a process's command line (/proc/<pid>/cmdline, git's
		// and its remote helper's), only its own user its environment.
		g.url = bare
		g.env = append(g.env, gitConfigEnv("http.extraHeader", header)...)
	}
	return g
}

// credentialHeader returns an http(s) URL without its user information
// and the Authorization header that carries it instead ("" when it has
// none).
func credentialHeader(raw string) (bare, header string) {
	if !isURL(raw) {
		return raw, ""
	}
	u, err := url.Parse(raw)
	if err != nil || u.User == nil || (u.Scheme != "https" && u.Scheme != "http") {
		return raw, ""
	}
	pass, _ := u.User.Password()
	header = "Authorization: Basic " + base64.StdEncoding.EncodeToString([]byte(u.User.Username()+":"+pass))
	u.User = nil
	return u.String(), header
}

// gitConfigEnv returns the environment that sets git's configuration
// key to value (GIT_CONFIG_COUNT, git 2.31 and later), after any such
// settings of this process's environment.
func gitConfigEnv(key, value string) []string {
	n, err := strconv.Atoi(os.Getenv("GIT_CONFIG_COUNT"))
	if err != nil || n < 0 {
		n = 0
	}
	return []string{
		fmt.Sprintf("GIT_CONFIG_KEY_%d=%s", n, key),
		fmt.Sprintf("GIT_CONFIG_VALUE_%d=%s", n, value),
		fmt.Sprintf("GIT_CONFIG_COUNT=%d", n+1),
	}
}

// git runs git on the bare repository and returns its standard output. The
// error carries git's standard error, scrubbed of credentials.
func (g *gitSource) git(ctx context.Context, stdin io.Reader, args ...string) ([]byte, error) {
	var stdout bytes.Buffer
	cmd := g.command(ctx, stdin, &stdout, args...)
	stderr := cmd.Stderr.(*tailBuffer)
	if err := cmd.Run(); err != nil {
		return nil, g.failure(ctx, args[0], err, stderr)
	}
	return stdout.Bytes(), nil
}

func (g *gitSource) command(ctx context.Context, stdin io.Reader, stdout io.Writer, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, "git", append([]string{"--git-dir=" + g.repo}, args...)...)
	cmd.Env = g.env
	cmd.Stdin = stdin
	cmd.Stdout = stdout
	cmd.Stderr = &tailBuffer{max: 4 << 10}
	// git's helpers (ssh, git-remote-https) may outlive a killed git and
	// hold the pipes open.
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

func (g *gitSource) failure(ctx context.Context, sub string, err error, stderr *tailBuffer) error {
	if ctx.Err() != nil {
		return fmt.Errorf("git %s: %w", sub, ctx.Err())
	}
	msg := summarize(stderr.String())
	if g.secret != "" {
		msg = strings.ReplaceAll(msg, g.secret, "xxxxx")
	}
	if msg == "" {
		msg = err.Error()
	}
	return fmt.Errorf("git %s: %s", sub, msg)
}

// ensureRepo creates the bare repository on first use. It is built under a
// temporary name and renamed into place, so a half-made repository is never
// used; when another process wins the race, its repository is used.
func (g *gitSource) ensureRepo(ctx context.Context) error {
	if fi, err := os.Stat(filepath.Join(g.repo, "HEAD")); err == nil && fi.Mode().IsRegular() {
		return nil
	}
	if err := os.MkdirAll(g.cacheDir, 0o755); err != nil {
		return fmt.Errorf("create catalog cache: %w", err)
	}
	// A directory without HEAD is a leftover, not a repository.
	if err := os.RemoveAll(g.repo); err != nil {
		return fmt.Errorf("create catalog cache: %w", err)
	}
	tmp, err := os.MkdirTemp(g.cacheDir, ".init-*")
	if err != nil {
		return fmt.Errorf("create catalog cache: %w", err)
	}
	defer os.RemoveAll(tmp) // a no-op once renamed
	bare := &gitSource{repo: tmp, env: g.env}
	if _, err := bare.git(ctx, nil, "init", "--bare", "--quiet"); err != nil {
		return fmt.Errorf("create catalog cache: %w", err)
	}
	for _, kv := range [][2]string{{"gc.pruneExpire", "never"}, {"core.logAllRefUpdates", "false"}} {
		if _, err := bare.git(ctx, nil, "config", kv[0], kv[1]); err != nil {
			return fmt.Errorf("create catalog cache: %w", err)
		}
	}
	if err := os.Rename(tmp, g.repo); err != nil {
		if _, serr := os.Stat(filepath.Join(g.repo, "HEAD")); serr == nil {
			return nil
		}
		return fmt.Errorf("create catalog cache: %w", err)
	}
	return nil
}

// fetch brings the remote branch into g.track and returns its commit.
func (g *gitSource) fetch(ctx context.Context) (string, error) {
	if err := g.ensureRepo(ctx); err != nil {
		return "", err
	}
	_, err := g.git(ctx, nil, "fetch", "--quiet", "--no-tags", "--no-write-fetch-head", "--force",
		"--", g.url, "+"+g.ref+":"+g.track)
	if err != nil {
		return "", fmt.Errorf("fetch %s: %w: %w", g.display, build.ErrUnavailable, err)
	}
	out, err := g.git(ctx, nil, "rev-parse", "--verify", "--end-of-options", g.track+"^{commit}")
	if err != nil {
		return "", fmt.Errorf("fetch %s: %w: %w", g.display, build.ErrUnavailable, err)
	}
	return strings.TrimSpace(string(out)), nil
}

// treeEntry is one line of git ls-tree -l.
type treeEntry struct {
	mode, typ, oid string
	size           int64 // -1 for trees
	path           string
}

func (g *gitSource) scan(ctx context.Context, prev string) (scanResult, error) {
	commit, err := g.fetch(ctx)
	if err != nil {
		return scanResult{}, err
	}
	if commit == prev {
		return scanResult{commit: commit}, nil
	}
	out, err := g.git(ctx, nil, "ls-tree", "-r", "-t", "-l", "-z", commit)
	if err != nil {
		return scanResult{}, fmt.Errorf("list %s at %s: %w: %w", g.display, commit, build.ErrUnavailable, err)
	}
	entries, err := parseTree(out)
	if err != nil {
		return scanResult{}, fmt.Errorf("list %s at %s: %w", g.display, commit, err)
	}
	res := scanResult{commit: commit}
	cands, skipped := gitCandidates(entries)
	res.skipped = skipped

	// Read every project.json in one git cat-file process.
	var oids []string
	for _, c := range cands {
		if c.jsonOID != "" {
			oids = append(oids, c.jsonOID)
		}
	}
	blobs, err := g.readBlobs(ctx, oids)
	if err != nil {
		return scanResult{}, fmt.Errorf("read %s at %s: %w: %w", g.display, commit, build.ErrUnavailable, err)
	}
	for _, c := range cands {
		if c.jsonOID != "" {
			c.json = blobs[c.jsonOID]
		}
		res.candidates = append(res.candidates, c.candidate)
	}
	return res, nil
}

// parseTree parses git ls-tree -r -t -l -z output.
func parseTree(out []byte) ([]treeEntry, error) {
	var entries []treeEntry
	for rec := range bytes.SplitSeq(out, []byte{0}) {
		if len(rec) == 0 {
			continue
		}
		meta, name, ok := bytes.Cut(rec, []byte{'\t'})
		f := strings.Fields(string(meta))
		if !ok || len(f) != 4 {
			return nil, fmt.Errorf("unexpected git ls-tree line %s", displayName(string(rec)))
		}
		e := treeEntry{mode: f[0], typ: f[1], oid: f[2], size: -1, path: string(name)}
		if f[3] != "-" {
			n, err := strconv.ParseInt(f[3], 10, 64)
			if err != nil {
				return nil, fmt.Errorf("unexpected git ls-tree size %q", f[3])
			}
			e.size = n
		}
		entries = append(entries, e)
	}
	return entries, nil
}

// gitCandidate is a candidate whose project.json is still to be read.
type gitCandidate struct {
	candidate
	jsonOID string
}

// gitCandidates applies the package's naming rules to a commit's tree.
func gitCandidates(entries []treeEntry) ([]*gitCandidate, []string) {
	var (
		skipped []string
		teams   = map[string]bool{}
		byKey   = map[string]*gitCandidate{}
		cands   []*gitCandidate
		files   = map[string]treeEntry{} // <team>/<project>/{project.json,build.sh}
	)
	// By depth: teams, then projects, then their files.
	for _, e := range entries {
		if strings.Contains(e.path, "/") || strings.HasPrefix(e.path, ".") {
			continue
		}
		switch {
		case e.mode == modeSymlink:
			skipped = append(skipped, skip(e.path, errors.New("team directory is a symbolic link, which git sources do not follow")))
		case e.mode != modeTree:
		case build.ValidateName("team", e.path) != nil:
			skipped = append(skipped, skip(e.path, build.ValidateName("team", e.path)))
		default:
			teams[e.path] = true
		}
	}
	for _, e := range entries {
		team, name, ok := strings.Cut(e.path, "/")
		if !ok || !teams[team] || strings.Contains(name, "/") || strings.HasPrefix(name, ".") {
			continue
		}
		c := &gitCandidate{candidate: candidate{team: team, project: name}}
		switch e.mode {
		case modeTree:
		case modeSymlink:
			c.dirErr = "project directory is a symbolic link, which git sources do not follow"
		case modeSubmodule:
			c.dirErr = "project directory is a git submodule, which is not supported"
		default:
			continue // a file
		}
		if err := build.ValidateName("project", name); err != nil {
			skipped = append(skipped, skip(e.path, err))
			continue
		}
		byKey[e.path] = c
		cands = append(cands, c)
	}
	for _, e := range entries {
		if strings.Count(e.path, "/") == 2 && (strings.HasSuffix(e.path, "/project.json") || strings.HasSuffix(e.path, "/build.sh")) {
			files[e.path] = e
		}
	}
	for _, c := range cands {
		if c.dirErr != "" {
			continue
		}
		dir := c.team + "/" + c.project
		js, ok := files[dir+"/project.json"]
		switch {
		case !ok:
			c.jsonErr = "project.json is missing"
		case js.mode == modeSymlink:
			c.jsonErr = "project.json is a symbolic link, which git sources do not follow"
		case js.typ != "blob":
			c.jsonErr = "project.json is not a regular file"
		case js.size > build.MaxDescriptorSize:
			c.jsonErr = fmt.Sprintf("project.json is %d bytes, more than %d", js.size, build.MaxDescriptorSize)
		default:
			c.jsonOID = js.oid
		}
		sh, ok := files[dir+"/build.sh"]
		switch {
		case !ok:
			c.scriptErr = "build.sh is missing"
		case sh.mode == modeSymlink:
			c.scriptErr = "build.sh is a symbolic link, which git sources do not follow"
		case sh.mode != modeFile && sh.mode != modeExec:
			c.scriptErr = "build.sh is not a regular file"
		}
	}
	return cands, skipped
}

// readBlobs returns the contents of blobs by object ID, read with one git
// cat-file --batch.
func (g *gitSource) readBlobs(ctx context.Context, oids []string) (map[string][]byte, error) {
	blobs := make(map[string][]byte, len(oids))
	if len(oids) == 0 {
		return blobs, nil
	}
	var in strings.Builder
	for _, oid := range oids {
		in.WriteString(oid + "\n")
	}
	out, err := g.git(ctx, strings.NewReader(in.String()), "cat-file", "--batch")
	if err != nil {
		return nil, err
	}
	r := bufio.NewReader(bytes.NewReader(out))
	for range oids {
		header, err := r.ReadString('\n')
		if err != nil {
			return nil, fmt.Errorf("git cat-file: short output")
		}
		f := strings.Fields(header)
		if len(f) != 3 {
			return nil, fmt.Errorf("git cat-file: %s", strings.TrimSpace(header))
		}
		size, err := strconv.Atoi(f[2])
		if err != nil || size < 0 {
			return nil, fmt.Errorf("git cat-file: bad size in %q", strings.TrimSpace(header))
		}
		data := make([]byte, size+1) // the content and a newline
		if _, err := io.ReadFull(r, data); err != nil {
			return nil, fmt.Errorf("git cat-file: short output")
		}
		blobs[f[0]] = data[:size]
	}
	return blobs, nil
}

// hasCommit reports whether commit is in the cache; it is false before the
// first fetch. A malformed commit is an ErrInvalid error.
func (g *gitSource) hasCommit(ctx context.Context, commit string) (bool, error) {
	if !isHex(commit) {
		return false, fmt.Errorf("%w: commit %s is not a hex commit id", build.ErrInvalid, displayName(commit))
	}
	if _, err := os.Stat(filepath.Join(g.repo, "HEAD")); err != nil {
		return false, nil
	}
	_, err := g.git(ctx, nil, "cat-file", "-e", "--end-of-options", commit+"^{commit}")
	if ctx.Err() != nil {
		return false, fmt.Errorf("look up commit %s: %w", commit, ctx.Err())
	}
	return err == nil, nil
}

func (g *gitSource) export(ctx context.Context, commit, team, project, dest string) error {
	key := build.ProjectKey(team, project)
	out, err := g.git(ctx, nil, "ls-tree", "-z", "--end-of-options", commit, "--", key)
	if err != nil {
		return fmt.Errorf("export %s at %s: %w: %w", key, commit, build.ErrUnavailable, err)
	}
	entries, err := parseTreeShort(out)
	if err != nil {
		return fmt.Errorf("export %s at %s: %w", key, commit, err)
	}
	if len(entries) != 1 || entries[0].path != key {
		return fmt.Errorf("export %s at %s: %w", key, commit, build.ErrNotFound)
	}
	if entries[0].mode != modeTree {
		return fmt.Errorf("export %s at %s: %w: project is not a directory", key, commit, build.ErrInvalid)
	}

	pr, pw := io.Pipe()
	// git archive takes no "--"; key is a valid name and commit is hex, so
	// neither can pass for an option.
	cmd := g.command(ctx, nil, pw, "archive", "--format=tar", commit, key)
	stderr := cmd.Stderr.(*tailBuffer)
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("export %s at %s: %w: %w", key, commit, build.ErrUnavailable, err)
	}
	done := make(chan error, 1)
	go func() {
		err := cmd.Wait()
		pw.CloseWithError(err) // nil: readers see EOF
		done <- err
	}()
	xerr := extractTar(pr, dest, key)
	if xerr == nil {
		_, _ = io.Copy(io.Discard, pr) // the tar's end padding
	}
	pr.CloseWithError(errors.New("extraction stopped")) // unblock git if we stopped early
	werr := <-done
	switch {
	case werr != nil && (xerr == nil || errors.Is(xerr, werr)):
		// git failed, and extraction (if it failed) only saw that.
		return fmt.Errorf("export %s at %s: %w: %w", key, commit, build.ErrUnavailable, g.failure(ctx, "archive", werr, stderr))
	case xerr != nil:
		return fmt.Errorf("export %s at %s: %w", key, commit, xerr)
	}
	return nil
}

// parseTreeShort parses git ls-tree -z output (without sizes).
func parseTreeShort(out []byte) ([]treeEntry, error) {
	var entries []treeEntry
	for rec := range bytes.SplitSeq(out, []byte{0}) {
		if len(rec) == 0 {
			continue
		}
		meta, name, ok := bytes.Cut(rec, []byte{'\t'})
		f := strings.Fields(string(meta))
		if !ok || len(f) != 3 {
			return nil, fmt.Errorf("unexpected git ls-tree line %s", displayName(string(rec)))
		}
		entries = append(entries, treeEntry{mode: f[0], typ: f[1], oid: f[2], size: -1, path: string(name)})
	}
	return entries, nil
}

// isHex reports whether s looks like a full or abbreviated commit ID.
func isHex(s string) bool {
	if len(s) < 7 || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
			return false
		}
	}
	return true
}

// summarize keeps git's "fatal:" and "error:" lines, or else its first line,
// on one line.
func summarize(stderr string) string {
	var all, errs []string
	for line := range strings.Lines(stderr) {
		line = strings.TrimSpace(line)
		switch {
		case line == "":
		case strings.HasPrefix(line, "fatal:") || strings.HasPrefix(line, "error:"):
			errs = append(errs, line)
		default:
			all = append(all, line)
		}
	}
	if len(errs) > 0 {
		return strings.Join(errs, "; ")
	}
	if len(all) > 0 {
		return all[0]
	}
	return ""
}

// tailBuffer keeps the last max bytes written to it: enough of git's
// standard error to explain a failure.
type tailBuffer struct {
	max int
	buf []byte
}

func (b *tailBuffer) Write(p []byte) (int, error) {
	b.buf = append(b.buf, p...)
	if len(b.buf) > b.max {
		b.buf = b.buf[len(b.buf)-b.max:]
	}
	return len(p), nil
}

func (b *tailBuffer) String() string { return string(b.buf) }
