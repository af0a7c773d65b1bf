package catalog

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/decap-ci/decap/internal/build"
)

// extractTar writes the tar stream r under dest. Only directories, regular
// files and symbolic links are accepted, and only under prefix (directories
// may also be prefix's parents). Entries are refused, with an error wrapping
// build.ErrInvalid, when their name is absolute, not clean or goes through a
// symbolic link, and symbolic links are refused when their target is
// absolute or resolves outside dest. All writes go through os.Root, so even a
// refused stream cannot write outside dest.
func extractTar(r io.Reader, dest, prefix string) error {
	root, err := openDest(dest)
	if err != nil {
		return err
	}
	defer root.Close()
	var links []string
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("read tar: %w", err)
		}
		if hdr.Typeflag == tar.TypeXGlobalHeader {
			continue // git archive's commit ID
		}
		name := strings.TrimSuffix(hdr.Name, "/")
		if err := checkEntry(root, hdr, name, prefix); err != nil {
			return err
		}
		switch hdr.Typeflag {
		case tar.TypeDir:
			err = root.MkdirAll(name, 0o755)
		case tar.TypeReg:
			if err = root.MkdirAll(path.Dir(name), 0o755); err == nil {
				err = writeFile(root, name, tr, fs.FileMode(hdr.Mode))
			}
		case tar.TypeSymlink:
			if err = root.MkdirAll(path.Dir(name), 0o755); err == nil {
				_ = root.Remove(name) // replace what a previous export left
				err = root.Symlink(hdr.Linkname, name)
				links = append(links, name)
			}
		}
		if err != nil {
			return fmt.Errorf("extract %s: %w", displayName(name), err)
		}
	}
	// Links that each pointed inside may combine to point outside
	// ("a" -> "..", "b" -> "a/.."); resolve every one now that all exist.
	for _, name := range links {
		if _, err := root.Stat(name); err != nil && !errors.Is(err, fs.ErrNotExist) {
			_ = root.Remove(name)
			return fmt.Errorf("%w: tar entry %s: symbolic link does not resolve inside the destination", build.ErrInvalid, displayName(name))
		}
	}
	return nil
}

// checkEntry refuses a tar entry that is not safe to write under root.
func checkEntry(root *os.Root, hdr *tar.Header, name, prefix string) error {
	refuse := func(why string) error {
		return fmt.Errorf("%w: tar entry %s: %s", build.ErrInvalid, displayName(hdr.Name), why)
	}
	if name == "" || path.IsAbs(name) || !filepath.IsLocal(name) || path.Clean(name) != name || strings.Contains(name, "\\") {
		return refuse("not a clean relative path")
	}
	inside := name == prefix || strings.HasPrefix(name, prefix+"/")
	switch hdr.Typeflag {
	case tar.TypeDir:
		if !inside && !strings.HasPrefix(prefix, name+"/") {
			return refuse("outside " + prefix)
		}
	case tar.TypeReg, tar.TypeSymlink:
		if !inside || name == prefix {
			return refuse("outside " + prefix)
		}
	default:
		return refuse(fmt.Sprintf("type %q is not a directory, file or symbolic link", hdr.Typeflag))
	}
	if hdr.Typeflag == tar.TypeSymlink {
		target := hdr.Linkname
		if target == "" || path.IsAbs(target) || strings.Contains(target, "\\") {
			return refuse("symbolic link target is empty or absolute")
		}
		if !filepath.IsLocal(path.Join(path.Dir(name), target)) {
			return refuse("symbolic link points outside the destination")
		}
	}
	// No entry may be written through a symbolic link, which could lead
	// elsewhere than its name says.
	for dir := path.Dir(name); dir != "."; dir = path.Dir(dir) {
		fi, err := root.Lstat(dir)
		if err == nil && fi.Mode()&fs.ModeSymlink != 0 {
			return refuse("goes through a symbolic link")
		}
	}
	return nil
}
