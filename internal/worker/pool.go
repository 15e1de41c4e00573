package worker

// Pre-started interpreters (the technique of Fission and OpenWhisk): per
// runtime, the worker keeps PoolSize Node and Python instances that are
// already sandboxed and have already run their bootstrap's start-up, each
// waiting on the Runtime API's GET aloft/specialize. A cold start of a Node or
// Python function takes one (takePooled, called first by startInstance):
// the function's code is hard-linked into the instance's own, still empty,
// code directory, its memory limit is raised to the function's, and the
// function's environment is handed over; the runtime then imports the
// handler and asks for the invocation as a fresh one would. The pool refills
// in the background.
//
// A function is only given a pooled instance when nothing it configures
// would have had to be known when the process started: the default /tmp
// size, no outbound network, and no variables the interpreter or the C
// library read at start-up (NODE_OPTIONS, PYTHON*, LD_*, …). The others,
// and every cold start that finds the pool empty, start a fresh instance.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/aloft-dev/aloft/internal/model"
	"github.com/aloft-dev/aloft/internal/runtimeapi"
	"github.com/aloft-dev/aloft/internal/sandbox"
	"github.com/aloft-dev/aloft/runtimes"
)

// DefaultPoolSize is the pool size `aloft up` uses.
const DefaultPoolSize = 2

// poolMemoryMB is the memory limit pooled instances start with; the
// instance is resized to its function's memory when it gets one. Drivers
// whose instances cannot be resized (no sandbox.Resizer) only serve
// functions of exactly this size from the pool.
const poolMemoryMB = model.MinMemoryMB

// Waits before starting again after a pooled instance failed to start or
// died while pooled; doubled on each failure in a row.
const (
	poolRetryMin = time.Second
	poolRetryMax = time.Minute
)

// poolRuntimes are the runtimes that have pools.
var poolRuntimes = []model.Runtime{model.RuntimeNode, model.RuntimePython}

// interpPools are the worker's pools of pre-started interpreters.
// The zero value is unused (no pools) until startPools.
type interpPools struct {
	mu     sync.Mutex
	dir    string // host directory of the pooled instances' code directories
	ownDir bool   // dir was made by startPools and goes with closePools
	pools  map[model.Runtime]*interpPool
	closed bool
	starts sync.WaitGroup // instances being started
}

// interpPool is the pool of one runtime.
type interpPool struct {
	rt       model.Runtime
	ready    []*pooled // waiting for a function, oldest first
	starting int
	failures int         // failed starts (or deaths while pooled) in a row
	retry    *time.Timer // set while waiting to retry after a failure
}

// pooled is a pre-started instance.
type pooled struct {
	inst                  *instance
	taskRoot, runtimeRoot string // as the instance sees them
}

// startPools creates the pool directory and starts filling the pools.
// Without a usable directory the worker runs without pools.
func (w *Worker) startPools() {
	if w.PoolSize <= 0 || w.RuntimeDir == "" {
		return
	}
	if err := w.initPools(); err != nil {
		w.Logger.Warn("no instance pools", "err", err)
	}
}

func (w *Worker) initPools() error {
	ip := &w.interp
	dir := w.PoolDir
	if dir == "" {
		d, err := os.MkdirTemp("", "aloft-pool-")
		if err != nil {
			return fmt.Errorf("cannot create pool directory: %w", err)
		}
		dir, ip.ownDir = d, true
	} else {
		// Directories of a previous run's instances are left-overs.
		if err := os.RemoveAll(dir); err != nil {
			return fmt.Errorf("cannot clean pool directory: %w", err)
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("cannot create pool directory: %w", err)
		}
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		return fmt.Errorf("cannot create pool directory: %w", err)
	}
	ip.mu.Lock()
	defer ip.mu.Unlock()
	ip.dir = dir
	ip.pools = make(map[model.Runtime]*interpPool)
	for _, rt := range poolRuntimes {
		if _, err := runtimes.Interpreter(rt); err != nil {
			w.Logger.Info("no instance pool", "runtime", rt, "err", err)
			continue
		}
		p := &interpPool{rt: rt}
		ip.pools[rt] = p
		w.fillLocked(p)
	}
	return nil
}

