// Command aloft is the Aloft binary: `aloft up` runs a node, every other
// command is a client of a running node.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/aloft-dev/aloft/internal/bench"
	"github.com/aloft-dev/aloft/internal/cli"
	"github.com/aloft-dev/aloft/internal/sandbox"
	"github.com/aloft-dev/aloft/internal/sandbox/process"
	"github.com/aloft-dev/aloft/internal/sim"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

func main() {
	// The isolating sandbox re-executes this binary as the init of each
	// instance; in that role it never returns from here.
	process.MaybeRunInit()
	// Descriptors this process inherited must not reach functions (nor any
	// other program it runs).
	if err := sandbox.MarkInheritedCloseOnExec(); err != nil {
		cli.PrintError(os.Stderr, err)
		os.Exit(1)
	}
	// Interrupts end the command's context: `aloft up` drains, `aloft logs -f` stops.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	root := cli.NewRoot(version, newUpCmd(), sim.NewCommand(), bench.NewCommand())
	if err := root.ExecuteContext(ctx); err != nil {
		cli.PrintError(os.Stderr, err)
		os.Exit(1)
	}
}
