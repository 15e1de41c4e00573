package worker

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDeps guards the dependency graph: data flows from the edge (api,
// gateway, cli) through node to the worker, never back, and the worker
// knows nothing of where functions are stored.
func TestDeps(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("no go toolchain on PATH")
	}
	out, err := exec.Command("go", "list", "-deps", "github.com/aloft-dev/aloft/internal/worker").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	forbidden := []string{
		"github.com/aloft-dev/aloft/internal/gateway",
		"github.com/aloft-dev/aloft/internal/api",
		"github.com/aloft-dev/aloft/internal/apierr",
		"github.com/aloft-dev/aloft/internal/cli",
		"github.com/aloft-dev/aloft/internal/node",
		"github.com/aloft-dev/aloft/internal/store",
		"github.com/aloft-dev/aloft/internal/queue",
		"github.com/aloft-dev/aloft/internal/triggers",
	}
	deps := strings.Fields(string(out))
	if len(deps) == 0 {
		t.Fatal("go list printed no dependencies")
	}
	for _, dep := range deps {
		for _, f := range forbidden {
			if dep == f || strings.HasPrefix(dep, f+"/") {
				t.Errorf("internal/worker depends on %s", dep)
			}
		}
	}
}
