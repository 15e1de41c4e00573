//go:build linux

package process

import (
	"fmt"

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

// installSeccomp sets no_new_privs and loads the filter on every thread.
func installSeccomp() error {
	err := seccomp.LoadFilter(seccomp.Filter{
		NoNewPrivs: true,
		Flag:       seccomp.FilterFlagTSync,
		Policy:     sandboxPolicy(),
	})
	if err != nil {
		return fmt.Errorf("cannot install seccomp filter: %w", err)
	}
	return nil
}
