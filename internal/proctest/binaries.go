package proctest

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// ModuleRoot returns the directory of the module's go.mod, as the go
// command reports it for the current directory; an error says why not.
func ModuleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", fmt.Errorf("go env GOMOD: not inside a module (got %q)", gomod)
	}
	return filepath.Dir(gomod), nil
}

// BuildBinaries builds what `make build` builds — ingest, dispatcher,
// reaper, decapctl and decap-entrypoint — from the module at root into dir,
// which must exist. An error carries the go command's output.
func BuildBinaries(root, dir string) error {
	return buildBinaries(root, dir, nil)
}

// BuildEmbeddedBinaries builds the services as `make build-embedded` does,
// for the embedded default only (-tags decap_embedded), with decapctl and
// decap-entrypoint beside them.
func BuildEmbeddedBinaries(root, dir string) error {
	return buildBinaries(root, dir, []string{"-tags", "decap_embedded"})
}

func buildBinaries(root, dir string, flags []string) error {
	for _, args := range [][]string{
		append(append([]string{"build"}, flags...), "-o", dir+string(filepath.Separator), "./cmd/ingest", "./cmd/dispatcher", "./cmd/reaper", "./cmd/decapctl"),
		{"build", "-o", filepath.Join(dir, "decap-entrypoint"), "./build-container/entrypoint"},
	} {
		cmd := exec.Command("go", args...)
		cmd.Dir = root
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("go %s: %w\n%s", strings.Join(args, " "), err, out.String())
		}
	}
	return nil
}
