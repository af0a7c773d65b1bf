package localfs

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/decap-ci/decap/internal/build"
)

// Secrets is the embedded default's build.Secrets: one file per secret,
// <dir>/<team>/<project>/<NAME>, each value encrypted with AES-256-GCM
// under a key kept in a file of its own (see NewSecrets).
//
// Who can read them: the directory is 0700 and its files 0600, the
// services' user's only; builds that run under users of their own
// (localexec, when the services run as root) reach neither the files nor
// the key. The encryption adds what file modes do not: a copy of the data
// directory (a backup, a tarball sent with a bug report) without the key
// reveals no value, and each value is bound to its team, project and name
// (the GCM additional data), so a file copied or renamed into another
// project's directory does not decrypt there. It does not protect values
// from a build that runs as the services' own user (make run without
// root): such a build reads the key as the services do, as localexec warns
// at start.
//
// It is safe for concurrent use, also by several processes (ingest writes,
// the dispatcher reads): every write is a new file renamed into place.
type Secrets struct {
	dir  string
	aead cipher.AEAD
	now  func() time.Time
}

// The layout of a secret's file: magic, the update time (Unix nanoseconds,
// big-endian), the GCM nonce, then the sealed value (ciphertext and tag).
var secretMagic = []byte("DCS1")

const (
	secretTimeLen   = 8
	secretNonceLen  = 12
	secretHeaderLen = 4 + secretTimeLen + secretNonceLen
	secretKeyLen    = 32 // AES-256
	gcmTagLen       = 16
)

// NewSecrets returns the store in dir (created 0700 if missing), whose
// values are encrypted with the key in keyFile. A missing keyFile is
// created once, 0600, with 32 random bytes (base64, one line): by whichever
// service opens the store first, the others read the same key (an atomic
// link, so two services starting together never make two keys). A key file
// that others may read or write (group or other bits in its mode) or that
// does not hold a 32-byte key is refused, as ssh refuses an open key. now
// is the clock of update times (time.Now if nil).
func NewSecrets(dir, keyFile string, now func() time.Time) (*Secrets, error) {
	if dir == "" || keyFile == "" {
		return nil, fmt.Errorf("%w: secrets directory or key file is empty", build.ErrInvalid)
	}
	if now == nil {
		now = time.Now
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create secrets directory: %w", err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return nil, fmt.Errorf("secrets directory: %w", err)
	}
	key, err := loadKey(keyFile)
	if err != nil {
		return nil, err
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("secrets key: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("secrets key: %w", err)
	}
	return &Secrets{dir: dir, aead: aead, now: now}, nil
}

// loadKey reads the key file, creating it first if it is missing. Its
// errors name the file, never its content.
func loadKey(path string) ([]byte, error) {
	if _, err := os.Lstat(path); errors.Is(err, fs.ErrNotExist) {
		if err := createKey(path); err != nil {
			return nil, err
		}
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("secrets key file: %w", err)
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("secrets key file: %w", err)
	}
	if !info.Mode().IsRegular() {
		return nil, fmt.Errorf("%w: secrets key file %s is not a regular file", build.ErrInvalid, path)
	}
	if perm := info.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("%w: secrets key file %s may be read or written by others (mode %04o); make it the services' user's alone: chmod 600 %s", build.ErrInvalid, path, perm, path)
	}
	data, err := io.ReadAll(io.LimitReader(f, 1024))
	if err != nil {
		return nil, fmt.Errorf("secrets key file: %w", err)
	}
	key, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(data)))
	if err != nil || len(key) != secretKeyLen {
		return nil, fmt.Errorf("%w: secrets key file %s does not hold a key: want %d random bytes in base64 on one line (head -c 32 /dev/urandom | base64)", build.ErrInvalid, path, secretKeyLen)
	}
	return key, nil
}

// createKey writes a new random key to path unless a file is there
// already (made meanwhile by another service: not an error).
func createKey(path string) error {
	key := make([]byte, secretKeyLen)
	if _, err := rand.Read(key); err != nil {
		return fmt.Errorf("make a secrets key: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("create secrets key file: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".secrets-key-*")
	if err != nil {
		return fmt.Errorf("create secrets key file: %w", err)
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.WriteString(base64.StdEncoding.EncodeToString(key) + "\n")
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("create secrets key file: %w", err)
	}
	// CreateTemp made it 0600. link, unlike rename, fails when path exists.
	if err := os.Link(tmp.Name(), path); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("create secrets key file: %w", err)
	}
	return syncDir(filepath.Dir(path))
}

func (s *Secrets) projectDir(team, project string) string {
	return filepath.Join(s.dir, team, project)
}

// additionalData binds a sealed value to where it belongs and to its
// header.
func additionalData(header []byte, team, project, name string) []byte {
	return append(slices.Clone(header[:4+secretTimeLen]), build.ProjectKey(team, project)+"/"+name...)
}

