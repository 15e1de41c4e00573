//go:build linux

package process

import (
	"fmt"
	"unsafe"

	seccomp "github.com/elastic/go-seccomp-bpf"
	"github.com/elastic/go-seccomp-bpf/arch"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// deniedSyscalls fail with EPERM inside an instance: they change mounts or
// namespaces, inspect or control other processes, or reach kernel surfaces a
// function has no business with (modules, kexec, bpf, keyrings, perf,
// io_uring, userfaultfd, raw I/O ports).
var deniedSyscalls = []string{
	"mount", "umount2", "pivot_root", "chroot", "move_mount", "open_tree", "fsopen",
	"fsconfig", "fsmount", "fspick", "mount_setattr",
	"unshare", "setns",
	"ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd",
	"kexec_load", "kexec_file_load", "reboot",
	"init_module", "finit_module", "delete_module",
	"bpf", "perf_event_open", "userfaultfd",
	"keyctl", "add_key", "request_key",
	"swapon", "swapoff", "acct", "quotactl", "syslog",
	"open_by_handle_at", "name_to_handle_at", "lookup_dcookie",
	"iopl", "ioperm", "settimeofday", "clock_settime", "clock_adjtime", "adjtimex",
	"io_uring_setup", "io_uring_enter", "io_uring_register",
}

// newNamespaceFlags are the clone flags that would create namespaces
// (notably a user namespace, the usual way to regain capabilities).
const newNamespaceFlags = unix.CLONE_NEWUSER | unix.CLONE_NEWNS | unix.CLONE_NEWPID |
	unix.CLONE_NEWNET | unix.CLONE_NEWUTS | unix.CLONE_NEWIPC | unix.CLONE_NEWCGROUP | unix.CLONE_NEWTIME

// allowedSocketFamilies are the address families an instance may open
// sockets of: local and IP sockets, and netlink for its route protocol
// only (Go, Node and Python list interfaces through it). Everything else —
// AF_VSOCK (not network-namespaced: a socket bound there is bound for the
// whole host), AF_PACKET, AF_ALG, AF_KEY, netfilter and audit netlink… —
// fails with EAFNOSUPPORT, as on a kernel built without the family.
var allowedSocketFamilies = []uint64{unix.AF_UNIX, unix.AF_INET, unix.AF_INET6, unix.AF_NETLINK}

// socketRules deny socket() for any family outside allowedSocketFamilies
// and netlink sockets of another protocol than NETLINK_ROUTE. The
// comparisons are on the whole 64-bit register: a value with high bits set
// (which the kernel would truncate to an allowed int) is denied too.
func socketRules() []seccomp.NameWithConditions {
	var otherFamily seccomp.ArgumentConditions
	for _, f := range allowedSocketFamilies {
		otherFamily = append(otherFamily, seccomp.Condition{Argument: 0, Operation: seccomp.NotEqual, Value: f})
	}
	return []seccomp.NameWithConditions{
		{Name: "socket", Conditions: otherFamily},
		{Name: "socket", Conditions: seccomp.ArgumentConditions{
			{Argument: 0, Operation: seccomp.Equal, Value: unix.AF_NETLINK},
			{Argument: 2, Operation: seccomp.NotEqual, Value: unix.NETLINK_ROUTE},
		}},
	}
}

// sandboxPolicy allows everything but deniedSyscalls, clone with namespace
// flags and sockets outside allowedSocketFamilies. clone3 passes its flags
// in memory, which a seccomp filter cannot read, so it fails with ENOSYS and
// libc falls back to clone. The policy is for the native system-call ABI
// only; seccompProgram refuses every other one.
func sandboxPolicy() seccomp.Policy {
	var cloneNS []seccomp.NameWithConditions
	for bit := uint64(1); bit != 0 && bit <= newNamespaceFlags; bit <<= 1 {
		if newNamespaceFlags&bit != 0 {
			cloneNS = append(cloneNS, seccomp.NameWithConditions{
				Name:       "clone",
				Conditions: seccomp.ArgumentConditions{{Argument: 0, Operation: seccomp.BitsSet, Value: bit}},
			})
		}
	}
	return seccomp.Policy{
		DefaultAction: seccomp.ActionAllow,
		Syscalls: []seccomp.SyscallGroup{
			{Action: seccomp.ActionErrno, Names: deniedSyscalls, NamesWithCondtions: cloneNS},
			{Action: seccomp.ActionErrno | seccomp.Action(unix.ENOSYS), Names: []string{"clone3"}},
			{Action: seccomp.ActionErrno | seccomp.Action(unix.EAFNOSUPPORT), NamesWithCondtions: socketRules()},
		},
	}
}

// seccompArchOffset is the offset of arch in struct seccomp_data.
const seccompArchOffset = 4

// seccompProgram is sandboxPolicy as a BPF program, behind a guard that
// refuses (ENOSYS) every system call made through another ABI than the
// native one: the i386 entry (int $0x80) and, on arm64, the 32-bit compat
// entry. The library's own architecture check jumps to the policy's default
// action — ALLOW — for a foreign ABI, which would let a 64-bit process make
// every denied call with its 32-bit number. (The x32 ABI shares x86-64's
// audit architecture; the library refuses it by the number's x32 bit.)
func seccompProgram() ([]bpf.Instruction, error) {
	native, err := arch.GetInfo("")
	if err != nil {
		return nil, fmt.Errorf("cannot build seccomp filter: %w", err)
	}
	p := sandboxPolicy()
	policy, err := p.Assemble()
	if err != nil {
		return nil, fmt.Errorf("cannot assemble seccomp filter: %w", err)
	}
	guard := []bpf.Instruction{
		bpf.LoadAbsolute{Off: seccompArchOffset, Size: 4},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: uint32(native.ID), SkipTrue: 1},
		bpf.RetConstant{Val: uint32(seccomp.ActionErrno) | uint32(unix.ENOSYS)},
	}
	return append(guard, policy...), nil
}

// assembleSeccomp compiles seccompProgram for installSeccomp.
func assembleSeccomp() ([]unix.SockFilter, error) {
	insts, err := seccompProgram()
	if err != nil {
		return nil, err
	}
	out := make([]unix.SockFilter, 0, len(insts))
	for _, in := range insts {
		raw, err := in.Assemble()
		if err != nil {
			return nil, fmt.Errorf("cannot assemble seccomp filter: %w", err)
		}
		out = append(out, unix.SockFilter{Code: raw.Op, Jt: raw.Jt, Jf: raw.Jf, K: raw.K})
	}
	return out, nil
}

// installSeccomp sets no_new_privs and loads the filter on every thread
// (what seccomp.LoadFilter does, with the program assembled in advance).
func installSeccomp(filter []unix.SockFilter) error {
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("cannot set no_new_privs: %w", err)
	}
	prog := unix.SockFprog{Len: uint16(len(filter)), Filter: &filter[0]}
	if _, _, e := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER,
		unix.SECCOMP_FILTER_FLAG_TSYNC, uintptr(unsafe.Pointer(&prog))); e != 0 {
		return fmt.Errorf("cannot install seccomp filter: %w", e)
	}
	return nil
}
