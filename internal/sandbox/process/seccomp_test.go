//go:build linux

package process

import (
	"encoding/binary"
	"runtime"
	"testing"

	seccomp "github.com/elastic/go-seccomp-bpf"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// seccompData lays out a struct seccomp_data for bpf's VM. The kernel's
// loads are native-endian and the VM's big-endian, so each 32-bit word is
// written big-endian at its native (little-endian) offset: nr at 0, arch at
// 4, argument i's low word at 16+8i and its high word at 20+8i.
func seccompData(auditArch, nr uint32, args ...uint64) []byte {
	b := make([]byte, 64)
	binary.BigEndian.PutUint32(b[0:], nr)
	binary.BigEndian.PutUint32(b[4:], auditArch)
	for i, a := range args {
		binary.BigEndian.PutUint32(b[16+8*i:], uint32(a))
		binary.BigEndian.PutUint32(b[20+8*i:], uint32(a>>32))
	}
	return b
}

// TestSeccompVerdicts runs the filter the sandbox installs on system calls
// a hostile function would make, including through the i386 entry (which
// this machine's kernel may not even offer, so it is checked here on the
// program itself).
func TestSeccompVerdicts(t *testing.T) {
	if runtime.GOARCH != "amd64" {
		t.Skip("the cases use x86-64 and i386 numbers")
	}
	prog, err := seccompProgram()
	if err != nil {
		t.Fatal(err)
	}
	vm, err := bpf.NewVM(prog)
	if err != nil {
		t.Fatal(err)
	}
	const (
		allow    = uint32(seccomp.ActionAllow)
		eperm    = uint32(seccomp.ActionErrno) | uint32(unix.EPERM)
		enosys   = uint32(seccomp.ActionErrno) | uint32(unix.ENOSYS)
		noFamily = uint32(seccomp.ActionErrno) | uint32(unix.EAFNOSUPPORT)
		x86_64   = uint32(0xc000003e) // AUDIT_ARCH_X86_64
		i386     = uint32(0x40000003) // AUDIT_ARCH_I386
		x32Bit   = 0x40000000
	)
	tests := []struct {
		name string
		data []byte
		want uint32
	}{
		{"getpid", seccompData(x86_64, unix.SYS_GETPID), allow},
		{"unshare user namespace", seccompData(x86_64, unix.SYS_UNSHARE, unix.CLONE_NEWUSER), eperm},
		{"clone plain", seccompData(x86_64, unix.SYS_CLONE, uint64(unix.SIGCHLD)), allow},
		{"clone user namespace", seccompData(x86_64, unix.SYS_CLONE, unix.CLONE_NEWUSER), eperm},
		{"clone3", seccompData(x86_64, unix.SYS_CLONE3), enosys},
		{"mount", seccompData(x86_64, unix.SYS_MOUNT), eperm},
		{"i386 getpid", seccompData(i386, 20), enosys},
		{"i386 unshare", seccompData(i386, 310, unix.CLONE_NEWUSER), enosys},
		{"i386 mount", seccompData(i386, 21), enosys},
		{"x32 unshare", seccompData(x86_64, x32Bit|272, unix.CLONE_NEWUSER), enosys},
		{"socket inet", seccompData(x86_64, unix.SYS_SOCKET, unix.AF_INET, unix.SOCK_STREAM), allow},
		{"socket inet6", seccompData(x86_64, unix.SYS_SOCKET, unix.AF_INET6, unix.SOCK_DGRAM), allow},
		{"socket unix", seccompData(x86_64, unix.SYS_SOCKET, unix.AF_UNIX, unix.SOCK_STREAM), allow},
		{"socket netlink route", seccompData(x86_64, unix.SYS_SOCKET, unix.AF_NETLINK, unix.SOCK_RAW, unix.NETLINK_ROUTE), allow},
		{"socket netlink netfilter", seccompData(x86_64, unix.SYS_SOCKET, unix.AF_NETLINK, unix.SOCK_RAW, unix.NETLINK_NETFILTER), noFamily},
		{"socket netlink audit", seccompData(x86_64, unix.SYS_SOCKET, unix.AF_NETLINK, unix.SOCK_RAW, unix.NETLINK_AUDIT), noFamily},
		{"socket vsock", seccompData(x86_64, unix.SYS_SOCKET, unix.AF_VSOCK, unix.SOCK_STREAM), noFamily},
		{"socket packet", seccompData(x86_64, unix.SYS_SOCKET, unix.AF_PACKET, unix.SOCK_RAW), noFamily},
		{"socket alg", seccompData(x86_64, unix.SYS_SOCKET, unix.AF_ALG, unix.SOCK_SEQPACKET), noFamily},
		{"socket key", seccompData(x86_64, unix.SYS_SOCKET, unix.AF_KEY, unix.SOCK_RAW), noFamily},
		// The kernel truncates the family to an int: high bits must not
		// turn a denied family into a pass.
		{"socket vsock high bits", seccompData(x86_64, unix.SYS_SOCKET, 1<<32|unix.AF_VSOCK, unix.SOCK_STREAM), noFamily},
		{"socket inet high bits", seccompData(x86_64, unix.SYS_SOCKET, 1<<32|unix.AF_INET, unix.SOCK_STREAM), noFamily},
		{"socket netlink high-bit protocol", seccompData(x86_64, unix.SYS_SOCKET, unix.AF_NETLINK, unix.SOCK_RAW, 1<<32|unix.NETLINK_NETFILTER), noFamily},
	}
	for _, tt := range tests {
		got, err := vm.Run(tt.data)
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		if uint32(got) != tt.want {
			t.Errorf("%s: verdict %#x, want %#x", tt.name, uint32(got), tt.want)
		}
	}
}
