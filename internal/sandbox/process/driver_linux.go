//go:build linux

package process

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/aloft-dev/aloft/internal/model"
	"github.com/aloft-dev/aloft/internal/runtimeapi"
	"github.com/aloft-dev/aloft/internal/sandbox"
	"github.com/aloft-dev/aloft/internal/sandbox/uids"
	"golang.org/x/sys/unix"
)

// Driver is the isolating process driver. Create it with New.
type Driver struct {
	opts Options
	log  *slog.Logger
	cg   *cgroups
	net  *network
	iso  sandbox.Isolation
	root string          // empty mount point for instance roots
	base []byte          // initBase JSON, the same for every init
	uids *uids.Allocator // each instance's own uid; nil with Options.UID
	pool *pool           // pre-forked inits; nil when Options.Prewarm < 0

	// run and seq name the instances' cgroups: unique across runs on the
	// same state directory, so a name never refers to a leftover.
	run string
	seq atomic.Int64

	mu        sync.Mutex
	instances map[string]*Instance // nil value: id reserved by a Start in progress
	closed    bool
}

var _ sandbox.Driver = (*Driver)(nil)

// Probe reports whether this host can isolate instances, and the protections
// the driver gives. The error names every missing prerequisite.
func Probe() (sandbox.Isolation, error) {
	iso, _, err := probe(DefaultCgroupName)
	return iso, err
}

func probe(cgroupName string) (sandbox.Isolation, *cgroups, error) {
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "root (namespaces, cgroups and mounts need it; rootless user namespaces are not supported yet)")
	}
	for _, ns := range []string{"pid", "mnt", "ipc", "uts", "net"} {
		if _, err := os.Stat("/proc/self/ns/" + ns); err != nil {
			missing = append(missing, ns+" namespace")
		}
	}
	if err := unix.Prctl(unix.PR_GET_SECCOMP, 0, 0, 0, 0); err != nil {
		missing = append(missing, "seccomp")
	}
	cg, err := detectCgroups(cgroupName)
	if err != nil {
		missing = append(missing, "cgroups ("+err.Error()+")")
	}
	iso := sandbox.Isolation{Level: "isolated"}
	if len(missing) > 0 {
		return sandbox.Isolation{Level: "none", Missing: missing}, nil,
			fmt.Errorf("cannot isolate instances: missing %s", strings.Join(missing, "; "))
	}
	v := "v1"
	if cg.v2 {
		v = "v2"
	}
	iso.Enabled = []string{
		"pid, mount, ipc, uts and network namespaces",
		"read-only system directories and code; private /tmp",
		"unprivileged uid, no capabilities, no_new_privs",
		"seccomp filter",
		"cgroup " + v + " memory, pids and cpu limits",
		"loopback-only network by default",
	}
	return iso, cg, nil
}

// New checks the host, removes what a previous run left behind (instance
// cgroups and their processes) and returns a ready driver.
func New(opts Options) (*Driver, error) {
	opts = opts.withDefaults()
	if opts.StateDir == "" {
		return nil, errors.New("cannot create process driver: no state directory")
	}
	stateDir, err := filepath.Abs(opts.StateDir)
	if err != nil {
		return nil, fmt.Errorf("cannot create process driver: %w", err)
	}
	// One cgroup per state directory, so that drivers of different nodes or
	// tests on one host never clean up each other's instances.
	sum := sha256.Sum256([]byte(stateDir))
	id := hex.EncodeToString(sum[:6])
	iso, cg, err := probe(opts.CgroupName + "/" + id)
	if err != nil {
		return nil, err
	}
	log := opts.Logger.With("component", "sandbox", "driver", Name)
	nw, err := newNetwork(opts.OutboundRange, id, log)
	if err != nil {
		return nil, fmt.Errorf("cannot create process driver: %w", err)
	}
	if opts.PidsTotal <= 0 {
		opts.PidsTotal = defaultPidsTotal()
	}
	lim := parentLimits{pids: opts.PidsTotal}
	if opts.MemoryBudgetMB > 0 {
		lim.memMB = opts.MemoryBudgetMB + poolHeadroomMB(opts.Prewarm)
	}
	if err := cg.setup(lim); err != nil {
		return nil, fmt.Errorf("cannot create process driver: %w", err)
	}
	raiseFileMax(log)
	if err := cg.cleanup(); err != nil {
		return nil, fmt.Errorf("cannot clean up previous instances: %w", err)
	}
	// Network leftovers go after the processes: a dead namespace takes its
	// veth along.
	if err := nw.cleanup(); err != nil {
		log.Warn("cannot clean up the network of previous instances", "err", err)
	}
	if err := nw.setup(); err != nil {
		nw.err = err
		iso.Missing = append(iso.Missing, "outbound network ("+err.Error()+")")
	} else {
		iso.Enabled = append(iso.Enabled, "outbound network on request (own veth and NAT; host and other instances unreachable)")
	}
	root := filepath.Join(stateDir, "root")
	if err := os.MkdirAll(root, 0o700); err != nil {
		return nil, fmt.Errorf("cannot create process driver: %w", err)
	}
	base, err := json.Marshal(initBase{Root: root})
	if err != nil {
		return nil, fmt.Errorf("cannot create process driver: %w", err)
	}
	var ids *uids.Allocator
	if opts.UID <= 0 {
		if ids, err = uids.Claim(); err != nil {
			return nil, fmt.Errorf("cannot create process driver: %w", err)
		}
	}
	var run [4]byte
	if _, err := rand.Read(run[:]); err != nil {
		return nil, fmt.Errorf("cannot create process driver: %w", err)
	}
	d := &Driver{
		opts:      opts,
		log:       log,
		cg:        cg,
		net:       nw,
		iso:       iso,
		root:      root,
		base:      base,
		uids:      ids,
		run:       hex.EncodeToString(run[:]),
		instances: map[string]*Instance{},
	}
	if opts.Prewarm > 0 {
		d.pool = newPool(d, opts.Prewarm)
	}
	return d, nil
}

