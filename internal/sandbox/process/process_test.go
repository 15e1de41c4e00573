//go:build linux

package process

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/aloft-dev/aloft/internal/runtimeapi"
	"github.com/aloft-dev/aloft/internal/sandbox"
	"github.com/aloft-dev/aloft/internal/sandbox/uids"
)

func TestMain(m *testing.M) {
	// The driver re-executes this test binary as the sandbox init.
	MaybeRunInit()
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

var (
	buildOnce sync.Once
	buildDir  string
	buildErr  error
)

// hostileBinary builds testdata/hostile once (static, CGO_ENABLED=0).
func hostileBinary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "aloft-hostile-")
		if buildErr != nil {
			return
		}
		cmd := exec.Command("go", "build", "-o", filepath.Join(buildDir, "bootstrap"), "./testdata/hostile")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return filepath.Join(buildDir, "bootstrap")
}

// needIsolation skips unless this host can run the driver.
func needIsolation(t testing.TB) {
	t.Helper()
	if _, err := Probe(); err != nil {
		t.Skipf("process sandbox unavailable: %v", err)
	}
}

func newDriver(t testing.TB, opts Options) *Driver {
	t.Helper()
	needIsolation(t)
	if opts.StateDir == "" {
		opts.StateDir = t.TempDir()
	}
	d, err := New(opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		if err := d.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	waitPool(t, d)
	return d
}

// waitPool waits until d's pool (if it has one) holds all its inits, so
// that the next Start takes a pooled one.
func waitPool(t testing.TB, d *Driver) {
	t.Helper()
	if d.pool == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := d.pool.waitFull(ctx); err != nil {
		t.Fatalf("pool not filled: %v", err)
	}
}

// poolModes are the two ways Start gets its init: from the pool (the
// default; newDriver waits for it to fill) and forked by Start itself.
var poolModes = []struct {
	name    string
	prewarm int
	pooled  bool
}{
	{"pooled", 0, true},
	{"unpooled", -1, false},
}

// checkPooled fails unless r's init came from the pool exactly when want.
func checkPooled(t testing.TB, r *running, want bool) {
	t.Helper()
	if r.inst.pooled != want {
		t.Fatalf("instance from the pool: got %v, want %v", r.inst.pooled, want)
	}
}

// codeDir returns a world-readable directory holding files (name → host
// path to copy, or content when not a path).
func codeDir(t testing.TB, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, src := range files {
		b, err := os.ReadFile(src)
		if err != nil {
			b = []byte(src)
		}
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// syncBuffer is an io.Writer safe for concurrent use.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

var instanceSeq atomic.Int64

type running struct {
	inst *Instance
	api  *runtimeapi.Server
	out  *syncBuffer
	spec *sandbox.Spec
}

// start starts an instance of the hostile Go runtime (or of spec as edited
// by edit) and, when wantReady, waits for its first /next.
func start(t testing.TB, d *Driver, edit func(*sandbox.Spec), wantReady bool) *running {
	t.Helper()
	api := runtimeapi.New()
	out := &syncBuffer{}
	spec := &sandbox.Spec{
		ID:         fmt.Sprintf("i%d-%d", os.Getpid(), instanceSeq.Add(1)),
		Function:   "hostile",
		Args:       []string{TaskRoot + "/bootstrap"},
		Env:        []string{"PATH=/usr/local/bin:/usr/bin:/bin"},
		MemoryMB:   128,
		TmpMB:      64,
		RuntimeAPI: api,
		Output:     out,
	}
	if edit != nil {
		edit(spec)
	}
	if spec.CodeDir == "" {
		spec.CodeDir = codeDir(t, map[string]string{"bootstrap": hostileBinary(t)})
	}
	inst, err := d.Start(context.Background(), spec)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	r := &running{inst: inst.(*Instance), api: api, out: out, spec: spec}
	t.Cleanup(func() { r.inst.Stop() })
	if wantReady {
		select {
		case <-api.Ready():
		case <-inst.Done():
			t.Fatalf("instance exited before /next: %v; output:\n%s", inst.ExitStatus(), out)
		case <-time.After(30 * time.Second):
			t.Fatalf("no /next within 30s; output:\n%s", out)
		}
	}
	return r
}

// invoke runs one operation of the hostile runtime and returns its answer.
func (r *running) invoke(t testing.TB, op string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	res, err := r.api.Invoke(ctx, &runtimeapi.Invocation{
		RequestID: fmt.Sprintf("req-%d", instanceSeq.Add(1)),
		Payload:   []byte(op),
		Deadline:  time.Now().Add(time.Minute),
	})
	if err != nil {
		t.Fatalf("invoke %q: %v; output:\n%s", op, err, r.out)
	}
	return string(res.Payload)
}

// nobody is the host account unprivileged daemons run as.
const nobody = 65534

// hostProcess starts a long sleep on the host running as nobody, the
// process a function would most plausibly be able to signal.
func hostProcess(t *testing.T) *exec.Cmd {
	t.Helper()
	cmd := exec.Command("/bin/sleep", "600")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return cmd
}

func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	// state after "(comm) "
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i > 0 && i+2 < len(s) && s[i+2] != 'Z'
}

// hostListener listens on addr and accepts (and closes) connections.
func hostListener(t *testing.T, addr string) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	return ln
}

func hostAddress() string {
	addrs, _ := net.InterfaceAddrs()
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok && !ipn.IP.IsLoopback() && ipn.IP.To4() != nil {
			return ipn.IP.String()
		}
	}
	return ""
}

