//go:build linux

package process

import (
	"fmt"
	"unsafe"

	seccomp "github.com/elastic/go-seccomp-bpf"
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

// sandboxPolicy allows everything but deniedSyscalls and clone with
// namespace flags. clone3 passes its flags in memory, which a seccomp filter
// cannot read, so it fails with ENOSYS and libc falls back to clone.
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
		},
	}
}

// assembleSeccomp compiles sandboxPolicy into a BPF program for
// installSeccomp.
func assembleSeccomp() ([]unix.SockFilter, error) {
	p := sandboxPolicy()
	insts, err := p.Assemble()
	if err != nil {
		return nil, fmt.Errorf("cannot assemble seccomp filter: %w", err)
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
