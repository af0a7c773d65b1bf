package entrypoint

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"slices"

	"github.com/decap-ci/decap/internal/build"
)

// Mask is what replaces a secret in the console log.
const Mask = "***"

// MinMaskedLen is the shortest form of a secret that is masked: a value of
// one or two bytes would mask ordinary text everywhere and hide nothing.
const MinMaskedLen = 3

// maskForms returns what of value is replaced in the console log: the
// value, the value without surrounding white space (how $(cat file) reads
// it), each line of a value of several lines, and the base64 (standard and
// URL alphabet, without padding) and URL-encodings of the value and of its
// trimmed form. A secret printed another way (reversed, split, inside a
// longer base64 text) is not found: masking catches accidents, not a
// script that means to show a secret.
func maskForms(value []byte) [][]byte {
	var forms [][]byte
	add := func(b []byte) {
		if len(b) >= MinMaskedLen && !slices.ContainsFunc(forms, func(f []byte) bool { return bytes.Equal(f, b) }) {
			forms = append(forms, b)
		}
	}
	trimmed := bytes.TrimSpace(value)
	for _, v := range [][]byte{value, trimmed} {
		if len(v) < MinMaskedLen {
			continue
		}
		add(v)
		add([]byte(base64.RawStdEncoding.EncodeToString(v)))
		add([]byte(base64.RawURLEncoding.EncodeToString(v)))
		add([]byte(url.QueryEscape(string(v))))
		add([]byte(url.PathEscape(string(v))))
	}
	if bytes.ContainsAny(trimmed, "\r\n") {
		for _, line := range bytes.FieldsFunc(trimmed, func(r rune) bool { return r == '\n' || r == '\r' }) {
			if line = bytes.TrimSpace(line); len(line) >= 2*MinMaskedLen {
				add(line)
			}
		}
	}
	return forms
}

// masker writes to w what is written to it with every occurrence of a
// pattern replaced by Mask (a run of overlapping or adjacent occurrences
// by one Mask). It is streaming: a pattern split across writes is found,
// because the bytes that could begin one are held back until the next
// write or Flush shows whether they do; bytes that cannot are passed on at
// once, so a live log lags only where a secret may be starting. Write
// never fails (as consoleWriter, its w, never does); it is not safe for
// concurrent use.
type masker struct {
	w        io.Writer
	patterns [][]byte
	buf      []byte
	// carried is how many bytes at the start of buf a match found in an
	// earlier flush covers.
	carried int
	// inRun: the last byte passed on was masked, so a masked run that
	// continues needs no second Mask.
	inRun bool
}

// newMasker returns a masker of the forms of every value; with none it
// still works, passing everything through.
func newMasker(w io.Writer, values [][]byte) *masker {
	m := &masker{w: w}
	for _, v := range values {
		for _, f := range maskForms(v) {
			if !slices.ContainsFunc(m.patterns, func(p []byte) bool { return bytes.Equal(p, f) }) {
				m.patterns = append(m.patterns, f)
			}
		}
	}
	return m
}

func (m *masker) Write(p []byte) (int, error) {
	if len(m.patterns) == 0 {
		return m.w.Write(p)
	}
	m.buf = append(m.buf, p...)
	m.flush(false)
	return len(p), nil
}

// Flush passes on everything held back; call it when the input ends.
func (m *masker) Flush() {
	if len(m.patterns) > 0 {
		m.flush(true)
	}
}

func (m *masker) flush(final bool) {
	buf := m.buf
	end := len(buf)
	if !final {
		end = m.heldFrom(buf)
	}
	// Every match that starts before end lies wholly in buf: otherwise
	// buf[start:] would be a proper prefix of a pattern and end would be
	// at or before start. cover[i] says byte i is masked.
	cover := make([]bool, len(buf))
	for i := 0; i < m.carried && i < len(buf); i++ {
		cover[i] = true
	}
	for _, p := range m.patterns {
		for from := 0; from < end; {
			i := bytes.Index(buf[from:], p)
			if i < 0 || from+i >= end {
				break
			}
			s := from + i
			for j := s; j < s+len(p); j++ {
				cover[j] = true
			}
			from = s + 1
		}
	}
	out := make([]byte, 0, end)
	for i := 0; i < end; i++ {
		switch {
		case cover[i] && !m.inRun:
			out = append(out, Mask...)
			m.inRun = true
		case !cover[i]:
			out = append(out, buf[i])
			m.inRun = false
		}
	}
	if len(out) > 0 {
		m.w.Write(out)
	}
	m.carried = 0
	for end+m.carried < len(buf) && cover[end+m.carried] {
		m.carried++
	}
	m.buf = append(m.buf[:0], buf[end:]...)
}

// heldFrom returns where the bytes begin that must wait for more input:
// the earliest i such that buf[i:] is a proper prefix of a pattern
// (len(buf) when there is none).
func (m *masker) heldFrom(buf []byte) int {
	held := len(buf)
	for _, p := range m.patterns {
		for i := max(0, len(buf)-len(p)+1); i < held; i++ {
			j := bytes.IndexByte(buf[i:held], p[0])
			if j < 0 {
				break
			}
			i += j
			if bytes.HasPrefix(p, buf[i:]) {
				held = i
				break
			}
		}
	}
	return held
}

// readSecrets reads the build's secrets from dir: one file per secret,
// named as the secret (build.ValidateSecretName), at most
// build.MaxSecretSize bytes. A Kubernetes Secret volume's files are
// symbolic links into a hidden directory; they are followed, the hidden
// entries skipped. No dir (""), or a dir that does not exist, is no
// secrets.
func readSecrets(dir string) ([][]byte, error) {
	if dir == "" {
		return nil, nil
	}
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read the build's secrets: %w", err)
	}
	var values [][]byte
	for _, ent := range entries {
		if build.ValidateSecretName(ent.Name()) != nil {
			continue
		}
		p := filepath.Join(dir, ent.Name())
		info, err := os.Stat(p)
		if err != nil || !info.Mode().IsRegular() || info.Size() > build.MaxSecretSize {
			return nil, fmt.Errorf("read the build's secret %s: not a secret's file", ent.Name())
		}
		v, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("read the build's secret %s: %w", ent.Name(), err)
		}
		values = append(values, v)
	}
	return values, nil
}