// Name returns "process".
func (d *Driver) Name() string { return Name }

// Isolation describes the protections in force.
func (d *Driver) Isolation() sandbox.Isolation { return d.iso }

// Paths returns /var/task and /var/runtime (or "" without a runtime dir).
func (d *Driver) Paths(spec *sandbox.Spec) (taskRoot, runtimeRoot string) {
	if spec.RuntimeDir == "" {
		return TaskRoot, ""
	}
	return TaskRoot, RuntimeRoot
}

// Instance is one isolated instance. Until Start configures it, it is an
// init waiting for its function (in the pool, or just forked by Start).
type Instance struct {
	d       *Driver
	id      string // spec.ID; empty while pooled
	pooled  bool   // the init came from the pool (set by Start)
	cmd     *exec.Cmd
	cg      *instanceCgroup
	srv     *runtimeapi.HTTPServer
	api     *lateHandler // srv's handler: spec.RuntimeAPI once configured
	out     *sandbox.OutputPipe
	output  *lateWriter // out's writer: spec.Output once configured
	cfgW    *os.File    // write end of the config pipe (the shim's fdSync)
	errR    *os.File    // read end of the error pipe (the shim's fdErr)
	veth    string      // host end of the outbound veth, if any
	uid     int         // the instance's own uid, once configured; 0 before
	done    chan struct{}
	status  sandbox.ExitStatus
	statsMu sync.Mutex

	stopOnce sync.Once
	stopErr  error
}

// Start starts an instance and returns once its runtime has been exec'd. It
// takes a pre-forked init from the pool when one is ready and forks one
// otherwise; either way the init gets its configuration the same way.
func (d *Driver) Start(ctx context.Context, spec *sandbox.Spec) (sandbox.Instance, error) {
	switch spec.Network {
	case "", model.NetworkNone:
	case model.NetworkOutbound:
		if err := d.net.available(); err != nil {
			return nil, fmt.Errorf("cannot start instance: %w: missing %w", ErrOutboundUnsupported, err)
		}
	default:
		return nil, fmt.Errorf("cannot start instance: unknown network %q", spec.Network)
	}
	if spec.ID == "" || strings.ContainsAny(spec.ID, "/\x00") || spec.ID == "." || spec.ID == ".." {
		return nil, fmt.Errorf("cannot start instance: bad id %q", spec.ID)
	}
	if len(spec.Args) == 0 {
		return nil, errors.New("cannot start instance: no command")
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil, errors.New("cannot start instance: driver closed")
	}
	if _, dup := d.instances[spec.ID]; dup {
		d.mu.Unlock()
		return nil, fmt.Errorf("cannot start instance: id %q in use", spec.ID)
	}
	d.instances[spec.ID] = nil
	d.mu.Unlock()

	inst := d.pool.take()
	if inst != nil {
		inst.pooled = true
	} else {
		var err error
		if inst, err = d.spawn(memoryMB(spec.MemoryMB)); err != nil {
			d.mu.Lock()
			delete(d.instances, spec.ID)
			d.mu.Unlock()
			return nil, fmt.Errorf("cannot start instance: %w", err)
		}
	}
	d.mu.Lock()
	closed := d.closed
	if !closed {
		inst.id = spec.ID
		d.instances[spec.ID] = inst
	} else {
		delete(d.instances, spec.ID)
	}
	d.mu.Unlock()
	if closed {
		inst.Stop()
		return nil, errors.New("cannot start instance: driver closed")
	}
	if err := inst.configure(spec); err != nil {
		inst.Stop()
		return nil, fmt.Errorf("cannot start instance: %w", err)
	}
	return inst, nil
}