// TestContainment runs the hostile Go runtime through every escape it tries
// and checks each one fails, from the runtime's answers and from the host.
func TestContainment(t *testing.T) {
	for _, m := range poolModes {
		t.Run(m.name, func(t *testing.T) { testContainment(t, Options{Prewarm: m.prewarm}, m.pooled) })
	}
}

func testContainment(t *testing.T, opts Options, pooled bool) {
	d := newDriver(t, opts)
	dataDir := t.TempDir()
	secret := filepath.Join(dataDir, "secret")
	token := filepath.Join(dataDir, "admin.token")
	os.WriteFile(secret, []byte("data"), 0o644)
	os.WriteFile(token, []byte("token"), 0o644)
	other := codeDir(t, map[string]string{"handler.py": "print('other')"})
	victim := hostProcess(t)
	apiPort := hostListener(t, "127.0.0.1:0").Addr().(*net.TCPAddr).Port
	anyLn := hostListener(t, "0.0.0.0:0")

	r := start(t, d, nil, true)
	checkPooled(t, r, pooled)
	tests := []struct {
		name, op, want string // want: prefix of the answer
	}{
		{"read data dir", "read:" + secret, "err: open " + secret + ": no such file"},
		{"read admin token", "read:" + token, "err: open " + token + ": no such file"},
		{"read other function code", "read:" + filepath.Join(other, "handler.py"), "err:"},
		{"list /root", "ls:/root", "err:"},
		{"list /home", "ls:/home", "err:"},
		{"read host /proc entry", fmt.Sprintf("read:/proc/%d/status", os.Getpid()), "err:"},
		{"read host sleep /proc entry", fmt.Sprintf("read:/proc/%d/cmdline", victim.Process.Pid), "err:"},
		{"kill host pid", fmt.Sprintf("kill:%d", victim.Process.Pid), "err: no such process"},
		{"kill -1 as pid 1", "kill:-1", ""},
		{"kill -9 -1 from a child", "killall-child", ""},
		{"connect to host loopback port", fmt.Sprintf("connect:127.0.0.1:%d", apiPort), "err:"},
		{"mount", "mount", "err: operation not permitted"},
		{"ptrace pid 1", "ptrace:1", "err: operation not permitted"},
		{"load module", "module", "err: operation not permitted"},
		{"unshare user namespace", "userns", "err: operation not permitted"},
		{"clone user namespace", "clone-userns", "err:"},
		{"write code", "write:/var/task/x", "err:"},
		{"write /usr", "write:/usr/x", "err:"},
		{"write /etc/passwd", "write:/etc/passwd", "err:"},
		{"write root", "write:/x", "err:"},
		{"write /tmp", "write:/tmp/x", "ok:"},
		{"still answers", "echo:alive", "ok: alive"},
	}
	if ip := hostAddress(); ip != "" {
		port := anyLn.Addr().(*net.TCPAddr).Port
		tests = append(tests, struct{ name, op, want string }{"connect to host address", fmt.Sprintf("connect:%s:%d", ip, port), "err:"})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := r.invoke(t, tt.op)
			if !strings.HasPrefix(got, tt.want) {
				t.Errorf("%s: got %q, want prefix %q", tt.op, got, tt.want)
			}
		})
	}
	if !alive(victim.Process.Pid) {
		t.Errorf("host process %d was killed", victim.Process.Pid)
	}

	t.Run("root view", func(t *testing.T) {
		got := strings.Fields(strings.TrimPrefix(r.invoke(t, "ls:/"), "ok: "))
		allowed := map[string]bool{"bin": true, "sbin": true, "lib": true, "lib32": true, "lib64": true, "libx32": true,
			"usr": true, "etc": true, "var": true, "tmp": true, "proc": true, "dev": true}
		for _, name := range got {
			if !allowed[name] {
				t.Errorf("/ has %q; want only system directories, got %v", name, got)
			}
		}
	})
	t.Run("identity", func(t *testing.T) {
		got := r.invoke(t, "id")
		uid := instanceUID(t, got)
		for _, want := range []string{
			fmt.Sprintf("Uid: %d %d %d %d", uid, uid, uid, uid),
			fmt.Sprintf("Gid: %d %d %d %d", uid, uid, uid, uid),
			"CapPrm: 0000000000000000", "CapEff: 0000000000000000", "CapBnd: 0000000000000000",
			"CapAmb: 0000000000000000", "NoNewPrivs: 1", "Seccomp: 2",
		} {
			if !strings.Contains(got, want) {
				t.Errorf("id: got %q, want it to contain %q", got, want)
			}
		}
	})
}

