package e2e_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aloft-dev/aloft/internal/cli"
	"github.com/aloft-dev/aloft/internal/model"
	"github.com/aloft-dev/aloft/internal/sandbox/process"
	"github.com/aloft-dev/aloft/internal/testfn"
)

// sleeper is a Python function that, asked to, runs /bin/sleep as a child
// and waits for it: a test sees the invocation in flight as a sleep process
// carrying the function's APP_MARKER.
const sleeper = `import os, subprocess
def handler(event, context):
    s = event.get("sleep", 0)
    if s:
        subprocess.run(["/bin/sleep", str(s)], check=True)
    return {"slept": s, "pid": os.getpid()}
`

var (
	aloftOnce sync.Once
	aloftBin  string
	aloftErr  error
)

// aloftBinary builds ./cmd/aloft once per test binary.
func aloftBinary(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and runs the aloft binary; skipped with -short")
	}
	aloftOnce.Do(func() {
		dir, err := os.MkdirTemp("", "aloft-bin-")
		if err != nil {
			aloftErr = err
			return
		}
		aloftBin = filepath.Join(dir, "aloft")
		build := exec.Command("go", "build", "-o", aloftBin, "./cmd/aloft")
		build.Dir = testfn.ModuleRoot()
		if out, err := build.CombinedOutput(); err != nil {
			aloftErr = fmt.Errorf("cannot build aloft: %v\n%s", err, out)
		}
	})
	if aloftErr != nil {
		t.Fatal(aloftErr)
	}
	return aloftBin
}

// needIsolation skips unless this host can run the isolating driver.
func needIsolation(t *testing.T) {
	t.Helper()
	if _, err := process.Probe(); err != nil {
		t.Skipf("process sandbox unavailable: %v", err)
	}
}

// lockedBuffer collects a child's output; safe to read while it writes.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// upChild is `aloft up` as a child process, with its exit reported on done.
type upChild struct {
	cmd    *exec.Cmd
	out    *lockedBuffer
	done   chan struct{}
	err    error // Wait's result, after done
	client *cli.Client
}

// freeAddr returns a loopback address with a port nobody listens on.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// runUp starts `aloft up` on dataDir and addr with extra flags and waits
// until it answers /healthz. The test's end kills it. Pre-started pool
// instances are off: they start before a function is assigned, so their
// environment would not carry the function's APP_MARKER.
func runUp(t *testing.T, dataDir, addr string, flags ...string) *upChild {
	t.Helper()
	return runUpWithFiles(t, dataDir, addr, nil, flags...)
}

// runUpWithFiles is runUp with extra descriptors open in `aloft up` (from 3
// on), as a careless parent would leave them.
func runUpWithFiles(t *testing.T, dataDir, addr string, files []*os.File, flags ...string) *upChild {
	t.Helper()
	const token = "sandbox-test-token"
	args := append([]string{"up", "--data", dataDir, "--listen", addr, "--pool-size", "0"}, flags...)
	cmd := exec.Command(aloftBinary(t), args...)
	cmd.Env = append(os.Environ(), "ALOFT_TOKEN="+token)
	out := &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.ExtraFiles = files
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	u := &upChild{cmd: cmd, out: out, done: make(chan struct{}),
		client: &cli.Client{BaseURL: "http://" + addr, Token: token}}
	go func() { u.err = cmd.Wait(); close(u.done) }()
	t.Cleanup(func() { u.kill() })
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get(u.client.BaseURL + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return u
			}
		}
		select {
		case <-u.done:
			t.Fatalf("aloft up exited: %v\n%s", u.err, out)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("aloft up did not come up: %v\n%s", err, out)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stop sends SIGTERM and waits for a clean exit.
func (u *upChild) stop(t *testing.T) {
	t.Helper()
	if err := u.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-u.done:
	case <-time.After(time.Minute):
		t.Fatalf("aloft up still runs a minute after SIGTERM\n%s", u.out)
	}
	if u.err != nil {
		t.Errorf("aloft up exit after SIGTERM: got %v, want exit status 0\n%s", u.err, u.out)
	}
}

// kill sends SIGKILL and waits for the exit.
func (u *upChild) kill() {
	select {
	case <-u.done:
		return
	default:
	}
	_ = u.cmd.Process.Signal(syscall.SIGKILL)
	<-u.done
}

func (u *upChild) deploy(t *testing.T, cfg model.Config, dir string) {
	t.Helper()
	var zip bytes.Buffer
	if err := cli.ZipDir(&zip, dir); err != nil {
		t.Fatal(err)
	}
	if _, err := u.client.Deploy(context.Background(), cfg.Name, cfg, &zip, int64(zip.Len()), nil); err != nil {
		t.Fatalf("deploy %s: %v\n%s", cfg.Name, err, u.out)
	}
}