// closePools stops the pooled instances and waits for those starting.
// Instances taken from the pools are the worker's like any other.
func (w *Worker) closePools() {
	ip := &w.interp
	ip.mu.Lock()
	ip.closed = true
	var idle []*pooled
	for _, p := range ip.pools {
		if p.retry != nil {
			p.retry.Stop()
			p.retry = nil
		}
		idle = append(idle, p.ready...)
		p.ready = nil
	}
	ip.mu.Unlock()
	var wg sync.WaitGroup
	for _, pi := range idle {
		wg.Go(func() { pi.inst.sb.Stop() })
	}
	wg.Wait()
	ip.starts.Wait()
	if ip.ownDir {
		os.RemoveAll(ip.dir)
	}
}

// PoolCounts reports how many pre-started instances each runtime's pool
// holds ready and how many are starting.
func (w *Worker) PoolCounts() map[model.Runtime]Counts {
	ip := &w.interp
	ip.mu.Lock()
	defer ip.mu.Unlock()
	m := make(map[model.Runtime]Counts, len(ip.pools))
	for rt, p := range ip.pools {
		m[rt] = Counts{Warm: len(p.ready), Busy: p.starting}
	}
	return m
}

// fillLocked starts instances until the pool holds PoolSize, ready or
// starting, unless it waits to retry after a failure. The caller holds
// w.interp.mu.
func (w *Worker) fillLocked(p *interpPool) {
	ip := &w.interp
	for !ip.closed && p.retry == nil && len(p.ready)+p.starting < w.PoolSize {
		p.starting++
		ip.starts.Add(1)
		go w.startPooled(p)
	}
}

// failedLocked counts a failure and schedules the next fill. The caller
// holds w.interp.mu.
func (w *Worker) failedLocked(p *interpPool) {
	p.failures++
	if w.interp.closed || p.retry != nil {
		return
	}
	wait := poolRetryMin << min(p.failures-1, 6)
	wait = min(wait, poolRetryMax)
	p.retry = time.AfterFunc(wait, func() {
		w.interp.mu.Lock()
		defer w.interp.mu.Unlock()
		p.retry = nil
		w.fillLocked(p)
	})
}

func (w *Worker) startPooled(p *interpPool) {
	defer w.interp.starts.Done()
	pi, err := w.launchPooled(p.rt)
	ip := &w.interp
	ip.mu.Lock()
	p.starting--
	if err != nil {
		w.failedLocked(p)
		ip.mu.Unlock()
		select {
		case <-w.stop:
		default:
			w.Logger.Warn("cannot start pooled instance", "runtime", p.rt, "err", err)
		}
		return
	}
	if ip.closed {
		ip.mu.Unlock()
		pi.inst.sb.Stop()
		return
	}
	p.failures = 0
	p.ready = append(p.ready, pi)
	ip.mu.Unlock()
	go w.watchPooled(p, pi)
}

// watchPooled waits for the instance's end: one that died while pooled is
// dropped (and counts as a failure); once gone, its code directory goes too.
func (w *Worker) watchPooled(p *interpPool, pi *pooled) {
	<-pi.inst.sb.Done()
	ip := &w.interp
	ip.mu.Lock()
	for i, r := range p.ready {
		if r == pi {
			p.ready = append(p.ready[:i], p.ready[i+1:]...)
			w.Logger.Warn("pooled instance exited", "runtime", p.rt, "instance", pi.inst.id,
				"status", pi.inst.sb.ExitStatus().String())
			w.failedLocked(p)
			break
		}
	}
	ip.mu.Unlock()
	os.RemoveAll(filepath.Join(ip.dir, pi.inst.id))
}

