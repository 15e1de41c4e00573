//go:build !linux

package sandbox

import "syscall"

// MarkInheritedCloseOnExec marks every descriptor above stderr
// close-on-exec (see the Linux version).
func MarkInheritedCloseOnExec() error {
	var lim syscall.Rlimit
	n := uint64(1024)
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim) == nil && lim.Cur < 1<<16 {
		n = lim.Cur
	}
	for fd := 3; uint64(fd) < n; fd++ {
		syscall.CloseOnExec(fd)
	}
	return nil
}