func (u *upChild) deployFiles(t *testing.T, cfg model.Config, files map[string]string) {
	t.Helper()
	dir := t.TempDir()
	if err := testfn.Write(dir, files); err != nil {
		t.Fatal(err)
	}
	u.deploy(t, cfg, dir)
}

// invoke calls a function synchronously and returns status and body; err is
// a transport error (e.g. the node died).
func (u *upChild) invoke(name, payload string) (int, string, error) {
	req, err := http.NewRequest("POST", u.client.BaseURL+"/2015-03-31/functions/"+name+"/invocations", strings.NewReader(payload))
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("Authorization", "Bearer "+u.client.Token)
	resp, err := (&http.Client{Timeout: 2 * time.Minute}).Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	_, err = b.ReadFrom(resp.Body)
	if resp.Header.Get("X-Amz-Function-Error") != "" {
		return resp.StatusCode, "function error: " + b.String(), err
	}
	return resp.StatusCode, b.String(), err
}

func (u *upChild) invokeOK(t *testing.T, name, payload string) string {
	t.Helper()
	status, body, err := u.invoke(name, payload)
	if err != nil || status != http.StatusOK || strings.HasPrefix(body, "function error") {
		t.Fatalf("invoke %s: got %d %q (%v), want 200\n%s", name, status, body, err, u.out)
	}
	return body
}

// waitUntil polls cond until it holds or within passes.
func waitUntil(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", within, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// sleepingWith returns the marked processes that run /bin/sleep.
func sleepingWith(marker string) []int {
	var out []int
	for _, pid := range processesWith(marker) {
		b, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
		if strings.HasPrefix(string(b), "/bin/sleep\x00") {
			out = append(out, pid)
		}
	}
	return out
}

// driverID is the process driver's per-state-directory id (see
// process.New): the last element of its cgroup path and of its veth alias.
func driverID(t *testing.T, dataDir string) string {
	t.Helper()
	abs, err := filepath.Abs(filepath.Join(dataDir, "sandbox"))
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte(abs))
	return hex.EncodeToString(sum[:6])
}

// driverCgroupDirs returns the existing cgroup directories under which the
// driver of dataDir puts its instances (one per v1 hierarchy, or the v2
// one): <this process's cgroup>/aloft/<id>, as `aloft up` started from here
// inherits this process's cgroups.
func driverCgroupDirs(t *testing.T, dataDir string) []string {
	t.Helper()
	id := driverID(t, dataDir)
	own := map[string]string{} // controllers ("" for v2) → path
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if p := strings.SplitN(line, ":", 3); len(p) == 3 {
			own[p[1]] = p[2]
		}
	}
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var dirs []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		sep := slices.Index(fields, "-")
		if sep < 0 || len(fields) < sep+4 {
			continue
		}
		root, point, fstype := fields[3], fields[4], fields[sep+1]
		var path string
		var ok bool
		switch fstype {
		case "cgroup2":
			path, ok = own[""]
		case "cgroup":
			opts := strings.Split(fields[sep+3], ",")
			for ctrls, p := range own {
				for _, c := range strings.Split(ctrls, ",") {
					if c != "" && slices.Contains(opts, c) {
						path, ok = p, true
					}
				}
			}
		}
		if !ok {
			continue
		}
		d := filepath.Join(point, strings.TrimPrefix(path, root), "aloft", id)
		if fi, err := os.Stat(d); err == nil && fi.IsDir() && !slices.Contains(dirs, d) {
			dirs = append(dirs, d)
		}
	}
	return dirs
}

// instanceCgroups lists the instance cgroups (dir/<instance>) the driver of
// dataDir has now.
func instanceCgroups(t *testing.T, dataDir string) []string {
	t.Helper()
	var out []string
	for _, d := range driverCgroupDirs(t, dataDir) {
		entries, _ := os.ReadDir(d)
		for _, e := range entries {
			if e.IsDir() {
				out = append(out, filepath.Join(d, e.Name()))
			}
		}
	}
	return out
}

// driverVeths lists the host ends of outbound veths labelled with the
// driver's alias.
func driverVeths(t *testing.T, dataDir string) []string {
	t.Helper()
	alias := "aloft:" + driverID(t, dataDir)
	entries, _ := os.ReadDir("/sys/class/net")
	var out []string
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join("/sys/class/net", e.Name(), "ifalias"))
		if err == nil && strings.TrimSpace(string(b)) == alias {
			out = append(out, e.Name())
		}
	}
	return out
}