// launchPooled starts an instance of rt in pool mode and waits until its
// runtime asks to be specialised.
func (w *Worker) launchPooled(rt model.Runtime) (*pooled, error) {
	id := newInstanceID()
	dir := filepath.Join(w.interp.dir, id)
	if err := os.Mkdir(dir, 0o755); err != nil {
		return nil, fmt.Errorf("cannot create code directory: %w", err)
	}
	if err := os.Chmod(dir, 0o755); err != nil { // whatever the umask
		os.Remove(dir)
		return nil, fmt.Errorf("cannot create code directory: %w", err)
	}
	spec := &sandbox.Spec{
		ID: id, Function: "pool-" + string(rt), CodeDir: dir, RuntimeDir: w.RuntimeDir,
		MemoryMB: poolMemoryMB, TmpMB: model.DefaultTmpMB, Network: model.NetworkNone,
	}
	taskRoot, runtimeRoot := w.Driver.Paths(spec)
	var err error
	if spec.Args, err = runtimes.Command(rt, runtimeRoot); err != nil {
		os.Remove(dir)
		return nil, err
	}
	spec.Env = []string{
		"PATH=/usr/local/bin:/usr/bin:/bin",
		"LANG=en_US.UTF-8",
		"TZ=:UTC",
		"HOME=/tmp",
		"AWS_REGION=" + w.Region,
		"AWS_DEFAULT_REGION=" + w.Region,
		"AWS_EXECUTION_ENV=AWS_Lambda_" + string(rt),
		"LAMBDA_TASK_ROOT=" + taskRoot,
		"ALOFT_POOL=1",
	}
	if runtimeRoot != "" {
		spec.Env = append(spec.Env, "LAMBDA_RUNTIME_DIR="+runtimeRoot)
	}
	api := runtimeapi.New()
	logs := &logBuffer{max: w.LogLimit}
	spec.RuntimeAPI, spec.Output = api, logs
	begin := time.Now()
	sb, err := w.Driver.Start(context.Background(), spec)
	if err != nil {
		os.Remove(dir)
		return nil, err
	}
	started := time.Now()
	go func() {
		<-sb.Done()
		api.Close()
	}()
	pi := &pooled{
		inst:     &instance{id: id, sb: sb, api: api, logs: logs},
		taskRoot: taskRoot, runtimeRoot: runtimeRoot,
	}
	t := time.NewTimer(w.InitTimeout)
	defer t.Stop()
	select {
	case <-api.PoolReady():
		// sandbox_ms: the driver's set-up up to the exec; boot_ms: the
		// interpreter's start and the bootstrap's imports.
		w.Logger.Debug("pooled instance ready", "runtime", rt, "instance", id,
			"sandbox_ms", ms(started.Sub(begin)), "boot_ms", ms(time.Since(started)))
		return pi, nil
	case <-sb.Done():
		err = fmt.Errorf("runtime exited before it was ready: %s: %s", sb.ExitStatus(), tail(logs.take()))
	case <-api.InitFailed():
		err = fmt.Errorf("runtime reported an init error: %s", api.InitError().Payload)
	case <-t.C:
		err = fmt.Errorf("runtime not ready after %s", w.InitTimeout)
	case <-w.stop:
		err = errors.New("worker closing")
	}
	sb.Stop()
	<-sb.Done()
	os.RemoveAll(dir)
	return nil, err
}

// tail is the end of an instance's output, for an error message.
func tail(b []byte) string {
	const max = 512
	if len(b) > max {
		b = b[len(b)-max:]
	}
	return strings.TrimSpace(string(b))
}

// poolable reports whether fn may run on a pre-started instance (see the
// top of this file).
func poolable(fn *model.Function) bool {
	if fn.Runtime != model.RuntimeNode && fn.Runtime != model.RuntimePython {
		return false
	}
	if fn.EphemeralStorage != 0 && fn.EphemeralStorage != model.DefaultTmpMB {
		return false
	}
	if fn.Network != "" && fn.Network != model.NetworkNone {
		return false
	}
	for k := range fn.Env {
		if startupEnv(k) {
			return false
		}
	}
	return true
}

// startupEnv reports whether the variable k is read when an interpreter
// starts (so setting it later has no effect).
func startupEnv(k string) bool {
	for _, p := range []string{"NODE_", "PYTHON", "LD_", "UV_", "MALLOC_", "GLIBC_", "LC_", "SSL_", "OPENSSL_"} {
		if strings.HasPrefix(k, p) {
			return true
		}
	}
	switch k {
	case "LANG", "LANGUAGE", "TZ", "PATH", "HOME", "TMPDIR", "AWS_LAMBDA_EXEC_WRAPPER":
		return true
	}
	return false
}