// instanceUID reads the real uid from the hostile runtime's "id" answer and
// checks it is of the reserved range.
func instanceUID(t *testing.T, id string) int {
	t.Helper()
	_, rest, _ := strings.Cut(id, "Uid: ")
	uid, _ := strconv.Atoi(strings.Fields(rest + " x")[0])
	if !inRange(uid) {
		t.Fatalf("id: got %q, want a uid of the reserved range", id)
	}
	return uid
}

func inRange(uid int) bool { return uid >= uids.First && uid < uids.First+uids.Blocks*uids.BlockSize }

// TestInstancesHaveTheirOwnUsers: every instance runs as its own user, so
// what the kernel budgets per user is not shared: one instance using up its
// inotify instances leaves a neighbour its own. Keyrings, which outlive
// processes, cannot be reached at all.
func TestInstancesHaveTheirOwnUsers(t *testing.T) {
	for _, m := range poolModes {
		t.Run(m.name, func(t *testing.T) {
			d := newDriver(t, Options{Prewarm: m.prewarm})
			a, b := start(t, d, nil, true), start(t, d, nil, true)
			ua, ub := instanceUID(t, a.invoke(t, "id")), instanceUID(t, b.invoke(t, "id"))
			if ua == ub {
				t.Fatalf("both instances run as uid %d", ua)
			}
			hogA := a.invoke(t, "inotify-hog")
			hogB := b.invoke(t, "inotify-hog")
			if !strings.HasPrefix(hogB, "ok: ") || strings.HasPrefix(hogB, "ok: 0 ") || hogA != hogB {
				t.Errorf("inotify instances: first instance got %q, its neighbour %q; want the same budget each", hogA, hogB)
			}
			if got := a.invoke(t, "add-key"); got != "err: operation not permitted" {
				t.Errorf("add-key: got %q, want EPERM", got)
			}
		})
	}
}

