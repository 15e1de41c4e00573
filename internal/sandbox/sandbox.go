// Package sandbox defines the seam between the worker and the thing that runs
// a function instance: a Driver starts instances, an Instance runs one
// function's runtime process (or module) until it is stopped or exits.
//
// A driver owns everything about where an instance runs: its filesystem view,
// its limits, and how the instance reaches the Lambda Runtime API. The worker
// hands the driver an http.Handler that serves the Runtime API for that one
// instance; the driver opens a listener the instance can reach (on the host's
// loopback for plain processes, inside the instance's network namespace for
// isolated ones) and sets AWS_LAMBDA_RUNTIME_API to it.
package sandbox

import (
	"context"
	"io"
	"net/http"
	"strconv"
	"time"
)

// Driver starts function instances.
type Driver interface {
	// Name is the driver's name, for status output ("plain", "process", …).
	Name() string
	// Isolation describes the protections instances of this driver get.
	Isolation() Isolation
	// Paths tells where the instance will see its code directory and the
	// runtime directory, so the caller can build the command line and
	// LAMBDA_TASK_ROOT before calling Start.
	Paths(spec *Spec) (taskRoot, runtimeRoot string)
	// Start starts an instance. It returns once the process runs; the
	// runtime's own initialisation happens afterwards, through the Runtime API.
	Start(ctx context.Context, spec *Spec) (Instance, error)
	// Close stops every instance the driver still runs and releases what the
	// driver holds (cgroups, mounts, listeners).
	Close() error
}

// Spec is everything a driver needs to start one instance.
type Spec struct {
	ID       string // unique instance id, safe as a file name
	Function string
	CodeDir  string // host directory with the unpacked code; read-only to the instance
	// RuntimeDir is a host directory with Aloft's runtime bootstraps; empty
	// for runtime "provided".
	RuntimeDir string
	// Args is the command line; Args[0] is resolved by the driver (a path in
	// the instance's view, or a name looked up on PATH).
	Args []string
	// Env is the instance's environment, KEY=VALUE, without
	// AWS_LAMBDA_RUNTIME_API, which the driver adds.
	Env      []string
	MemoryMB int    // memory limit
	TmpMB    int    // size limit of the private /tmp
	Network  string // model.NetworkNone or model.NetworkOutbound
	// RuntimeAPI serves the Lambda Runtime API for this instance.
	RuntimeAPI http.Handler
	// Output receives the instance's stdout and stderr. The driver copies
	// both into it; writes never block the instance for long.
	Output io.Writer
}

// Instance is one running function instance.
type Instance interface {
	// Done is closed when the instance's process has exited.
	Done() <-chan struct{}
	// ExitStatus describes how the instance ended; valid after Done.
	ExitStatus() ExitStatus
	// Stop kills the instance and everything it started and releases its
	// resources. It is safe to call more than once and after the process exited.
	Stop() error
	// Stats reports resource use so far.
	Stats() Stats
	// FlushOutput returns once everything the instance wrote to stdout and
	// stderr before the call has reached Spec.Output (see OutputPipe).
	FlushOutput()
}

// ExitStatus says how an instance's process ended.
type ExitStatus struct {
	Code        int    // exit code, or -1 when killed by a signal
	Signal      string // name of the signal that killed it, if any
	OutOfMemory bool   // killed for exceeding its memory limit
	Err         error  // the driver could not tell, or the wait failed
}

// String renders the status the way Lambda's "Runtime exited with error: …" does.
func (s ExitStatus) String() string {
	switch {
	case s.Signal != "":
		return "signal: " + s.Signal
	case s.Err != nil:
		return s.Err.Error()
	default:
		return "exit status " + strconv.Itoa(s.Code)
	}
}

// Stats is an instance's resource use.
type Stats struct {
	MaxMemoryBytes int64         // peak resident memory
	CPUTime        time.Duration // user + system
}

// Isolation describes what a driver enforces, for `aloft status` and the
// start-up line.
type Isolation struct {
	Level   string   `json:"level"`             // "isolated" or "none"
	Enabled []string `json:"enabled,omitempty"` // protections in force
	Missing []string `json:"missing,omitempty"` // protections the host cannot give
}

// Resizer is implemented by instances whose memory limit can change while
// they run. The worker starts pre-warmed (pooled) instances with a small
// limit and resizes them to their function's memory when it assigns one.
type Resizer interface {
	// SetMemoryLimit sets the instance's memory limit to mb megabytes (and
	// whatever the driver derives from it, such as a CPU share).
	SetMemoryLimit(mb int) error
}