// mountsUnder returns the host mount points below dir.
func mountsUnder(t *testing.T, dir string) []string {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 4 && (f[4] == dir || strings.HasPrefix(f[4], dir+"/")) {
			out = append(out, f[4])
		}
	}
	return out
}

// TestSandboxCrashRestart kills an isolated `aloft up` with SIGKILL while a
// Go and a Python instance run (the Python one busy in a long sleep), and
// checks that no instance process survives, that the restarted node leaves
// no cgroup or veth of the previous run and nothing is mounted on the host,
// and that both functions answer again.
func TestSandboxCrashRestart(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for the isolating sandbox")
	}
	needIsolation(t)
	dataDir := filepath.Join(t.TempDir(), "data")
	addr := freeAddr(t)
	marker := fmt.Sprintf("crash-%d-%d", os.Getpid(), time.Now().UnixNano())
	flags := []string{"--isolation", "required", "--grace", "5s"}
	up := runUp(t, dataDir, addr, flags...)
	if !strings.Contains(up.out.String(), "isolation: isolated") {
		t.Fatalf("aloft up is not isolated:\n%s", up.out)
	}

	env := map[string]string{"APP_MARKER": marker}
	up.deploy(t, model.Config{Name: "gofn", Runtime: model.RuntimeProvided, Timeout: 900, Env: env}, goecho(t))
	// The Python function has an outbound network when the host allows it,
	// so that a veth is among the leftovers too.
	pyNet := model.NetworkNone
	if strings.Contains(up.out.String(), "outbound network on request") {
		pyNet = model.NetworkOutbound
	}
	up.deployFiles(t, model.Config{Name: "pyfn", Runtime: model.RuntimePython, Handler: "main.handler",
		Timeout: 900, Env: env, Network: pyNet}, map[string]string{"main.py": sleeper})
	up.invokeOK(t, "gofn", `{"value":"warm"}`)
	up.invokeOK(t, "pyfn", `{}`)

	busy := make(chan error, 1)
	go func() {
		_, _, err := up.invoke("pyfn", `{"sleep": 600}`)
		busy <- err
	}()
	waitUntil(t, 30*time.Second, "the python invocation to sleep", func() bool { return len(sleepingWith(marker)) == 1 })
	if n := len(processesWith(marker)); n < 3 { // go runtime, python runtime, sleep
		t.Fatalf("marked processes before the kill: got %d, want at least 3", n)
	}
	cgroups := instanceCgroups(t, dataDir)
	if len(cgroups) < 2 {
		t.Fatalf("instance cgroups before the kill: got %v, want at least 2", cgroups)
	}
	veths := driverVeths(t, dataDir)
	if pyNet == model.NetworkOutbound && len(veths) != 1 {
		t.Errorf("outbound veths before the kill: got %v, want 1", veths)
	}

	t.Logf("before SIGKILL: %d marked processes, instance cgroups %v, veths %v", len(processesWith(marker)), cgroups, veths)
	up.kill()
	if err := <-busy; err == nil {
		t.Errorf("invocation in flight during SIGKILL: got no error, want a broken connection")
	}
	waitUntil(t, 15*time.Second, "instance processes to die with aloft up", func() bool { return len(processesWith(marker)) == 0 })
	if got := mountsUnder(t, dataDir); len(got) != 0 {
		t.Errorf("host mounts under the data directory after the kill: %v", got)
	}

	up = runUp(t, dataDir, addr, flags...)
	for _, cg := range cgroups {
		if _, err := os.Stat(cg); !os.IsNotExist(err) {
			t.Errorf("cgroup %s of the previous run after the restart: got %v, want it removed", cg, err)
		}
	}
	// The kernel removes a dead namespace's veths asynchronously; the new
	// driver deletes any still there.
	waitUntil(t, 10*time.Second, "no veth of the previous run", func() bool { return len(driverVeths(t, dataDir)) == 0 })
	if got := mountsUnder(t, dataDir); len(got) != 0 {
		t.Errorf("host mounts under the data directory after the restart: %v", got)
	}
	if got := up.invokeOK(t, "gofn", `{"value":"again"}`); !strings.Contains(got, `"again"`) {
		t.Errorf("gofn after the restart: got %s, want the echoed value", got)
	}
	if got := up.invokeOK(t, "pyfn", `{"sleep": 1}`); !strings.Contains(got, `"slept": 1`) {
		t.Errorf("pyfn after the restart: got %s, want slept 1", got)
	}

	// A clean stop leaves nothing either.
	up.stop(t)
	if got := instanceCgroups(t, dataDir); len(got) != 0 {
		t.Errorf("instance cgroups after a clean stop: %v", got)
	}
	if got := driverVeths(t, dataDir); len(got) != 0 {
		t.Errorf("veths after a clean stop: %v", got)
	}
}