// TestPythonContainment runs a hostile Python function (no Runtime API: it
// reports what it could do on stdout and exits).
func TestPythonContainment(t *testing.T) {
	if _, err := os.Stat("/usr/bin/python3"); err != nil {
		t.Skip("no /usr/bin/python3")
	}
	d := newDriver(t, Options{PidsMax: 64})
	dataDir := t.TempDir()
	secret := filepath.Join(dataDir, "secret")
	token := filepath.Join(dataDir, "admin.token")
	os.WriteFile(secret, []byte("data"), 0o644)
	os.WriteFile(token, []byte("token"), 0o644)
	other := codeDir(t, map[string]string{"bootstrap": "#!/bin/sh\n"})
	victim := hostProcess(t)
	port := hostListener(t, "127.0.0.1:0").Addr().(*net.TCPAddr).Port

	r := start(t, d, func(s *sandbox.Spec) {
		s.CodeDir = codeDir(t, map[string]string{"hostile.py": "testdata/hostile.py"})
		s.Args = []string{"/usr/bin/python3", TaskRoot + "/hostile.py"}
		s.MemoryMB = 256
		s.TmpMB = 32
		s.Env = append(s.Env,
			"HOSTILE_DATA_FILE="+secret, "HOSTILE_TOKEN_FILE="+token,
			"HOSTILE_OTHER_CODE="+filepath.Join(other, "bootstrap"),
			fmt.Sprintf("HOSTILE_HOST_PID=%d", victim.Process.Pid),
			fmt.Sprintf("HOSTILE_HOST_PORT=%d", port))
	}, false)
	select {
	case <-r.inst.Done():
	case <-time.After(60 * time.Second):
		t.Fatalf("python function did not finish; output:\n%s", r.out)
	}
	if st := r.inst.ExitStatus(); st.Code != 0 {
		t.Fatalf("exit: got %v, want exit status 0; output:\n%s", st, r.out)
	}
	got := map[string]string{}
	for _, line := range strings.Split(r.out.String(), "\n") {
		if k, v, ok := strings.Cut(line, "="); ok {
			got[k] = v
		}
	}
	want := map[string]string{
		"read-data":         "denied:ENOENT",
		"read-token":        "denied:ENOENT",
		"read-other-code":   "denied:ENOENT",
		"list-root":         "denied:ENOENT",
		"list-home":         "denied:ENOENT",
		"read-host-proc":    "denied:ENOENT",
		"kill-host-pid":     "denied:ESRCH",
		"connect-host-port": "denied:ECONNREFUSED",
		"mount":             "denied:EPERM",
		"ptrace":            "denied:EPERM",
		"unshare-user":      "denied:EPERM",
		"write-code":        "denied:EROFS",
		"write-tmp":         "ok",
		"forkbomb":          "denied:EAGAIN",
		"fill-tmp":          "denied:ENOSPC",
	}
	if uid, _ := strconv.Atoi(got["uid"]); !inRange(uid) {
		t.Errorf("uid: got %q, want one of the reserved range", got["uid"])
	}
	for k, w := range want {
		if got[k] != w {
			t.Errorf("%s: got %q, want %q", k, got[k], w)
		}
	}
	if n, _ := strconv.Atoi(got["forkbomb-count"]); n < 1 || n >= 64 {
		t.Errorf("forkbomb-count: got %d, want between 1 and the pids limit 64", n)
	}
	if !alive(victim.Process.Pid) {
		t.Errorf("host process %d was killed", victim.Process.Pid)
	}
}

