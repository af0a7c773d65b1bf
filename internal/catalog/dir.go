package catalog

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"slices"
	"strings"

	"github.com/decap-ci/decap/internal/build"
)

// dirSource reads a local directory of plain files. Every access goes
// through os.Root, so symbolic links are followed only inside the directory.
type dirSource struct {
	path string
}

// dirFile is a regular file (or a symbolic link to one inside the root) of a
// project, by slash-separated path relative to the root.
type dirFile struct {
	rel  string
	mode fs.FileMode
}

func (d *dirSource) open() (*os.Root, error) {
	root, err := os.OpenRoot(d.path)
	if err != nil {
		return nil, fmt.Errorf("open build-scripts directory: %w: %w", build.ErrUnavailable, err)
	}
	return root, nil
}

func (d *dirSource) scan(ctx context.Context, _ string) (scanResult, error) {
	root, err := d.open()
	if err != nil {
		return scanResult{}, err
	}
	defer root.Close()
	teams, err := readDir(root, ".")
	if err != nil {
		return scanResult{}, fmt.Errorf("read build-scripts directory %s: %w: %w", d.path, build.ErrUnavailable, err)
	}
	var (
		res   scanResult
		files []dirFile
		// dirs are the project directories, hashed with the files so that
		// adding an empty or broken project changes the commit too.
		dirs []string
	)
	for _, t := range teams {
		team := t.Name()
		if strings.HasPrefix(team, ".") {
			continue
		}
		if ok, err := isDir(root, team, t); err != nil {
			res.skipped = append(res.skipped, skip(team, errors.New("team directory is a symbolic link that leaves the repository or leads nowhere")))
			continue
		} else if !ok {
			continue
		}
		if err := build.ValidateName("team", team); err != nil {
			res.skipped = append(res.skipped, skip(team, err))
			continue
		}
		projects, err := readDir(root, team)
		if err != nil {
			res.skipped = append(res.skipped, skip(team, fmt.Errorf("cannot read team directory: %v", err)))
			continue
		}
		for _, e := range projects {
			if err := ctx.Err(); err != nil {
				return scanResult{}, fmt.Errorf("scan %s: %w", d.path, err)
			}
			name := e.Name()
			rel := team + "/" + name
			if strings.HasPrefix(name, ".") {
				continue
			}
			c := candidate{team: team, project: name}
			if e.Type()&fs.ModeSymlink != 0 {
				fi, err := root.Stat(rel)
				switch {
				case err != nil:
					c.dirErr = "project directory is a symbolic link that leaves the repository or leads nowhere"
				case !fi.IsDir():
					continue
				}
			} else if !e.IsDir() {
				continue
			}
			if err := build.ValidateName("project", name); err != nil {
				res.skipped = append(res.skipped, skip(rel, err))
				continue
			}
			dirs = append(dirs, rel+"/")
			if c.dirErr == "" {
				var pf []dirFile
				pf, c = scanDirProject(root, c)
				files = append(files, pf...)
			}
			res.candidates = append(res.candidates, c)
		}
	}
	res.commit = "dir:" + contentHash(root, files, dirs, res.skipped)[:16]
	return res, nil
}

// scanDirProject lists the files of one project directory and reads its
// project.json and build.sh.
func scanDirProject(root *os.Root, c candidate) ([]dirFile, candidate) {
	dir := c.team + "/" + c.project
	files, err := listFiles(root, dir)
	if err != nil {
		c.dirErr = fmt.Sprintf("cannot read project directory: %v", cause(err))
		return nil, c
	}
	c.json, c.jsonErr = readDescriptor(root, dir+"/project.json")
	if _, err := regularFile(root, dir+"/build.sh", "build.sh"); err != "" {
		c.scriptErr = err
	}
	return files, c
}

// regularFile stats name, following symbolic links inside the root, and
// says why it is not a usable regular file, or "".
func regularFile(root *os.Root, name, label string) (fs.FileInfo, string) {
	li, err := root.Lstat(name)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, label + " is missing"
	}
	if err != nil {
		return nil, fmt.Sprintf("cannot read %s: %v", label, cause(err))
	}
	fi := li
	if li.Mode()&fs.ModeSymlink != 0 {
		if fi, err = root.Stat(name); err != nil {
			return nil, label + " is a symbolic link that leaves the repository or leads nowhere"
		}
	}
	if !fi.Mode().IsRegular() {
		return nil, label + " is not a regular file"
	}
	return fi, ""
}

func readDescriptor(root *os.Root, name string) ([]byte, string) {
	fi, problem := regularFile(root, name, "project.json")
	if problem != "" {
		return nil, problem
	}
	if fi.Size() > build.MaxDescriptorSize {
		return nil, fmt.Sprintf("project.json is %d bytes, more than %d", fi.Size(), build.MaxDescriptorSize)
	}
	f, err := root.Open(name)
	if err != nil {
		return nil, fmt.Sprintf("cannot read project.json: %v", cause(err))
	}
	defer f.Close()
	// ParseDescriptor rejects the extra byte should the file have grown.
	data, err := io.ReadAll(io.LimitReader(f, build.MaxDescriptorSize+1))
	if err != nil {
		return nil, fmt.Sprintf("cannot read project.json: %v", cause(err))
	}
	return data, ""
}

// isDir reports whether entry name of the root is a directory, following a
// symbolic link only inside the root; the error says the link cannot be
// followed.
func isDir(root *os.Root, name string, e fs.DirEntry) (bool, error) {
	if e.Type()&fs.ModeSymlink == 0 {
		return e.IsDir(), nil
	}
	fi, err := root.Stat(name)
	if err != nil {
		return false, err
	}
	return fi.IsDir(), nil
}

