package ui_test

import (
	"os/exec"
	"testing"
)

// TestLogScript runs the tests of static/log.js's parser (ANSI colours,
// escape sequences and control characters dropped, section markers) under
// Node, when the machine has it; the browser test covers the view.
func TestLogScript(t *testing.T) {
	t.Parallel()
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("node is not installed: static/log.js's parser is covered by the browser test only")
	}
	out, err := exec.Command(node, "testdata/logjs_test.js").CombinedOutput()
	if err != nil {
		t.Fatalf("node testdata/logjs_test.js: %v\n%s", err, out)
	}
}