// TestForkBomb: the pids limit stops a fork bomb inside the function, and
// the node keeps serving (the same instance and a neighbour).
func TestForkBomb(t *testing.T) {
	d := newDriver(t, Options{PidsMax: 64})
	neighbour := start(t, d, nil, true)
	r := start(t, d, func(s *sandbox.Spec) { s.MemoryMB = 512 }, true)
	got := r.invoke(t, "forkbomb")
	if !strings.Contains(got, "resource temporarily unavailable") {
		t.Errorf("forkbomb: got %q, want EAGAIN from the pids limit", got)
	}
	if got := r.invoke(t, "echo:after"); got != "ok: after" {
		t.Errorf("bombed instance: got %q, want %q", got, "ok: after")
	}
	if got := neighbour.invoke(t, "echo:n"); got != "ok: n" {
		t.Errorf("neighbour: got %q, want %q", got, "ok: n")
	}
}

// TestOutOfMemory: allocating past the limit kills the instance with
// OutOfMemory set, the peak shows the limit, and a neighbour keeps answering.
func TestOutOfMemory(t *testing.T) {
	d := newDriver(t, Options{})
	neighbour := start(t, d, nil, true)
	r := start(t, d, func(s *sandbox.Spec) { s.MemoryMB = 64 }, true)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go r.api.Invoke(ctx, &runtimeapi.Invocation{RequestID: "oom", Payload: []byte("alloc:512"), Deadline: time.Now().Add(time.Minute)})
	select {
	case <-r.inst.Done():
	case <-time.After(60 * time.Second):
		t.Fatal("instance did not die allocating 512 MB with a 64 MB limit")
	}
	st := r.inst.ExitStatus()
	if !st.OutOfMemory || st.Signal != "killed" {
		t.Errorf("exit: got %+v, want OutOfMemory, signal killed", st)
	}
	// cgroup v1 may charge a page or two past the limit before the OOM
	// killer acts; the worker reports at most the function's memory.
	if peak := r.inst.Stats().MaxMemoryBytes; peak < 60<<20 || peak > 64<<20+64<<10 {
		t.Errorf("peak memory: got %d, want close to 64 MiB", peak)
	}
	if got := neighbour.invoke(t, "echo:n"); got != "ok: n" {
		t.Errorf("neighbour: got %q, want %q", got, "ok: n")
	}
	if st := neighbour.inst.Stats(); st.MaxMemoryBytes <= 0 || st.CPUTime <= 0 {
		t.Errorf("neighbour stats: got %+v, want memory and cpu use", st)
	}
}

// TestTmpFull: writing 2 GB into a 16 MB /tmp fails inside the function.
func TestTmpFull(t *testing.T) {
	d := newDriver(t, Options{})
	r := start(t, d, func(s *sandbox.Spec) { s.TmpMB = 16; s.MemoryMB = 256 }, true)
	got := r.invoke(t, "filltmp:2048")
	if !strings.HasPrefix(got, "err: ") || !strings.Contains(got, "no space left on device") {
		t.Errorf("filltmp: got %q, want ENOSPC", got)
	}
	if got := r.invoke(t, "echo:after"); got != "ok: after" {
		t.Errorf("after filling /tmp: got %q, want %q", got, "ok: after")
	}
}

// nsMembers lists host pids whose namespace link equals link.
func nsMembers(kind, link string) []int {
	entries, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if l, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/%s", pid, kind)); err == nil && l == link {
			out = append(out, pid)
		}
	}
	return out
}

