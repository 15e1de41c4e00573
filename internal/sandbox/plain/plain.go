// Package plain is the sandbox driver of last resort: each instance is an
// ordinary child process in its own process group, with no isolation beyond
// what the operating system gives any process. It watches the instance's
// resident memory and kills it past its memory limit, so limits still hold.
// The composition root uses it only where the isolating driver cannot run,
// and says so when the node starts.
package plain

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/aloft-dev/aloft/internal/runtimeapi"
	"github.com/aloft-dev/aloft/internal/sandbox"
)

// Driver runs instances as plain child processes. The zero value is ready.
type Driver struct {
	// MemoryPoll is how often an instance's resident memory is sampled
	// (default 20ms).
	MemoryPoll time.Duration

	mu        sync.Mutex
	instances map[*instance]struct{}
}

func (d *Driver) Name() string { return "plain" }

func (d *Driver) Isolation() sandbox.Isolation {
	return sandbox.Isolation{
		Level:   "none",
		Enabled: []string{"process group kill", "memory limit (RSS watchdog)"},
		Missing: []string{"namespaces", "cgroups", "read-only filesystem view", "unprivileged user", "seccomp", "network isolation"},
	}
}

func (d *Driver) Paths(spec *sandbox.Spec) (string, string) { return spec.CodeDir, spec.RuntimeDir }

func (d *Driver) Start(ctx context.Context, spec *sandbox.Spec) (sandbox.Instance, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("cannot listen for the runtime api: %w", err)
	}
	out, w, err := sandbox.NewOutputPipe(spec.Output)
	if err != nil {
		ln.Close()
		return nil, fmt.Errorf("cannot create output pipe: %w", err)
	}
	cmd := exec.Command(spec.Args[0], spec.Args[1:]...)
	cmd.Dir = spec.CodeDir
	cmd.Env = append(spec.Env, "AWS_LAMBDA_RUNTIME_API="+ln.Addr().String())
	cmd.Stdout, cmd.Stderr = w, w
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}

	inst := &instance{
		cmd:       cmd,
		out:       out,
		srv:       runtimeapi.NewHTTPServer(spec.RuntimeAPI),
		limit:     int64(spec.MemoryMB) << 20,
		done:      make(chan struct{}),
		watchDone: make(chan struct{}),
	}
	go inst.srv.Serve(ln)
	if err := cmd.Start(); err != nil {
		w.Close()
		out.Close()
		inst.srv.Close()
		return nil, fmt.Errorf("cannot start %s: %w", spec.Args[0], err)
	}
	w.Close()
	// Opened before the process is waited for, so the pid is still its own.
	inst.procStatus, err = sandbox.OpenStatFile("/proc/" + strconv.Itoa(cmd.Process.Pid) + "/status")
	if err != nil {
		inst.kill()
		cmd.Wait()
		out.Close()
		inst.srv.Close()
		return nil, fmt.Errorf("cannot watch %s: %w", spec.Args[0], err)
	}
	d.track(inst, true)
	poll := d.MemoryPoll
	if poll == 0 {
		poll = 20 * time.Millisecond
	}
	go inst.watch(poll)
	go func() {
		err := cmd.Wait()
		<-inst.watchDone
		inst.procStatus.Close()
		inst.setExit(err)
		inst.kill() // whatever the process left in its group
		<-out.Done()
		inst.srv.Close()
		d.track(inst, false)
		close(inst.done)
	}()
	return inst, nil
}

func (d *Driver) track(inst *instance, add bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.instances == nil {
		d.instances = make(map[*instance]struct{})
	}
	if add {
		d.instances[inst] = struct{}{}
	} else {
		delete(d.instances, inst)
	}
}

// Close stops every instance and waits for them to exit.
func (d *Driver) Close() error {
	d.mu.Lock()
	all := make([]*instance, 0, len(d.instances))
	for inst := range d.instances {
		all = append(all, inst)
	}
	d.mu.Unlock()
	for _, inst := range all {
		inst.Stop()
	}
	return nil
}