func memoryMB(mb int) int {
	if mb <= 0 {
		return 128
	}
	return mb
}

// spawn forks an init into new namespaces and a new cgroup with a memory
// limit of memMB, opens the Runtime API listener in its network namespace,
// and leaves it waiting for its configuration.
func (d *Driver) spawn(memMB int) (*Instance, error) {
	i := &Instance{d: d, done: make(chan struct{}), api: &lateHandler{}, output: &lateWriter{}}
	if err := i.spawn(memMB); err != nil {
		i.Stop()
		return nil, err
	}
	return i, nil
}

func (i *Instance) spawn(memMB int) error {
	d := i.d
	name := fmt.Sprintf("%s-%d", d.run, d.seq.Add(1))
	cg, err := d.cg.create(name, memMB, d.opts.PidsMax)
	if err != nil {
		return err
	}
	i.cg = cg

	syncR, syncW, err := os.Pipe()
	if err != nil {
		return err
	}
	i.cfgW = syncW
	errR, errW, err := os.Pipe()
	if err != nil {
		syncR.Close()
		return err
	}
	i.errR = errR
	outPipe, outW, err := sandbox.NewOutputPipe(i.output)
	if err != nil {
		syncR.Close()
		errW.Close()
		return err
	}
	i.out = outPipe

	attr := &syscall.SysProcAttr{
		Cloneflags: syscall.CLONE_NEWPID | syscall.CLONE_NEWNS | syscall.CLONE_NEWIPC |
			syscall.CLONE_NEWUTS | syscall.CLONE_NEWNET,
		Pdeathsig: syscall.SIGKILL,
		Setsid:    true,
	}
	if cg.v2 {
		dir, err := cg.openDir()
		if err != nil {
			syncR.Close()
			errW.Close()
			outW.Close()
			return fmt.Errorf("cannot open cgroup: %w", err)
		}
		defer dir.Close()
		attr.UseCgroupFD = true
		attr.CgroupFD = int(dir.Fd())
	}
	cmd := &exec.Cmd{
		Path:        "/proc/self/exe",
		Args:        []string{initArg0, name},
		Env:         []string{initEnv + "=" + string(d.base)},
		Stdout:      outW,
		Stderr:      outW,
		ExtraFiles:  []*os.File{syncR, errW},
		SysProcAttr: attr,
	}
	err = cmd.Start()
	syncR.Close()
	errW.Close()
	outW.Close()
	if err != nil {
		return fmt.Errorf("cannot start sandbox init: %w", err)
	}
	i.cmd = cmd
	go i.wait()

	if !cg.v2 {
		if err := cg.attach(cmd.Process.Pid); err != nil {
			return i.shimError(err)
		}
	}
	ln, err := listenInNetns(cmd.Process.Pid)
	if err != nil {
		return i.shimError(err)
	}
	i.srv = runtimeapi.NewHTTPServer(i.api)
	go func() { _ = i.srv.Serve(ln) }()
	return nil
}

// shimError kills the init and returns why it failed: its own message when
// it wrote one (it says why better than whatever the failure made us trip
// on), err otherwise.
func (i *Instance) shimError(err error) error {
	_ = i.cmd.Process.Kill()
	if msg, _ := io.ReadAll(i.errR); len(msg) > 0 {
		return fmt.Errorf("sandbox init: %s", msg)
	}
	return err
}

