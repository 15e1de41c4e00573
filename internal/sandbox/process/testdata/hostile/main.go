// Command hostile is a Lambda runtime (Go, speaking the Runtime API directly)
// whose invocations try to escape the sandbox. The payload is an operation
// "name:argument"; the response is "ok: …" when the operation succeeded or
// "err: …" when it failed. The process driver's tests check the answers.
package main

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unsafe"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "sleep" {
		time.Sleep(time.Hour)
		return
	}
	api := "http://" + os.Getenv("AWS_LAMBDA_RUNTIME_API") + "/2018-06-01/runtime/invocation/"
	for {
		resp, err := http.Get(api + "next")
		if err != nil {
			fmt.Fprintln(os.Stderr, "next:", err)
			os.Exit(1)
		}
		payload, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		id := resp.Header.Get("Lambda-Runtime-Aws-Request-Id")
		out := run(string(payload))
		r, err := http.Post(api+id+"/response", "text/plain", strings.NewReader(out))
		if err != nil {
			fmt.Fprintln(os.Stderr, "response:", err)
			os.Exit(1)
		}
		r.Body.Close()
	}
}

// hoard keeps what operations hold on to between invocations.
var hoard []int

func result(s string, err error) string {
	if err != nil {
		return "err: " + err.Error()
	}
	return "ok: " + s
}