// takePooled gives fn a pre-started instance when its runtime's pool has a
// ready one, and starts refilling the pool. It returns false when fn must
// start a fresh instance instead.
func (w *Worker) takePooled(ctx context.Context, fn *model.Function, rev string) (*instance, bool) {
	if !poolable(fn) {
		return nil, false
	}
	ip := &w.interp
	ip.mu.Lock()
	p := ip.pools[fn.Runtime]
	if p == nil || ip.closed || len(p.ready) == 0 {
		ip.mu.Unlock()
		return nil, false
	}
	if _, ok := p.ready[0].inst.sb.(sandbox.Resizer); !ok && fn.Memory != poolMemoryMB {
		ip.mu.Unlock()
		return nil, false
	}
	ip.mu.Unlock()
	// Fetching the code can fail; then the fresh start reports why.
	codeDir, err := w.Code.CodeDir(ctx, fn)
	if err != nil {
		return nil, false
	}
	ip.mu.Lock()
	var pi *pooled
	for len(p.ready) > 0 && pi == nil {
		pi = p.ready[0]
		p.ready = p.ready[1:]
		select {
		case <-pi.inst.sb.Done(): // died while pooled; watchPooled tells
			pi = nil
		default:
		}
	}
	w.fillLocked(p)
	ip.mu.Unlock()
	if pi == nil {
		return nil, false
	}
	if err := w.specialize(fn, rev, codeDir, pi); err != nil {
		w.Logger.Warn("cannot specialise pooled instance", "function", fn.Name, "instance", pi.inst.id, "err", err)
		go pi.inst.sb.Stop()
		return nil, false
	}
	return pi.inst, true
}

// specialize makes a pooled instance fn's: code, memory limit, environment.
// The instance's init starts now, so its Init Duration covers this and the
// runtime's import of the handler.
func (w *Worker) specialize(fn *model.Function, rev, codeDir string, pi *pooled) error {
	inst := pi.inst
	begin := time.Now()
	copied, err := linkTree(codeDir, filepath.Join(w.interp.dir, inst.id))
	if err != nil {
		return fmt.Errorf("cannot link code: %w", err)
	}
	linked := time.Now()
	if fn.Memory != poolMemoryMB {
		r, ok := inst.sb.(sandbox.Resizer)
		if !ok {
			return errors.New("cannot resize instance")
		}
		if err := r.SetMemoryLimit(fn.Memory); err != nil {
			return err
		}
	}
	resized := time.Now()
	env := make(map[string]string)
	for _, kv := range w.environment(fn, inst.id, pi.taskRoot, pi.runtimeRoot) {
		k, v, _ := strings.Cut(kv, "=")
		env[k] = v
	}
	// What the runtime printed while pooled belongs to no invocation.
	inst.sb.FlushOutput()
	inst.logs.take()
	inst.revision, inst.memoryMB, inst.started, inst.pooled = rev, fn.Memory, begin, true
	inst.sandboxDur = resized.Sub(begin)
	w.Logger.Debug("specialised pooled instance", "function", fn.Name, "instance", inst.id,
		"link_ms", ms(linked.Sub(begin)), "copied", copied, "resize_ms", ms(resized.Sub(linked)))
	return inst.api.Specialize(env)
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// linkTree recreates the tree src in the existing directory dst with hard
// links to src's files, copying those it cannot link (another filesystem).
// It reports whether it had to copy.
func linkTree(src, dst string) (copied bool, err error) {
	err = filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		switch {
		case rel == ".":
			return nil
		case d.IsDir():
			fi, err := d.Info()
			if err != nil {
				return err
			}
			if err := os.Mkdir(target, 0o755); err != nil {
				return err
			}
			return os.Chmod(target, fi.Mode().Perm())
		case d.Type()&fs.ModeSymlink != 0:
			to, err := os.Readlink(p)
			if err != nil {
				return err
			}
			return os.Symlink(to, target)
		case d.Type().IsRegular():
			if os.Link(p, target) == nil {
				return nil
			}
			copied = true
			return copyFile(p, target)
		default:
			return nil // sockets, devices: not code
		}
	})
	return copied, err
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	fi, err := in.Stat()
	if err != nil {
		return err
	}
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, fi.Mode().Perm())
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
