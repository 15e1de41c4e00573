// Package process is the isolating sandbox driver: each function instance is
// a process in its own pid, mount, ipc, uts and network namespaces, with a
// read-only view of the host's system directories, its code read-only at
// /var/task, a private size-limited /tmp, a uid of its own without
// capabilities, no_new_privs, a seccomp filter, and a cgroup that limits its
// memory, processes and CPU share. Instances of functions with network
// "outbound" also get a veth with NAT, filtered so that they reach neither
// the host nor each other (see net_linux.go).
//
// The driver re-executes the current binary (/proc/self/exe) as a short-lived
// init shim inside the new namespaces; the shim builds the filesystem view,
// drops privileges and execs the function's runtime, which then runs as pid 1
// of its pid namespace. Programs that use this driver must call MaybeRunInit
// first thing in main (tests: in TestMain). See docs/security.md.
package process

import (
	"errors"
	"log/slog"
	"net/netip"
)

// Name is the driver's name.
const Name = "process"

// Defaults of Options.
const (
	DefaultPidsMax    = 1024 // Lambda's process/thread limit
	DefaultTmpMB      = 512  // Lambda's default ephemeral storage
	DefaultCgroupName = "aloft"
	DefaultPrewarm    = 2 // pre-forked sandbox inits
)

// DefaultOutboundRange is the default of Options.OutboundRange.
var DefaultOutboundRange = netip.MustParsePrefix("10.231.0.0/16")

// RuntimeAPIAddr is where the Runtime API listens inside every instance's
// network namespace (each instance has its own loopback).
const RuntimeAPIAddr = "127.0.0.1:9001"

// Paths of the code and the runtime directory inside an instance.
const (
	TaskRoot    = "/var/task"
	RuntimeRoot = "/var/runtime"
)

// ErrOutboundUnsupported is returned (wrapped, with what is missing) by
// Start for a function with network "outbound" when this host cannot give
// instances an outbound network (see Isolation().Missing).
var ErrOutboundUnsupported = errors.New("network \"outbound\" is unavailable on this host")

// Options configure a Driver. The zero value of every field but StateDir
// means its default.
type Options struct {
	// StateDir is a directory the driver owns (e.g. <data>/sandbox). It holds
	// only an empty directory that instances use as the mount point of their
	// private root; it must not be shared with another running driver.
	StateDir string
	// CgroupName is the cgroup, below the cgroup of the current process, under
	// which the driver creates its instances' cgroups. Default "aloft".
	CgroupName string
	// UID and GID, when set, are the one identity every instance runs as.
	// By default (0) each instance runs as its own user and group, out of
	// the range package uids reserves, so tenants share no per-user kernel
	// state. Setting them gives that up; it is for hosts where the range
	// cannot be used.
	UID, GID int
	// PidsMax is the limit of processes and threads per instance. Default 1024.
	PidsMax int
	// PidsTotal limits the processes and threads of all instances
	// together, so that they cannot use up the host's pid space (about 32
	// instances at PidsMax would). Default: three quarters of the host's
	// (the lower of kernel.pid_max and kernel.threads-max).
	PidsTotal int
	// MemoryBudgetMB is the node's memory budget for instances. The
	// driver's parent cgroup is limited to it plus room for the pooled
	// inits, a bound on all instances together below the host's memory.
	// 0 means no bound beyond the host's own.
	MemoryBudgetMB int
	// OutboundRange is the IPv4 range out of which instances with network
	// "outbound" get a /30 each (the host end of their veth and their own
	// address). It must not be used elsewhere on the host or its networks.
	// Default 10.231.0.0/16.
	OutboundRange netip.Prefix
	// Prewarm is how many sandbox inits the driver keeps pre-forked: in
	// their namespaces, in their own cgroups and with their Runtime API
	// listener open, waiting for a function. Start takes one when one is
	// ready, which saves the cgroup attach (~10 ms on cgroup v1) and the
	// function-independent mounts; the pool refills in the background.
	// Pooled inits hold a few MB each and are not counted against any
	// memory budget. 0 means the default, 2; a negative value disables the
	// pool (every Start forks its init).
	Prewarm int
	// Logger; default slog.Default().
	Logger *slog.Logger
}

func (o Options) withDefaults() Options {
	if o.CgroupName == "" {
		o.CgroupName = DefaultCgroupName
	}
	if o.UID > 0 && o.GID <= 0 {
		o.GID = o.UID
	}
	if o.PidsMax <= 0 {
		o.PidsMax = DefaultPidsMax
	}
	if !o.OutboundRange.IsValid() {
		o.OutboundRange = DefaultOutboundRange
	}
	if o.Prewarm == 0 {
		o.Prewarm = DefaultPrewarm
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o
}

// cpuWeight returns the CPU share of an instance with memMB of memory, in
// cgroup v1 cpu.shares units (1024 = one full CPU, which Lambda gives at
// 1769 MB).
func cpuShares(memMB int) int {
	s := memMB * 1024 / 1769
	if s < 2 {
		s = 2
	}
	return s
}

// cpuWeightV2 converts cpu.shares to cgroup v2 cpu.weight (the formula runc
// and systemd use: [2, 262144] → [1, 10000]).
func cpuWeightV2(shares int) int {
	w := 1 + ((shares-2)*9999)/262142
	if w < 1 {
		w = 1
	}
	if w > 10000 {
		w = 10000
	}
	return w
}
