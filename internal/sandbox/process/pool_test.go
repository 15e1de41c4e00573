//go:build linux

package process

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/aloft-dev/aloft/internal/runtimeapi"
	"github.com/aloft-dev/aloft/internal/sandbox"
)

// waitFor polls cond every 10 ms for up to 30 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// pooledInits returns the inits in d's pool now.
func pooledInits(d *Driver) []*Instance {
	d.pool.mu.Lock()
	defer d.pool.mu.Unlock()
	var out []*Instance
	for _, e := range d.pool.ready {
		out = append(out, e.inst)
	}
	return out
}

func gone(t *testing.T, dirs []string) {
	t.Helper()
	for _, dir := range dirs {
		if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("cgroup %s: got %v, want it removed", dir, err)
		}
	}
}

// TestPoolReplacesDeadInit: a pooled init killed while it waits is removed
// with its cgroup, the pool refills, and the next Start takes a live one.
func TestPoolReplacesDeadInit(t *testing.T) {
	d := newDriver(t, Options{Prewarm: 2})
	victim := pooledInits(d)[0]
	dirs := victim.cg.dirs()
	if err := victim.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the pool to replace the dead init", func() bool {
		got := pooledInits(d)
		return len(got) == 2 && !slices.Contains(got, victim)
	})
	waitFor(t, "the dead init's cgroup to go", func() bool {
		for _, dir := range dirs {
			if _, err := os.Stat(dir); err == nil {
				return false
			}
		}
		return true
	})
	r := start(t, d, nil, true)
	checkPooled(t, r, true)
	if got := r.invoke(t, "echo:x"); got != "ok: x" {
		t.Errorf("echo: got %q, want %q", got, "ok: x")
	}
}

// TestPoolClose: Close, right after a take while the pool refills, leaves
// no pooled or running init, no cgroup and no veth; Start fails after it.
func TestPoolClose(t *testing.T) {
	needIsolation(t)
	d, err := New(Options{StateDir: t.TempDir(), Prewarm: 2})
	if err != nil {
		t.Fatal(err)
	}
	waitPool(t, d)
	inits := pooledInits(d)
	edit := func(*sandbox.Spec) {}
	if d.net.available() == nil {
		edit = outbound
	}
	r := start(t, d, edit, true)
	checkPooled(t, r, true)
	inits = append(inits, r.inst)
	if err := d.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	for _, i := range inits {
		if pid := i.cmd.Process.Pid; alive(pid) {
			t.Errorf("init %d still runs after Close", pid)
		}
		gone(t, i.cg.dirs())
	}
	for _, dir := range d.cg.dirs() {
		entries, err := os.ReadDir(dir)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Fatal(err)
		}
		for _, e := range entries {
			if e.IsDir() {
				t.Errorf("cgroup %s/%s left after Close", dir, e.Name())
			}
		}
	}
	if got := driverLinks(t, d); len(got) != 0 {
		t.Errorf("driver veths after Close: %v", got)
	}
	if got := len(pooledInits(d)); got != 0 {
		t.Errorf("pooled inits after Close: got %d, want 0", got)
	}
	spec := &sandbox.Spec{ID: "after-close", Args: []string{"/var/task/bootstrap"}, CodeDir: t.TempDir(), RuntimeAPI: runtimeapi.New()}
	if inst, err := d.Start(context.Background(), spec); err == nil {
		inst.Stop()
		t.Error("Start after Close: got no error")
	}
}

// TestConcurrentStartsOnePooled: two Starts at once with one pooled init
// both succeed (one takes it, the other forks its own) and both answer.
func TestConcurrentStartsOnePooled(t *testing.T) {
	d := newDriver(t, Options{Prewarm: 1})
	code := codeDir(t, map[string]string{"bootstrap": hostileBinary(t)})
	type result struct {
		inst *Instance
		api  *runtimeapi.Server
		err  error
	}
	results := make([]result, 2)
	var wg sync.WaitGroup
	for n := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			api := runtimeapi.New()
			inst, err := d.Start(context.Background(), &sandbox.Spec{
				ID: fmt.Sprintf("c%d-%d", os.Getpid(), n), Args: []string{TaskRoot + "/bootstrap"},
				CodeDir: code, MemoryMB: 128, TmpMB: 16, RuntimeAPI: api, Output: &syncBuffer{},
			})
			results[n] = result{api: api, err: err}
			if err == nil {
				results[n].inst = inst.(*Instance)
			}
		}()
	}
	wg.Wait()
	pooled := 0
	for n, r := range results {
		if r.err != nil {
			t.Fatalf("Start %d: %v", n, r.err)
		}
		t.Cleanup(func() { r.inst.Stop() })
		if r.inst.pooled {
			pooled++
		}
	}
	if pooled == 0 {
		t.Errorf("instances from the pool: got 0, want at least 1")
	}
	for n, r := range results {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		res, err := r.api.Invoke(ctx, &runtimeapi.Invocation{
			RequestID: fmt.Sprintf("req-c%d", n), Payload: []byte("echo:c"), Deadline: time.Now().Add(time.Minute),
		})
		cancel()
		if err != nil {
			t.Fatalf("invoke %d: %v", n, err)
		}
		if got := string(res.Payload); got != "ok: c" {
			t.Errorf("instance %d: got %q, want %q", n, got, "ok: c")
		}
	}
}
