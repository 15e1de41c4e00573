//go:build !linux

package process

import (
	"context"
	"errors"

	"github.com/aloft-dev/aloft/internal/sandbox"
)

var errNotLinux = errors.New("cannot isolate instances: missing Linux namespaces, cgroups and seccomp (not Linux)")

// Driver is unavailable outside Linux; New always fails.
type Driver struct{}

// Probe reports that nothing can be isolated here.
func Probe() (sandbox.Isolation, error) {
	return sandbox.Isolation{Level: "none", Missing: []string{"Linux namespaces, cgroups and seccomp"}}, errNotLinux
}

// New fails outside Linux.
func New(Options) (*Driver, error) { return nil, errNotLinux }

// MaybeRunInit does nothing outside Linux.
func MaybeRunInit() {}

func (*Driver) Name() string                         { return Name }
func (*Driver) Isolation() sandbox.Isolation         { iso, _ := Probe(); return iso }
func (*Driver) Paths(*sandbox.Spec) (string, string) { return TaskRoot, RuntimeRoot }
func (*Driver) Start(context.Context, *sandbox.Spec) (sandbox.Instance, error) {
	return nil, errNotLinux
}
func (*Driver) Close() error { return nil }
