// Package internal_test guards Aloft's dependency graph in one place: data
// flows one way (cli → api/gateway → worker → scheduler/sandbox), decisions
// stay pure, and the CLI stays a thin HTTP client.
package internal_test

import (
	"os/exec"
	"strings"
	"testing"
)

const mod = "github.com/aloft-dev/aloft/"

func TestDependencyGraph(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("no go toolchain on PATH")
	}
	rules := []struct {
		pkg string
		// stdlibOnly: besides the listed allowed packages of this module,
		// only the standard library (transitively).
		stdlibOnly bool
		allowed    []string
		forbidden  []string
	}{
		{pkg: "internal/model", stdlibOnly: true},
		{pkg: "internal/scheduler", stdlibOnly: true, allowed: []string{"internal/model"}},
		{pkg: "internal/cli", forbidden: []string{
			"github.com/nats-io/nats-server", "github.com/nats-io/nats.go", "github.com/tetratelabs/wazero",
			mod + "internal/node", mod + "internal/worker", mod + "internal/store", mod + "internal/sandbox",
			mod + "internal/api", mod + "internal/gateway", mod + "internal/scheduler", mod + "internal/runtimeapi",
		}},
		{pkg: "internal/worker", forbidden: []string{
			mod + "internal/gateway", mod + "internal/api", mod + "internal/apierr", mod + "internal/cli",
			mod + "internal/node", mod + "internal/store", mod + "internal/queue", mod + "internal/triggers",
		}},
	}
	for _, r := range rules {
		t.Run(r.pkg, func(t *testing.T) {
			out, err := exec.Command("go", "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", mod+r.pkg).CombinedOutput()
			if err != nil {
				t.Fatalf("go list: %v\n%s", err, out)
			}
			deps := strings.Fields(string(out))
			if len(deps) == 0 {
				t.Fatal("go list printed nothing")
			}
			for _, dep := range deps {
				if dep == mod+r.pkg {
					continue
				}
				if r.stdlibOnly && !allowed(dep, r.allowed) {
					t.Errorf("%s depends on %s; it may use only the standard library%s", r.pkg, dep, also(r.allowed))
				}
				for _, f := range r.forbidden {
					if dep == f || strings.HasPrefix(dep, f+"/") {
						t.Errorf("%s depends on %s", r.pkg, dep)
					}
				}
			}
		})
	}
}

func allowed(dep string, list []string) bool {
	for _, a := range list {
		if dep == mod+a {
			return true
		}
	}
	return false
}

func also(list []string) string {
	if len(list) == 0 {
		return ""
	}
	return " and " + strings.Join(list, ", ")
}