func run(op string) string {
	name, arg, _ := strings.Cut(op, ":")
	switch name {
	case "echo":
		return "ok: " + arg
	case "read":
		b, err := os.ReadFile(arg)
		return result(string(b), err)
	case "ls":
		es, err := os.ReadDir(arg)
		var names []string
		for _, e := range es {
			names = append(names, e.Name())
		}
		return result(strings.Join(names, " "), err)
	case "write":
		return result("", os.WriteFile(arg, []byte("x"), 0o644))
	case "id":
		status, _ := os.ReadFile("/proc/self/status")
		var keep []string
		for _, l := range strings.Split(string(status), "\n") {
			for _, k := range []string{"Uid:", "Gid:", "Groups:", "CapInh:", "CapPrm:", "CapEff:", "CapBnd:", "CapAmb:", "NoNewPrivs:", "Seccomp:"} {
				if strings.HasPrefix(l, k) {
					keep = append(keep, strings.Join(strings.Fields(l), " "))
				}
			}
		}
		return "ok: " + strings.Join(keep, "\n")
	case "kill": // kill:PID, kill:-1
		pid, _ := strconv.Atoi(arg)
		return result("", syscall.Kill(pid, syscall.SIGKILL))
	case "killall-child": // kill -9 -1 from a child that is not pid 1
		cmd := exec.Command("/bin/sh", "-c", "kill -9 -1; echo survived")
		b, err := cmd.CombinedOutput()
		return result(string(b), err)
	case "connect":
		c, err := net.DialTimeout("tcp", arg, 2*time.Second)
		if err == nil {
			c.Close()
		}
		return result("", err)
	case "talk": // talk:HOST:PORT: read the server's first line
		c, err := net.DialTimeout("tcp", arg, 2*time.Second)
		if err != nil {
			return result("", err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		b := make([]byte, 256)
		n, err := c.Read(b)
		return result(strings.TrimSpace(string(b[:n])), err)
	case "serve": // serve:PORT: answer "from REMOTE" on every address, in the background
		ln, err := net.Listen("tcp", ":"+arg)
		if err != nil {
			return result("", err)
		}
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				fmt.Fprintf(c, "from %s\n", c.RemoteAddr().(*net.TCPAddr).IP)
				c.Close()
			}
		}()
		return result(ln.Addr().String(), nil)
	case "addrs": // the instance's interface addresses
		addrs, err := net.InterfaceAddrs()
		var s []string
		for _, a := range addrs {
			s = append(s, a.String())
		}
		return result(strings.Join(s, " "), err)
	case "mount":
		os.MkdirAll("/tmp/m", 0o755)
		return result("", syscall.Mount("tmpfs", "/tmp/m", "tmpfs", 0, ""))
	case "ptrace": // ptrace:PID
		pid, _ := strconv.Atoi(arg)
		_, _, e := syscall.Syscall6(syscall.SYS_PTRACE, syscall.PTRACE_ATTACH, uintptr(pid), 0, 0, 0, 0)
		return result("", errno(e))
	case "module":
		_, _, e := syscall.Syscall(syscall.SYS_INIT_MODULE, uintptr(unsafe.Pointer(&[]byte{0}[0])), 1, uintptr(unsafe.Pointer(&[]byte{0}[0])))
		return result("", errno(e))
	case "userns":
		_, _, e := syscall.RawSyscall(syscall.SYS_UNSHARE, syscall.CLONE_NEWUSER, 0, 0)
		return result("", errno(e))
	case "clone-userns":
		cmd := exec.Command("/proc/self/exe", "sleep")
		cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWUSER}
		err := cmd.Start()
		if err == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
		return result("", err)
	case "inotify-hog": // open inotify instances until refused, and keep them
		n := 0
		for {
			fd, err := syscall.InotifyInit()
			if err != nil {
				return fmt.Sprintf("ok: %d %v", n, err)
			}
			hoard = append(hoard, fd)
			n++
		}
	case "open-files": // open files until refused; reports how many, then closes them
		var fds []int
		var err error
		for len(fds) < 1<<20 {
			var fd int
			if fd, err = syscall.Open("/dev/null", syscall.O_RDONLY, 0); err != nil {
				break
			}
			fds = append(fds, fd)
		}
		for _, fd := range fds {
			syscall.Close(fd)
		}
		return fmt.Sprintf("%d: %v", len(fds), err)
	case "add-key": // a key in the user keyring
		typ, _ := syscall.BytePtrFromString("user")
		desc, _ := syscall.BytePtrFromString("secret")
		data := []byte("value")
		_, _, e := syscall.Syscall6(syscall.SYS_ADD_KEY, uintptr(unsafe.Pointer(typ)), uintptr(unsafe.Pointer(desc)),
			uintptr(unsafe.Pointer(&data[0])), uintptr(len(data)), 0xfffffffb /* KEY_SPEC_USER_KEYRING */, 0)
		return result("", errno(e))
	case "spawn": // spawn:N sleeping children, left running
		n, _ := strconv.Atoi(arg)
		for i := 0; i < n; i++ {
			if _, err := os.StartProcess("/proc/self/exe", []string{"hostile", "sleep"}, &os.ProcAttr{}); err != nil {
				return result("", err)
			}
		}
		return result(arg, nil)
	case "forkbomb":
		n := 0
		var err error
		var procs []*os.Process
		for n < 5000 {
			var p *os.Process
			p, err = os.StartProcess("/proc/self/exe", []string{"hostile", "sleep"}, &os.ProcAttr{})
			if err != nil {
				break
			}
			procs = append(procs, p)
			n++
		}
		for _, p := range procs {
			p.Kill()
			p.Wait()
		}
		if err != nil {
			err = fmt.Errorf("after %d children: %w", n, err)
		}
		return result(strconv.Itoa(n), err)
	case "alloc": // alloc:MB, touching every page
		mb, _ := strconv.Atoi(arg)
		var keep [][]byte
		for i := 0; i < mb; i++ {
			b := make([]byte, 1<<20)
			for j := range b {
				if j%4096 == 0 {
					b[j] = 1
				}
			}
			keep = append(keep, b)
		}
		return fmt.Sprintf("ok: %d", len(keep))
	case "filltmp": // filltmp:MB
		mb, _ := strconv.Atoi(arg)
		f, err := os.Create("/tmp/fill")
		if err != nil {
			return result("", err)
		}
		defer os.Remove("/tmp/fill")
		defer f.Close()
		chunk := bytes.Repeat([]byte{1}, 1<<20)
		for i := 0; i < mb; i++ {
			if _, err := f.Write(chunk); err != nil {
				return result(strconv.Itoa(i), err)
			}
		}
		return result(strconv.Itoa(mb), nil)
	}
	return "err: unknown op " + name
}

func errno(e syscall.Errno) error {
	if e == 0 {
		return nil
	}
	return e
}
