// Command aloft is the Aloft binary: `aloft up` runs a node, every other
// command is a client of a running node.
package main

import (
	"os"

	"github.com/aloft-dev/aloft/internal/cli"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

func main() {
	root := cli.NewRoot(version, newUpCmd())
	if err := root.Execute(); err != nil {
		cli.PrintError(os.Stderr, err)
		os.Exit(1)
	}
}
