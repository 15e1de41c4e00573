package node

import (
	"errors"

	"github.com/aloft-dev/aloft/internal/sandbox"
)

// newIsolatingDriver returns the namespaces+cgroups driver, or why the host
// cannot run it.
func newIsolatingDriver(cfg Config) (sandbox.Driver, error) {
	return nil, errors.New("the isolating process driver is not built yet")
}