// TestStopCleansUp: after Stop no process, cgroup or mount of the instance
// is left.
func TestStopCleansUp(t *testing.T) {
	d := newDriver(t, Options{})
	r := start(t, d, nil, true)
	if got := r.invoke(t, "spawn:5"); got != "ok: 5" {
		t.Fatalf("spawn: got %q", got)
	}
	pid := r.inst.cmd.Process.Pid
	pidNS, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", pid))
	if err != nil {
		t.Fatal(err)
	}
	mntNS, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", pid))
	if n := len(nsMembers("pid", pidNS)); n != 6 {
		t.Fatalf("processes in the instance before Stop: got %d, want 6", n)
	}
	if err := r.inst.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if got := nsMembers("pid", pidNS); len(got) != 0 {
		t.Errorf("processes left in the pid namespace: %v", got)
	}
	if got := nsMembers("mnt", mntNS); len(got) != 0 {
		t.Errorf("processes left in the mount namespace: %v", got)
	}
	for _, dir := range r.inst.cg.dirs() {
		if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("cgroup %s: got %v, want it removed", dir, err)
		}
	}
	mounts, _ := os.ReadFile("/proc/self/mountinfo")
	if strings.Contains(string(mounts), d.root) {
		t.Errorf("host mounts mention %s:\n%s", d.root, mounts)
	}
	if err := r.inst.Stop(); err != nil {
		t.Errorf("second Stop: %v", err)
	}
}

// TestCleanupAfterCrash: a new driver on the same state directory kills and
// removes what a previous run (that never called Close) left.
func TestCleanupAfterCrash(t *testing.T) {
	needIsolation(t)
	state := t.TempDir()
	old, err := New(Options{StateDir: state})
	if err != nil {
		t.Fatal(err)
	}
	r := start(t, old, nil, true)
	r.invoke(t, "spawn:3")
	dirs := r.inst.cg.dirs()
	waitPool(t, old)
	var pooled []*Instance
	for _, e := range old.pool.ready {
		pooled = append(pooled, e.inst)
		dirs = append(dirs, e.inst.cg.dirs()...)
	}
	crash(old)

	d := newDriver(t, Options{StateDir: state})
	select {
	case <-r.inst.Done():
	case <-time.After(30 * time.Second):
		t.Fatal("leftover instance still runs after New")
	}
	for _, p := range pooled {
		select {
		case <-p.Done():
		case <-time.After(30 * time.Second):
			t.Fatal("leftover pooled init still runs after New")
		}
	}
	for _, dir := range dirs {
		if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("cgroup %s: got %v, want it removed", dir, err)
		}
	}
	start(t, d, nil, true).invoke(t, "echo:x")
}

// crash leaves d the way a node killed with SIGKILL would, as far as
// another driver can tell: its instances and pooled inits go on running (in
// a real crash they die with the node by their parent-death signal) and
// nothing refills its pool.
func crash(d *Driver) {
	if p := d.pool; p != nil {
		p.mu.Lock()
		p.closed = true
		p.mu.Unlock()
		close(p.quit)
		<-p.stopped
	}
}

// TestCgroupLimits checks the limits written for an instance.
// In pooled mode the init's cgroup was made with the pool's default limit
// and resized when taken.
func TestCgroupLimits(t *testing.T) {
	for _, m := range poolModes {
		t.Run(m.name, func(t *testing.T) {
			for _, mb := range []int{1769, 64} {
				t.Run(strconv.Itoa(mb), func(t *testing.T) { testCgroupLimits(t, m.prewarm, m.pooled, mb) })
			}
		})
	}
}

