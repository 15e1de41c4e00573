package sandbox

import (
	"os"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
)

// MarkInheritedCloseOnExec marks every descriptor above stderr
// close-on-exec, so that none reaches a program this process execs unless
// it is passed on purpose (exec.Cmd's ExtraFiles are dup'ed past this).
// Call it at start, for descriptors the process inherited, and in a
// sandbox init right before it execs the function: a descriptor to a host
// directory would otherwise open the host to the function through
// /proc/self/fd/N.
func MarkInheritedCloseOnExec() error {
	err := unix.CloseRange(3, ^uint(0), unix.CLOSE_RANGE_CLOEXEC)
	if err == nil {
		return nil
	}
	// Before Linux 5.11: one by one, from the process's descriptor table.
	entries, rerr := os.ReadDir("/proc/self/fd")
	if rerr != nil {
		return err
	}
	for _, e := range entries {
		if fd, _ := strconv.Atoi(e.Name()); fd > 2 {
			syscall.CloseOnExec(fd) // the directory's own descriptor is gone by then: harmless
		}
	}
	return nil
}