// configure makes the waiting init the instance of spec: its cgroup gets
// the spec's limits, its listener the spec's Runtime API and its output the
// spec's writer, it gets an outbound network if asked for, and then its
// configuration, after which it mounts the code and execs the runtime.
func (i *Instance) configure(spec *sandbox.Spec) error {
	d := i.d
	tmp := spec.TmpMB
	if tmp <= 0 {
		tmp = DefaultTmpMB
	}
	out := spec.Output
	if out == nil {
		out = io.Discard
	}
	i.statsMu.Lock()
	err := i.cg.resize(memoryMB(spec.MemoryMB))
	i.cg.resetStats()
	i.statsMu.Unlock()
	if err != nil {
		return i.shimError(err)
	}
	i.output.set(out)
	if spec.RuntimeAPI != nil {
		i.api.set(spec.RuntimeAPI)
	}
	if spec.Network == model.NetworkOutbound {
		veth, err := d.net.attach(i.cmd.Process.Pid)
		if err != nil {
			return i.shimError(err)
		}
		i.veth = veth
	}

	env := make([]string, 0, len(spec.Env)+1)
	for _, kv := range spec.Env {
		if !strings.HasPrefix(kv, "AWS_LAMBDA_RUNTIME_API=") {
			env = append(env, kv)
		}
	}
	env = append(env, "AWS_LAMBDA_RUNTIME_API="+RuntimeAPIAddr)
	uid, gid := d.opts.UID, d.opts.GID
	if d.uids != nil {
		if uid, err = d.uids.Get(); err != nil {
			return i.shimError(err)
		}
		gid = uid
		i.statsMu.Lock()
		i.uid = uid // given back by wait, once the init is gone
		i.statsMu.Unlock()
	}
	cfg, err := json.Marshal(initConfig{
		CodeDir: spec.CodeDir, RuntimeDir: spec.RuntimeDir, TmpMB: tmp, Args: spec.Args, Env: env,
		UID: uid, GID: gid,
	})
	if err != nil {
		return i.shimError(err)
	}
	// The shim reads the config to EOF, then mounts and execs; it closes its
	// error pipe on exec or writes why it could not.
	_, err = i.cfgW.Write(cfg)
	if cerr := i.cfgW.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return i.shimError(fmt.Errorf("cannot send the sandbox config: %w", err))
	}
	msg, err := io.ReadAll(i.errR)
	if err != nil {
		return fmt.Errorf("cannot read sandbox init status: %w", err)
	}
	if len(msg) > 0 {
		return fmt.Errorf("sandbox init: %s", msg)
	}
	return nil
}

// exited reports whether the init has exited.
func (i *Instance) exited() bool {
	select {
	case <-i.done:
		return true
	default:
		return false
	}
}

// lateHandler serves the Runtime API handler set once the instance is
// configured; nothing in the namespace can connect before that.
type lateHandler struct{ h atomic.Pointer[http.Handler] }

func (l *lateHandler) set(h http.Handler) { l.h.Store(&h) }

func (l *lateHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if h := l.h.Load(); h != nil {
		(*h).ServeHTTP(w, r)
		return
	}
	http.Error(w, "instance not started", http.StatusServiceUnavailable)
}

// lateWriter writes to the writer set once the instance is configured and
// discards before (a waiting init writes nothing; its errors go through the
// error pipe).
type lateWriter struct{ w atomic.Pointer[io.Writer] }

func (l *lateWriter) set(w io.Writer) { l.w.Store(&w) }

func (l *lateWriter) Write(p []byte) (int, error) {
	if w := l.w.Load(); w != nil {
		return (*w).Write(p)
	}
	return len(p), nil
}

// wait reaps the instance's init and records how it ended. Output still in
// the pipe is copied for up to a second after the exit; all writers are gone
// by then because the pid namespace dies with its init.
func (i *Instance) wait() {
	err := i.cmd.Wait()
	st := sandbox.ExitStatus{}
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		ws, _ := ee.Sys().(syscall.WaitStatus)
		if ws.Signaled() {
			st.Code = -1
			st.Signal = ws.Signal().String()
		} else {
			st.Code = ws.ExitStatus()
		}
	case err != nil:
		st.Code = -1
		st.Err = err
	}
	i.statsMu.Lock()
	if i.cg != nil {
		st.OutOfMemory = i.cg.oomKills() > 0
		i.cg.stats()
	}
	// The pid namespace dies with its init: nothing runs as the uid any
	// more (the allocator hands it out again only after going round).
	if i.uid != 0 {
		i.d.uids.Put(i.uid)
		i.uid = 0
	}
	i.statsMu.Unlock()
	select {
	case <-i.out.Done():
	case <-time.After(time.Second):
		i.out.Close()
	}
	i.status = st
	close(i.done)
}

var _ sandbox.Resizer = (*Instance)(nil)

// SetMemoryLimit changes the instance cgroup's memory limit and CPU weight.
func (i *Instance) SetMemoryLimit(mb int) error {
	if mb <= 0 {
		return fmt.Errorf("cannot set memory limit: %d MB", mb)
	}
	i.statsMu.Lock()
	defer i.statsMu.Unlock()
	if i.cg == nil {
		return errors.New("cannot set memory limit: instance has no cgroup")
	}
	return i.cg.resize(mb)
}