func testCgroupLimits(t *testing.T, prewarm int, pooled bool, mb int) {
	d := newDriver(t, Options{PidsMax: 77, Prewarm: prewarm})
	r := start(t, d, func(s *sandbox.Spec) { s.MemoryMB = mb }, true)
	checkPooled(t, r, pooled)
	g := r.inst.cg
	shares := strconv.Itoa(cpuShares(mb))
	var files map[string]string
	if g.v2 {
		files = map[string]string{
			filepath.Join(g.memory, "memory.max"): strconv.Itoa(mb << 20),
			filepath.Join(g.pids, "pids.max"):     "77",
			filepath.Join(g.cpu, "cpu.weight"):    strconv.Itoa(cpuWeightV2(cpuShares(mb))),
		}
	} else {
		files = map[string]string{
			filepath.Join(g.memory, "memory.limit_in_bytes"):       strconv.Itoa(mb << 20),
			filepath.Join(g.memory, "memory.memsw.limit_in_bytes"): strconv.Itoa(mb << 20),
			filepath.Join(g.pids, "pids.max"):                      "77",
			filepath.Join(g.cpu, "cpu.shares"):                     shares,
		}
	}
	for path, want := range files {
		b, err := os.ReadFile(path)
		if err != nil {
			if strings.Contains(path, "memsw") && errors.Is(err, os.ErrNotExist) {
				continue
			}
			t.Errorf("%s: %v", path, err)
			continue
		}
		if got := strings.TrimSpace(string(b)); got != want {
			t.Errorf("%s: got %s, want %s", filepath.Base(path), got, want)
		}
	}
	procs, _ := os.ReadFile(filepath.Join(g.memory, "cgroup.procs"))
	if !strings.Contains(string(procs), strconv.Itoa(r.inst.cmd.Process.Pid)) {
		t.Errorf("instance init %d not in its cgroup: %q", r.inst.cmd.Process.Pid, procs)
	}
}

func TestStartErrors(t *testing.T) {
	for _, m := range poolModes {
		t.Run(m.name, func(t *testing.T) { testStartErrors(t, m.prewarm) })
	}
}

func testStartErrors(t *testing.T, prewarm int) {
	d := newDriver(t, Options{Prewarm: prewarm})
	tests := []struct {
		name string
		edit func(*sandbox.Spec)
		want string
	}{
		{"unknown network", func(s *sandbox.Spec) { s.Network = "bridge" }, `unknown network "bridge"`},
		{"missing command", func(s *sandbox.Spec) { s.Args = []string{"/var/task/nope"} }, "cannot exec /var/task/nope"},
		{"command not on PATH", func(s *sandbox.Spec) { s.Args = []string{"nope"} }, `cannot find "nope" on PATH`},
		{"missing code dir", func(s *sandbox.Spec) { s.CodeDir = "/nonexistent/code" }, "cannot mount code"},
		{"bad id", func(s *sandbox.Spec) { s.ID = "../x" }, "bad id"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec := &sandbox.Spec{
				ID: fmt.Sprintf("e%d", instanceSeq.Add(1)), Args: []string{"/var/task/bootstrap"},
				CodeDir: codeDir(t, nil), MemoryMB: 64, RuntimeAPI: runtimeapi.New(),
			}
			tt.edit(spec)
			waitPool(t, d)
			inst, err := d.Start(context.Background(), spec)
			if err == nil {
				inst.Stop()
				t.Fatalf("Start: got no error, want %q", tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Start: got %q, want it to contain %q", err, tt.want)
			}
		})
	}
	d.mu.Lock()
	n := len(d.instances)
	d.mu.Unlock()
	if n != 0 {
		t.Errorf("instances after failed starts: got %d, want 0", n)
	}
}

func TestCPUShares(t *testing.T) {
	tests := []struct {
		name         string
		memMB        int
		shares, wght int
	}{
		{"smallest", 128, 74, 3},
		{"one vcpu", 1769, 1024, 39},
		{"max lambda", 10240, 5927, 226},
		{"tiny", 1, 2, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := cpuShares(tt.memMB); got != tt.shares {
				t.Errorf("cpuShares(%d)=%d, want %d", tt.memMB, got, tt.shares)
			}
			if got := cpuWeightV2(cpuShares(tt.memMB)); got != tt.wght {
				t.Errorf("cpuWeightV2=%d, want %d", got, tt.wght)
			}
		})
	}
}

func TestSeccompPolicyAssembles(t *testing.T) {
	p := sandboxPolicy()
	if _, err := p.Assemble(); err != nil {
		t.Fatalf("Assemble: %v", err)
	}
}
