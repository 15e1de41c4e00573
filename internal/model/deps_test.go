package model

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDeps guards the dependency graph: every package depends on model, so
// model depends on the standard library only. This also keeps scheduler's
// own guard (direct imports of model and the standard library) transitive.
func TestDeps(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("no go toolchain on PATH")
	}
	out, err := exec.Command("go", "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}",
		"github.com/aloft-dev/aloft/internal/model").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, dep := range strings.Fields(string(out)) {
		if dep != "github.com/aloft-dev/aloft/internal/model" {
			t.Errorf("internal/model depends on %s; it may use the standard library only", dep)
		}
	}
}