type instance struct {
	cmd   *exec.Cmd
	out   *sandbox.OutputPipe
	srv   *runtimeapi.HTTPServer
	limit int64
	done  chan struct{}

	watchDone  chan struct{}
	procStatus *sandbox.StatFile // /proc/PID/status of the instance's process

	statsMu  sync.Mutex // guards statsBuf, Stats' read buffer
	statsBuf [4096]byte

	mu      sync.Mutex
	peak    int64
	oom     bool
	status  sandbox.ExitStatus
	stopped bool
}

func (i *instance) Done() <-chan struct{} { return i.done }

var _ sandbox.Resizer = (*instance)(nil)

// SetMemoryLimit changes the limit the RSS watchdog enforces.
func (i *instance) SetMemoryLimit(mb int) error {
	if mb <= 0 {
		return fmt.Errorf("cannot set memory limit: %d MB", mb)
	}
	i.mu.Lock()
	i.limit = int64(mb) << 20
	i.mu.Unlock()
	return nil
}

func (i *instance) ExitStatus() sandbox.ExitStatus {
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.status
}

// Stats reads the process's peak resident memory now, so the figure is
// exact even between the watchdog's samples.
func (i *instance) Stats() sandbox.Stats {
	i.statsMu.Lock()
	_, hwm, _ := readMemory(i.procStatus, i.statsBuf[:])
	i.statsMu.Unlock()
	i.mu.Lock()
	defer i.mu.Unlock()
	if hwm > i.peak && !i.oom {
		i.peak = hwm
	}
	return sandbox.Stats{MaxMemoryBytes: i.peak}
}

// FlushOutput copies what the instance wrote so far to its output writer.
func (i *instance) FlushOutput() { i.out.Flush() }

func (i *instance) Stop() error {
	i.mu.Lock()
	i.stopped = true
	i.mu.Unlock()
	i.kill()
	<-i.done
	return nil
}

// kill sends SIGKILL to the instance's whole process group.
func (i *instance) kill() {
	if p := i.cmd.Process; p != nil {
		syscall.Kill(-p.Pid, syscall.SIGKILL)
	}
}

func (i *instance) setExit(err error) {
	i.mu.Lock()
	defer i.mu.Unlock()
	st := sandbox.ExitStatus{OutOfMemory: i.oom}
	if ps := i.cmd.ProcessState; ps != nil {
		ws := ps.Sys().(syscall.WaitStatus)
		st.Code = ws.ExitStatus()
		if ws.Signaled() {
			st.Signal = ws.Signal().String()
		}
	} else if err != nil {
		st.Code, st.Err = -1, err
	}
	i.status = st
}

// watch samples the process's resident memory, records the peak, and kills
// the process group when it passes the limit.
func (i *instance) watch(every time.Duration) {
	defer close(i.watchDone)
	t := time.NewTicker(every)
	defer t.Stop()
	buf := make([]byte, 4096)
	for {
		rss, hwm, ok := readMemory(i.procStatus, buf)
		if !ok {
			return // the process is gone
		}
		i.mu.Lock()
		if hwm > i.peak && !i.oom {
			i.peak = hwm
		}
		over := i.limit > 0 && rss > i.limit
		if over {
			// Lambda reports the limit as the memory used by an instance it
			// killed for exceeding it.
			i.oom = true
			i.peak = i.limit
		}
		i.mu.Unlock()
		if over {
			i.kill()
			return
		}
		<-t.C
	}
}

// readMemory returns VmRSS and VmHWM in bytes from /proc/PID/status.
func readMemory(f *sandbox.StatFile, buf []byte) (rss, hwm int64, ok bool) {
	text, err := f.Read(buf)
	if err != nil {
		return 0, 0, false
	}
	for len(text) > 0 {
		var line []byte
		line, text, _ = bytes.Cut(text, []byte("\n"))
		if v, found := bytes.CutPrefix(line, []byte("VmRSS:")); found {
			rss = parseKB(v)
		} else if v, found := bytes.CutPrefix(line, []byte("VmHWM:")); found {
			hwm = parseKB(v)
		}
	}
	return rss, hwm, rss > 0 || hwm > 0
}

func parseKB(v []byte) int64 {
	v = bytes.TrimSpace(bytes.TrimSuffix(bytes.TrimSpace(v), []byte("kB")))
	n, _ := strconv.ParseInt(string(v), 10, 64)
	return n << 10
}
