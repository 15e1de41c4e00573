package node

import (
	"path/filepath"

	"github.com/aloft-dev/aloft/internal/sandbox"
	"github.com/aloft-dev/aloft/internal/sandbox/process"
)

// newIsolatingDriver returns the namespaces+cgroups driver, or why the host
// cannot run it.
func newIsolatingDriver(cfg Config) (sandbox.Driver, error) {
	return process.New(process.Options{
		StateDir:       filepath.Join(cfg.DataDir, "sandbox"),
		MemoryBudgetMB: cfg.MemoryMB,
		Logger:         cfg.Logger.With("component", "sandbox"),
	})
}
