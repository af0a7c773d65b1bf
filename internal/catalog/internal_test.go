package catalog

import (
	"archive/tar"
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/decap-ci/decap/internal/build"
)

func TestParseSource(t *testing.T) {
	t.Parallel()
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		source   string
		wantKind sourceKind
		wantLoc  string
		wantErr  error
	}{
		{name: "absolute directory", source: "/srv/build-scripts", wantKind: kindDir, wantLoc: "/srv/build-scripts"},
		{name: "relative directory", source: "examples/build-scripts", wantKind: kindDir, wantLoc: filepath.Join(wd, "examples/build-scripts")},
		{name: "relative directory with colon", source: "./a:b", wantKind: kindDir, wantLoc: filepath.Join(wd, "a:b")},
		{name: "https", source: "https://github.com/acme/build-scripts.git", wantKind: kindGit, wantLoc: "https://github.com/acme/build-scripts.git"},
		{name: "ssh", source: "ssh://git@github.com/acme/build-scripts.git", wantKind: kindGit, wantLoc: "ssh://git@github.com/acme/build-scripts.git"},
		{name: "scp-like", source: "git@github.com:acme/build-scripts.git", wantKind: kindGit, wantLoc: "git@github.com:acme/build-scripts.git"},
		{name: "file URL", source: "file:///srv/build-scripts.git", wantKind: kindGit, wantLoc: "file:///srv/build-scripts.git"},
		{name: "git+ absolute path", source: "git+/srv/build-scripts.git", wantKind: kindGit, wantLoc: "/srv/build-scripts.git"},
		{name: "git+ relative path", source: "git+repo", wantKind: kindGit, wantLoc: filepath.Join(wd, "repo")},
		{name: "git+ URL", source: "git+https://example.com/r.git", wantKind: kindGit, wantLoc: "https://example.com/r.git"},
		{name: "empty", source: "", wantErr: build.ErrInvalid},
		{name: "git+ alone", source: "git+", wantErr: build.ErrInvalid},
		{name: "control characters", source: "/srv/x\ny", wantErr: build.ErrInvalid},
		{name: "option-like scp", source: "-oProxyCommand=x:y", wantErr: build.ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			kind, loc, err := parseSource(tt.source)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("parseSource(%q) error = %v, want %v", tt.source, err, tt.wantErr)
			}
			if err != nil {
				return
			}
			if kind != tt.wantKind || loc != tt.wantLoc {
				t.Errorf("parseSource(%q) = %v, %q, want %v, %q", tt.source, kind, loc, tt.wantKind, tt.wantLoc)
			}
		})
	}
}