// cause returns the system's reason for a file error, without the operation
// and path that os adds.
func cause(err error) string {
	if pe, ok := errors.AsType[*fs.PathError](err); ok {
		return pe.Err.Error()
	}
	return err.Error()
}

func readDir(root *os.Root, name string) ([]fs.DirEntry, error) {
	f, err := root.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	entries, err := f.ReadDir(-1)
	slices.SortFunc(entries, func(a, b fs.DirEntry) int { return strings.Compare(a.Name(), b.Name()) })
	return entries, err
}

// listFiles returns the regular files under dir, recursively. Symbolic links
// to files inside the root count as files; links to directories, links out
// of the root and special files are left out, so the walk is finite.
func listFiles(root *os.Root, dir string) ([]dirFile, error) {
	entries, err := readDir(root, dir)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", dir, err)
	}
	var files []dirFile
	for _, e := range entries {
		rel := dir + "/" + e.Name()
		switch {
		case e.IsDir():
			sub, err := listFiles(root, rel)
			if err != nil {
				return nil, err
			}
			files = append(files, sub...)
		case e.Type()&fs.ModeSymlink != 0:
			if fi, err := root.Stat(rel); err == nil && fi.Mode().IsRegular() {
				files = append(files, dirFile{rel: rel, mode: fi.Mode()})
			}
		case e.Type().IsRegular():
			fi, err := e.Info()
			if err != nil {
				continue // removed meanwhile
			}
			files = append(files, dirFile{rel: rel, mode: fi.Mode()})
		}
	}
	return files, nil
}

// contentHash is a SHA-256 over the sorted relative paths and contents of
// files, plus the project directories and skipped entries, in hex. Each file
// contributes its path and the SHA-256 of its content, so no two different
// trees hash alike.
func contentHash(root *os.Root, files []dirFile, dirs, skipped []string) string {
	type entry struct{ name, sum string }
	entries := make([]entry, 0, len(files)+len(dirs)+len(skipped))
	for _, f := range files {
		entries = append(entries, entry{f.rel, fileHash(root, f.rel)})
	}
	for _, d := range dirs {
		entries = append(entries, entry{d, "dir"})
	}
	for _, s := range skipped {
		entries = append(entries, entry{s, "skipped"})
	}
	slices.SortFunc(entries, func(a, b entry) int { return strings.Compare(a.name, b.name) })
	h := sha256.New()
	for _, e := range entries {
		io.WriteString(h, e.name)
		h.Write([]byte{0})
		io.WriteString(h, e.sum)
		h.Write([]byte{'\n'})
	}
	return hex.EncodeToString(h.Sum(nil))
}

func fileHash(root *os.Root, name string) string {
	f, err := root.Open(name)
	if err != nil {
		return "unreadable"
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "unreadable"
	}
	return hex.EncodeToString(h.Sum(nil))
}

// hasCommit is true: a directory has no history, export copies what is
// there now.
func (d *dirSource) hasCommit(context.Context, string) (bool, error) { return true, nil }

func (d *dirSource) export(ctx context.Context, _, team, project, dest string) error {
	key := build.ProjectKey(team, project)
	src, err := d.open()
	if err != nil {
		return err
	}
	defer src.Close()
	fi, err := src.Stat(key)
	if err != nil || !fi.IsDir() {
		return fmt.Errorf("export %s: %w", key, build.ErrNotFound)
	}
	files, err := listFiles(src, key)
	if err != nil {
		return fmt.Errorf("export %s: %w: %w", key, build.ErrUnavailable, err)
	}
	dst, err := openDest(dest)
	if err != nil {
		return fmt.Errorf("export %s: %w", key, err)
	}
	defer dst.Close()
	if err := dst.MkdirAll(key, 0o755); err != nil {
		return fmt.Errorf("export %s: %w", key, err)
	}
	for _, f := range files {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("export %s: %w", key, err)
		}
		if err := copyFile(src, dst, f); err != nil {
			return fmt.Errorf("export %s: %w", key, err)
		}
	}
	return nil
}

func copyFile(src, dst *os.Root, f dirFile) error {
	in, err := src.Open(f.rel)
	if err != nil {
		return err
	}
	defer in.Close()
	if err := dst.MkdirAll(path.Dir(f.rel), 0o755); err != nil {
		return err
	}
	return writeFile(dst, f.rel, in, f.mode)
}

// openDest creates dest if needed and opens it as a root, so nothing is
// written outside it.
func openDest(dest string) (*os.Root, error) {
	if err := os.MkdirAll(dest, 0o755); err != nil {
		return nil, err
	}
	return os.OpenRoot(dest)
}

// writeFile writes r to name inside root with mode 0755 when mode has any
// executable bit, else 0644. An existing symbolic link at name is replaced,
// never written through.
func writeFile(root *os.Root, name string, r io.Reader, mode fs.FileMode) error {
	perm := fs.FileMode(0o644)
	if mode&0o111 != 0 {
		perm = 0o755
	}
	if fi, err := root.Lstat(name); err == nil && fi.Mode()&fs.ModeSymlink != 0 {
		if err := root.Remove(name); err != nil {
			return err
		}
	}
	out, err := root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, perm)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, r); err != nil {
		out.Close()
		return err
	}
	if err := out.Close(); err != nil {
		return err
	}
	return root.Chmod(name, perm)
}
