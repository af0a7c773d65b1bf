package catalog

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/decap-ci/decap/internal/build"
)

// TestRefreshParsesChangedDescriptorsOnly checks that a refresh parses (and
// compiles the managedRefRegex of) a project.json only when its content is
// new: not on every refresh of an unchanged catalog, not when another file of
// the repository changes, and once for two projects with the same content.
// A repetition bomb makes its own project unbuildable and nothing else.
func TestRefreshParsesChangedDescriptorsOnly(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	write := func(name, content string) {
		t.Helper()
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	const plain = `{"buildImage":"golang:1.26","managedRefRegex":"main|release/.*"}`
	bomb := `{"buildImage":"x","managedRefRegex":"` + strings.Repeat(".{0,1000}", 100) + `"}`
	write("acme/one/project.json", plain)
	write("acme/one/build.sh", "#!/bin/sh\n")
	write("acme/same/project.json", plain)
	write("acme/same/build.sh", "#!/bin/sh\n")
	write("acme/bomb/project.json", bomb)
	write("acme/bomb/build.sh", "#!/bin/sh\n")

	c, err := New(Config{Source: root})
	if err != nil {
		t.Fatal(err)
	}
	var parsed []string
	c.parsed = newDescriptorCache(func(data []byte) (build.Descriptor, error) {
		parsed = append(parsed, string(data))
		return build.ParseDescriptor(data)
	})
	step := func(what string, wantParses int) {
		t.Helper()
		if err := c.Refresh(t.Context()); err != nil {
			t.Fatalf("%s: Refresh: %v", what, err)
		}
		if len(parsed) != wantParses {
			t.Errorf("%s: %d parses so far, want %d", what, len(parsed), wantParses)
		}
	}

	step("first refresh", 2)
	snap := c.Snapshot()
	if p, _ := snap.Project("acme", "bomb"); p.Descriptor != nil || !strings.Contains(p.Error, "managedRefRegex is too large") {
		t.Errorf("acme/bomb: descriptor %v, error %q; want unbuildable, managedRefRegex too large", p.Descriptor, p.Error)
	}
	for _, name := range []string{"one", "same"} {
		if _, err := snap.Lookup("acme", name); err != nil {
			t.Errorf("Lookup(acme/%s): %v", name, err)
		}
	}

	step("unchanged", 2)
	step("unchanged again", 2)
	write("acme/one/build.sh", "#!/bin/sh\necho changed\n")
	step("build.sh changed", 2)
	if c.Commit() == snap.Commit() {
		t.Fatalf("commit %s did not change with build.sh", c.Commit())
	}
	write("acme/same/project.json", `{"buildImage":"golang:1.27"}`)
	step("one project.json changed", 3)
	if err := os.RemoveAll(filepath.Join(root, "acme/bomb")); err != nil {
		t.Fatal(err)
	}
	step("bomb removed", 3)
	if n := len(c.parsed.entries); n != 2 {
		t.Errorf("cache holds %d entries after the bomb left, want 2 (the catalog's contents only)", n)
	}
	write("acme/bomb/project.json", bomb)
	write("acme/bomb/build.sh", "#!/bin/sh\n")
	step("bomb back", 4)
}
