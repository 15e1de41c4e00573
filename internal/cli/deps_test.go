package cli

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDeps guards the dependency graph: the CLI talks to the server over
// HTTP only, so it links none of the server's packages.
func TestDeps(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("no go toolchain on PATH")
	}
	out, err := exec.Command("go", "list", "-deps", "github.com/aloft-dev/aloft/internal/cli").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	forbidden := []string{
		"github.com/nats-io/",
		"github.com/aloft-dev/aloft/internal/node",
		"github.com/aloft-dev/aloft/internal/worker",
		"github.com/aloft-dev/aloft/internal/store",
		"github.com/aloft-dev/aloft/internal/sandbox",
		"github.com/aloft-dev/aloft/internal/api",
		"github.com/aloft-dev/aloft/internal/gateway",
		"github.com/aloft-dev/aloft/internal/scheduler",
		"github.com/aloft-dev/aloft/internal/runtimeapi",
		"github.com/tetratelabs/wazero",
	}
	for _, dep := range strings.Fields(string(out)) {
		for _, f := range forbidden {
			if dep == f || strings.HasPrefix(dep, f+"/") || (strings.HasSuffix(f, "/") && strings.HasPrefix(dep, f)) {
				t.Errorf("internal/cli depends on %s", dep)
			}
		}
	}
}
