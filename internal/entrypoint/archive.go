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
	"time"
)

// writeArtifacts writes a gzipped tarball of dir to w: its directories and
// regular files, by path relative to dir. Symbolic links are not followed
// and, like other special files, left out; it returns how many were. A
// missing dir gives a valid empty tarball.
func writeArtifacts(w io.Writer, dir string) (skipped int, err error) {
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
			return addFile(tw, path, name, info)
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

func addFile(tw *tar.Writer, path, name string, info fs.FileInfo) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := tw.WriteHeader(&tar.Header{
		Typeflag: tar.TypeReg,
		Name:     name,
		Mode:     int64(info.Mode().Perm()),
		Size:     info.Size(),
		ModTime:  info.ModTime().Truncate(time.Second),
	}); err != nil {
		return err
	}
	// A file that grows while it is archived is cut at its size when it
	// was listed; one that shrinks fails the archive, which is retried.
	n, err := io.CopyN(tw, f, info.Size())
	if err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	if n != info.Size() {
		return fmt.Errorf("%s shrank while it was archived", name)
	}
	return nil
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