// Put encrypts value and stores it, replacing an earlier value.
func (s *Secrets) Put(_ context.Context, team, project, name string, value []byte) error {
	if err := build.ValidateSecretKey(team, project, name); err != nil {
		return fmt.Errorf("put secret: %w", err)
	}
	if err := build.ValidateSecretValue(value); err != nil {
		return fmt.Errorf("put secret %s: %w", name, err)
	}
	header := make([]byte, secretHeaderLen, secretHeaderLen+len(value)+s.aead.Overhead())
	copy(header, secretMagic)
	binary.BigEndian.PutUint64(header[4:], uint64(s.now().UnixNano()))
	if _, err := rand.Read(header[4+secretTimeLen:]); err != nil {
		return fmt.Errorf("put secret %s: %w", name, err)
	}
	sealed := s.aead.Seal(header, header[4+secretTimeLen:], value, additionalData(header, team, project, name))
	dir := s.projectDir(team, project)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("put secret %s: %w", name, err)
	}
	tmp, err := os.CreateTemp(dir, "."+name+".tmp-*") // never a valid name: List skips it
	if err != nil {
		return fmt.Errorf("put secret %s: %w", name, err)
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.Write(sealed)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), filepath.Join(dir, name))
	}
	if err == nil {
		err = syncDir(dir)
	}
	if err != nil {
		return fmt.Errorf("put secret %s: %w", name, err)
	}
	return nil
}

// Delete removes a secret's file.
func (s *Secrets) Delete(_ context.Context, team, project, name string) error {
	if err := build.ValidateSecretKey(team, project, name); err != nil {
		return fmt.Errorf("delete secret: %w", err)
	}
	dir := s.projectDir(team, project)
	err := os.Remove(filepath.Join(dir, name))
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("delete secret %s: %w", name, build.ErrNotFound)
	}
	if err == nil {
		err = syncDir(dir)
	}
	if err != nil {
		return fmt.Errorf("delete secret %s: %w", name, err)
	}
	return nil
}

// List reads the names, sizes and times of the project's secrets from
// their files' headers; it decrypts nothing.
func (s *Secrets) List(_ context.Context, team, project string) ([]build.SecretInfo, error) {
	if err := build.ValidateProject(team, project); err != nil {
		return nil, fmt.Errorf("list secrets: %w", err)
	}
	dir := s.projectDir(team, project)
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list secrets: %w", err)
	}
	var out []build.SecretInfo
	for _, ent := range entries { // sorted by name
		name := ent.Name()
		if build.ValidateSecretName(name) != nil || !ent.Type().IsRegular() {
			continue // a temporary file of a Put
		}
		data, fileSize, err := readSecretFile(filepath.Join(dir, name), secretHeaderLen)
		if errors.Is(err, fs.ErrNotExist) {
			continue // deleted meanwhile
		}
		if err != nil {
			return nil, fmt.Errorf("list secrets: %s: %w", name, err)
		}
		at, size, err := parseHeader(data, fileSize)
		if err != nil {
			return nil, fmt.Errorf("list secrets: %s: %w", name, err)
		}
		out = append(out, build.SecretInfo{Name: name, Size: size, UpdatedAt: at})
	}
	return out, nil
}

// Reveal decrypts the values of names that the project has.
func (s *Secrets) Reveal(_ context.Context, team, project string, names []string) (map[string][]byte, error) {
	for _, name := range names {
		if err := build.ValidateSecretKey(team, project, name); err != nil {
			return nil, fmt.Errorf("reveal secrets: %w", err)
		}
	}
	out := map[string][]byte{}
	for _, name := range names {
		data, fileSize, err := readSecretFile(filepath.Join(s.projectDir(team, project), name), -1)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("reveal secret %s: %w", name, err)
		}
		if _, _, err := parseHeader(data, fileSize); err != nil {
			return nil, fmt.Errorf("reveal secret %s: %w", name, err)
		}
		value, err := s.aead.Open(nil, data[4+secretTimeLen:secretHeaderLen], data[secretHeaderLen:], additionalData(data, team, project, name))
		if err != nil {
			// Never the content: say what may have happened.
			return nil, fmt.Errorf("reveal secret %s of %s: it does not decrypt with this key (was the key file replaced, or the file copied from another project?)", name, build.ProjectKey(team, project))
		}
		out[name] = value
	}
	return out, nil
}

// readSecretFile reads at most limit bytes of a secret's file (all of it
// when limit < 0) and returns them with the file's size. It refuses a
// symbolic link, and a file larger than a secret's can be.
func readSecretFile(path string, limit int) ([]byte, int64, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return nil, 0, err
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return nil, 0, err
	}
	if !info.Mode().IsRegular() || info.Size() > int64(secretHeaderLen+build.MaxSecretSize+gcmTagLen) {
		return nil, 0, errors.New("not a secret's file")
	}
	if limit < 0 {
		data, err := io.ReadAll(f)
		return data, info.Size(), err
	}
	buf := make([]byte, limit)
	n, err := io.ReadFull(f, buf)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
		return nil, 0, err
	}
	return buf[:n], info.Size(), nil
}

// parseHeader checks a secret file's header and returns its update time
// and, from the file's size, the value's size.
func parseHeader(data []byte, fileSize int64) (time.Time, int, error) {
	if len(data) < secretHeaderLen || !bytes.Equal(data[:4], secretMagic) || fileSize < secretHeaderLen+gcmTagLen {
		return time.Time{}, 0, errors.New("not a secret's file")
	}
	at := time.Unix(0, int64(binary.BigEndian.Uint64(data[4:]))).UTC()
	return at, int(fileSize) - secretHeaderLen - gcmTagLen, nil
}

// syncDir makes a rename or removal in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