func TestRedactURL(t *testing.T) {
	t.Parallel()
	tests := []struct{ name, in, want string }{
		{"password", "https://bot:s3cret@example.com/r.git", "https://bot:xxxxx@example.com/r.git"},
		{"token as user", "https://ghp_token@github.com/a/b.git", "https://xxxxx@github.com/a/b.git"},
		{"ssh user is no secret", "ssh://git@github.com/a/b.git", "ssh://git@github.com/a/b.git"},
		{"scp-like", "git@github.com:a/b.git", "git@github.com:a/b.git"},
		{"path", "/srv/r.git", "/srv/r.git"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := redactURL(tt.in); got != tt.want {
				t.Errorf("redactURL(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

// tarEntry describes one entry of a crafted tar stream.
type tarEntry struct {
	name, link, body string
	typ              byte
	mode             int64
}

func makeTar(t *testing.T, entries []tarEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		hdr := &tar.Header{Name: e.name, Linkname: e.link, Typeflag: e.typ, Mode: e.mode, Size: int64(len(e.body)), Format: tar.FormatPAX}
		if e.typ != tar.TypeReg {
			hdr.Size = 0
		}
		if e.typ == tar.TypeXGlobalHeader {
			hdr = &tar.Header{Typeflag: tar.TypeXGlobalHeader, PAXRecords: map[string]string{"comment": "abc"}, Format: tar.FormatPAX}
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatalf("write header %q: %v", e.name, err)
		}
		if hdr.Size > 0 {
			if _, err := tw.Write([]byte(e.body)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestExtractTarPathSafety(t *testing.T) {
	t.Parallel()
	dir := func(name string) tarEntry { return tarEntry{name: name, typ: tar.TypeDir, mode: 0o755} }
	file := func(name, body string, mode int64) tarEntry {
		return tarEntry{name: name, body: body, typ: tar.TypeReg, mode: mode}
	}
	link := func(name, target string) tarEntry {
		return tarEntry{name: name, link: target, typ: tar.TypeSymlink, mode: 0o777}
	}
	tests := []struct {
		name    string
		entries []tarEntry
		wantErr bool
	}{
		{name: "git archive layout", entries: []tarEntry{
			{typ: tar.TypeXGlobalHeader},
			dir("t/"), dir("t/p/"), dir("t/p/lib/"),
			file("t/p/build.sh", "#!/bin/sh\n", 0o775),
			file("t/p/project.json", "{}", 0o664),
			file("t/p/lib/x.sh", "x", 0o644),
			link("t/p/run", "build.sh"),
			link("t/p/lib/up", "../build.sh"),
		}},
		{name: "dot-dot name", entries: []tarEntry{file("../evil", "x", 0o644)}, wantErr: true},
		{name: "dot-dot inside name", entries: []tarEntry{file("t/p/../../evil", "x", 0o644)}, wantErr: true},
		{name: "absolute name", entries: []tarEntry{file("/tmp/evil", "x", 0o644)}, wantErr: true},
		{name: "file outside the project", entries: []tarEntry{file("t/other/x", "x", 0o644)}, wantErr: true},
		{name: "file at the top", entries: []tarEntry{file("evil", "x", 0o644)}, wantErr: true},
		{name: "absolute symlink", entries: []tarEntry{link("t/p/l", "/etc/passwd")}, wantErr: true},
		{name: "symlink climbing out", entries: []tarEntry{link("t/p/l", "../../../evil")}, wantErr: true},
		{name: "symlinks combining to climb out", entries: []tarEntry{
			link("t/p/a", ".."),
			link("t/p/b", "a/../../.."),
		}, wantErr: true},
		{name: "write through a symlink", entries: []tarEntry{
			link("t/p/d", "."),
			file("t/p/d/x", "x", 0o644),
		}, wantErr: true},
		{name: "hard link", entries: []tarEntry{
			file("t/p/build.sh", "x", 0o755),
			{name: "t/p/h", link: "t/p/build.sh", typ: tar.TypeLink},
		}, wantErr: true},
		{name: "device", entries: []tarEntry{{name: "t/p/dev", typ: tar.TypeChar}}, wantErr: true},
		{name: "backslash", entries: []tarEntry{file(`t/p/..\..\evil`, "x", 0o644)}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			parent := t.TempDir()
			dest := filepath.Join(parent, "dest", "inner")
			err := extractTar(bytes.NewReader(makeTar(t, tt.entries)), dest, "t/p")
			if gotErr := err != nil; gotErr != tt.wantErr {
				t.Fatalf("extractTar() error = %v, want error: %v", err, tt.wantErr)
			}
			t.Logf("extractTar() error: %v", err)
			if err != nil && !errors.Is(err, build.ErrInvalid) {
				t.Errorf("extractTar() error = %v, want it to wrap build.ErrInvalid", err)
			}
			// Nothing may appear next to dest/inner.
			for _, d := range []string{parent, filepath.Join(parent, "dest")} {
				entries, err := os.ReadDir(d)
				if err != nil {
					t.Fatal(err)
				}
				if len(entries) != 1 {
					var names []string
					for _, e := range entries {
						names = append(names, e.Name())
					}
					t.Errorf("%s holds %q, want only the destination", d, names)
				}
			}
			if tt.wantErr {
				return
			}
			fi, err := os.Stat(filepath.Join(dest, "t/p/build.sh"))
			if err != nil {
				t.Fatal(err)
			}
			if got := fi.Mode().Perm(); got != 0o755 {
				t.Errorf("build.sh mode = %v, want 0755", got)
			}
			fi, err = os.Stat(filepath.Join(dest, "t/p/project.json"))
			if err != nil {
				t.Fatal(err)
			}
			if got := fi.Mode().Perm(); got != 0o644 {
				t.Errorf("project.json mode = %v, want 0644", got)
			}
			if got, err := os.Readlink(filepath.Join(dest, "t/p/run")); err != nil || got != "build.sh" {
				t.Errorf("run links to %q (%v), want build.sh", got, err)
			}
		})
	}
}