// FlushOutput returns once what the instance wrote so far reached Spec.Output.
func (i *Instance) FlushOutput() { i.out.Flush() }

// Done is closed when the instance's init has exited.
func (i *Instance) Done() <-chan struct{} { return i.done }

// ExitStatus says how the instance ended; valid after Done.
func (i *Instance) ExitStatus() sandbox.ExitStatus {
	<-i.done
	return i.status
}

// Stats returns the cgroup's peak memory and CPU time.
func (i *Instance) Stats() sandbox.Stats {
	i.statsMu.Lock()
	defer i.statsMu.Unlock()
	if i.cg == nil {
		return sandbox.Stats{}
	}
	peak, cpu := i.cg.stats()
	return sandbox.Stats{MaxMemoryBytes: peak, CPUTime: cpu}
}

// Stop kills the instance's whole pid namespace, closes its Runtime API
// listener and removes its cgroup.
func (i *Instance) Stop() error {
	i.stopOnce.Do(func() {
		var errs []error
		if i.cmd != nil && i.cmd.Process != nil {
			_ = i.cmd.Process.Kill()
			select {
			case <-i.done:
			case <-time.After(10 * time.Second):
				errs = append(errs, errors.New("cannot stop instance: init did not exit"))
			}
		} else if i.out != nil {
			i.out.Close()
		}
		for _, f := range []*os.File{i.cfgW, i.errR} {
			if f != nil {
				_ = f.Close()
			}
		}
		if i.srv != nil {
			_ = i.srv.Close()
		}
		if i.veth != "" {
			if err := i.d.net.detach(i.veth); err != nil {
				errs = append(errs, err)
			}
		}
		i.statsMu.Lock()
		if i.cg != nil {
			i.cg.stats()
			if err := i.cg.destroy(); err != nil {
				errs = append(errs, err)
			}
		}
		i.statsMu.Unlock()
		if i.cmd == nil || i.cmd.Process == nil {
			close(i.done)
		}
		i.d.mu.Lock()
		if i.id != "" && i.d.instances[i.id] == i {
			delete(i.d.instances, i.id)
		}
		i.d.mu.Unlock()
		i.stopErr = errors.Join(errs...)
	})
	return i.stopErr
}

// Close stops the pooled inits and every instance and removes the driver's
// cgroup.
func (d *Driver) Close() error {
	d.mu.Lock()
	d.closed = true
	insts := make([]*Instance, 0, len(d.instances))
	for _, i := range d.instances {
		if i != nil {
			insts = append(insts, i)
		}
	}
	d.mu.Unlock()
	var errs []error
	if err := d.pool.close(); err != nil {
		errs = append(errs, err)
	}
	for _, i := range insts {
		if err := i.Stop(); err != nil {
			errs = append(errs, err)
		}
	}
	if err := d.cg.cleanup(); err != nil {
		errs = append(errs, err)
	}
	d.cg.teardown()
	if err := d.net.cleanup(); err != nil {
		errs = append(errs, err)
	}
	if d.uids != nil {
		d.uids.Close()
	}
	return errors.Join(errs...)
}

// listenInNetns opens the Runtime API listener inside the network namespace
// of pid, after bringing its loopback up. The socket stays in that namespace
// after the thread returns to the host's.
func listenInNetns(pid int) (net.Listener, error) {
	target, err := os.Open(fmt.Sprintf("/proc/%d/ns/net", pid))
	if err != nil {
		return nil, fmt.Errorf("cannot open instance network namespace: %w", err)
	}
	defer target.Close()
	type result struct {
		ln  net.Listener
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		self, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			ch <- result{err: fmt.Errorf("cannot open own network namespace: %w", err)}
			return
		}
		defer self.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			ch <- result{err: fmt.Errorf("cannot enter instance network namespace: %w", err)}
			return
		}
		var r result
		if r.err = loopbackUp(); r.err == nil {
			r.ln, r.err = net.Listen("tcp", RuntimeAPIAddr)
		}
		// If the thread cannot go back it stays locked and dies with this
		// goroutine instead of serving others from the wrong namespace.
		if err := unix.Setns(int(self.Fd()), unix.CLONE_NEWNET); err == nil {
			runtime.UnlockOSThread()
		}
		ch <- r
	}()
	r := <-ch
	if r.err != nil {
		return nil, fmt.Errorf("cannot listen for the runtime api: %w", r.err)
	}
	return r.ln, nil
}

// loopbackUp sets "lo" up in the calling thread's network namespace.
func loopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("cannot read loopback flags: %w", err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("cannot bring loopback up: %w", err)
	}
	return nil
}
