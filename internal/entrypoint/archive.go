package entrypoint

import (
	"archive/tar"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// writeArtifacts writes a gzipped tarball of dir to w: its directories and
// regular files, by path relative to dir. Symbolic links are not followed
// and, like other special files, left out; so are, when owner is not
// anyOwner, files that the user owner does not own; it returns how many
// were left out. A missing dir gives a valid empty tarball.
//
// The owner check is for a build run as another user than this process's
// (the local executor's build uid): such a build cannot read a file of this
// process's user, but it may hard-link one into its artifacts, which this
// process could read. Files are opened without following a symbolic link
// and kept only if they are still the file that was listed.
func writeArtifacts(w io.Writer, dir string, owner int) (skipped int, err error) {
	gz := gzip.NewWriter(w)
	tw := tar.NewWriter(gz)
	err = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if path == dir && errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if path == dir {
			return nil
		}
		rel, err := filepath.Rel(dir, path)
		if err != nil {
			return err
		}
		name := filepath.ToSlash(rel)
		info, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case info.IsDir():
			return tw.WriteHeader(&tar.Header{
				Typeflag: tar.TypeDir,
				Name:     name + "/",
				Mode:     int64(info.Mode().Perm()),
				ModTime:  info.ModTime().Truncate(time.Second),
			})
		case info.Mode().IsRegular():
			added, err := addFile(tw, path, name, info, owner)
			if err == nil && !added {
				skipped++
			}
			return err
		default:
			skipped++
			return nil
		}
	})
	if err != nil {
		return skipped, fmt.Errorf("archive artifacts: %w", err)
	}
	if err := tw.Close(); err != nil {
		return skipped, fmt.Errorf("archive artifacts: %w", err)
	}
	if err := gz.Close(); err != nil {
		return skipped, fmt.Errorf("archive artifacts: %w", err)
	}
	return skipped, nil
}

// anyOwner is writeArtifacts's owner that keeps files of every owner.
const anyOwner = -1

// addFile adds the regular file at path, listed as info, unless it is not
// owner's or is no longer that file; added is false then.
func addFile(tw *tar.Writer, path, name string, info fs.FileInfo, owner int) (added bool, err error) {
	listed, ok := info.Sys().(*syscall.Stat_t)
	if !ok {
		return false, fmt.Errorf("%s: no file status", name)
	}
	if owner != anyOwner && int(listed.Uid) != owner {
		return false, nil
	}
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		return false, err
	}
	defer f.Close()
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		return false, err
	}
	if st.Mode&syscall.S_IFMT != syscall.S_IFREG || st.Dev != listed.Dev || st.Ino != listed.Ino {
		return false, nil // replaced since it was listed
	}
	if err := tw.WriteHeader(&tar.Header{
		Typeflag: tar.TypeReg,
		Name:     name,
		Mode:     int64(info.Mode().Perm()),
		Size:     info.Size(),
		ModTime:  info.ModTime().Truncate(time.Second),
	}); err != nil {
		return false, err
	}
	// A file that grows while it is archived is cut at its size when it
	// was listed; one that shrinks fails the archive, which is retried.
	n, err := io.CopyN(tw, f, info.Size())
	if err != nil && !errors.Is(err, io.EOF) {
		return false, err
	}
	if n != info.Size() {
		return false, fmt.Errorf("%s shrank while it was archived", name)
	}
	return true, nil
}

// gzipFile writes the gzipped content of the file at path to w.
func gzipFile(w io.Writer, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("read console log: %w", err)
	}
	defer f.Close()
	gz := gzip.NewWriter(w)
	if _, err := io.Copy(gz, f); err != nil {
		return fmt.Errorf("compress console log: %w", err)
	}
	if err := gz.Close(); err != nil {
		return fmt.Errorf("compress console log: %w", err)
	}
	return nil
}
