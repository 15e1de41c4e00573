package worker

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aloft-dev/aloft/internal/model"
	"github.com/aloft-dev/aloft/internal/sandbox/plain"
	"github.com/aloft-dev/aloft/runtimes"
)

// These tests run real interpreters with the plain driver; the isolating
// driver's pooled instances are covered end to end in internal/e2e.

const waitLong = 60 * time.Second

// dirCode serves every function's code from one host directory.
type dirCode string

func (d dirCode) CodeDir(context.Context, *model.Function) (string, error) { return string(d), nil }

// usageSink keeps the usage records.
type usageSink struct {
	mu    sync.Mutex
	usage []model.Usage
}

func (s *usageSink) Log(string, []byte) {}
func (s *usageSink) Usage(u *model.Usage) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.usage = append(s.usage, *u)
}

const pyEcho = `import os
def handler(event, context):
    return {"color": os.environ.get("APP_COLOR"), "memory": context.memory_limit_in_mb,
            "stream": context.log_stream_name, "data": open("data.txt").read()}
`

// newPoolWorker starts a worker with pools of size over a python function's code.
func newPoolWorker(t *testing.T, size int) (*Worker, *usageSink) {
	t.Helper()
	for _, rt := range poolRuntimes {
		if _, err := runtimes.Interpreter(rt); err != nil {
			t.Skipf("no interpreter for %s: %v", rt, err)
		}
	}
	rtDir, err := runtimes.Extract(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	code := t.TempDir()
	for name, body := range map[string]string{"app.py": pyEcho, "data.txt": "code"} {
		if err := os.WriteFile(filepath.Join(code, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	sink := &usageSink{}
	w := &Worker{Driver: &plain.Driver{}, Code: dirCode(code), Sink: sink, RuntimeDir: rtDir,
		PoolSize: size, PoolDir: filepath.Join(t.TempDir(), "pool")}
	w.Start()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitLong)
		defer cancel()
		if err := w.Close(ctx); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return w, sink
}

func pyFunction(name string, memory int) *model.Function {
	return &model.Function{Config: model.Config{Name: name, Runtime: model.RuntimePython, Handler: "app.handler",
		Memory: memory, Timeout: 30, EphemeralStorage: model.DefaultTmpMB, Network: model.NetworkNone,
		Env: map[string]string{"APP_COLOR": "blue"}}, CodeSHA256: "sha-" + name, LastModified: time.Now()}
}

// waitReady waits until rt's pool holds n ready instances and none starting.
func waitReady(t *testing.T, w *Worker, rt model.Runtime, n int) {
	t.Helper()
	deadline := time.Now().Add(waitLong)
	for {
		c := w.PoolCounts()[rt]
		if c.Warm == n && c.Busy == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("pool of %s: %d ready, %d starting; want %d ready", rt, c.Warm, c.Busy, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func invoke(t *testing.T, w *Worker, fn *model.Function) (*Response, map[string]any) {
	t.Helper()
	resp, err := w.Invoke(context.Background(), fn, &Request{Payload: []byte(`{}`), WantLog: true})
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if resp.FunctionError != "" || json.Unmarshal(resp.Payload, &got) != nil {
		t.Fatalf("got %s (%s), want the handler's answer; log:\n%s", resp.Payload, resp.ErrorType, resp.Log)
	}
	return resp, got
}

// TestPoolServesAndRefills: a cold start takes a pooled instance (usage
// says so), the function gets its code, environment and memory size, and
// the pool refills without ever holding more than its size.
func TestPoolServesAndRefills(t *testing.T) {
	w, _ := newPoolWorker(t, 2)
	waitReady(t, w, model.RuntimePython, 2)
	for i := range 3 {
		fn := pyFunction(fmt.Sprintf("fn%d", i), 256)
		resp, got := invoke(t, w, fn)
		u := resp.Usage
		if !u.Cold || !u.Pooled || u.InitDurationMs <= 0 {
			t.Errorf("usage cold %v pooled %v init %v ms, want a pooled cold start with an init duration", u.Cold, u.Pooled, u.InitDurationMs)
		}
		if got["color"] != "blue" || got["memory"] != "256" || got["data"] != "code" {
			t.Errorf("got %v, want color blue, memory 256, data code", got)
		}
		resp, _ = invoke(t, w, fn)
		if resp.Usage.Cold || resp.Usage.Pooled {
			t.Errorf("second invocation: cold %v pooled %v, want warm", resp.Usage.Cold, resp.Usage.Pooled)
		}
		// Refilling: never more than the pool's size, ready or starting.
		deadline := time.Now().Add(waitLong)
		for {
			c := w.PoolCounts()[model.RuntimePython]
			if c.Warm+c.Busy > 2 {
				t.Fatalf("pool holds %d ready and %d starting, want at most 2", c.Warm, c.Busy)
			}
			if c.Warm == 2 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("pool did not refill: %d ready, %d starting", c.Warm, c.Busy)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
}

// TestPoolDisabled: with PoolSize 0 there are no pools and cold starts are
// ordinary.
func TestPoolDisabled(t *testing.T) {
	w, _ := newPoolWorker(t, 0)
	if n := len(w.PoolCounts()); n != 0 {
		t.Errorf("got %d pools, want none", n)
	}
	resp, _ := invoke(t, w, pyFunction("fn", 128))
	if !resp.Usage.Cold || resp.Usage.Pooled {
		t.Errorf("cold %v pooled %v, want an unpooled cold start", resp.Usage.Cold, resp.Usage.Pooled)
	}
}

// TestPoolDropsDeadInstances: an instance that dies while pooled is never
// handed out and is replaced.
func TestPoolDropsDeadInstances(t *testing.T) {
	w, _ := newPoolWorker(t, 1)
	waitReady(t, w, model.RuntimePython, 1)
	w.interp.mu.Lock()
	dead := w.interp.pools[model.RuntimePython].ready[0].inst
	w.interp.mu.Unlock()
	dead.sb.Stop()
	<-dead.sb.Done()
	_, got := invoke(t, w, pyFunction("fn", 128))
	if strings.HasSuffix(fmt.Sprint(got["stream"]), dead.id) {
		t.Fatal("the dead instance served the invocation")
	}
	waitReady(t, w, model.RuntimePython, 1)
	w.interp.mu.Lock()
	fresh := w.interp.pools[model.RuntimePython].ready[0].inst
	w.interp.mu.Unlock()
	if fresh == dead {
		t.Error("the dead instance is still pooled")
	}
	if _, err := os.Stat(filepath.Join(w.interp.dir, dead.id)); !os.IsNotExist(err) {
		t.Errorf("code directory of the dead instance: stat error %v, want it removed", err)
	}
}

// TestPoolClose: closing the worker stops the pooled instances and removes
// their directories.
func TestPoolClose(t *testing.T) {
	w, _ := newPoolWorker(t, 2)
	waitReady(t, w, model.RuntimeNode, 2)
	waitReady(t, w, model.RuntimePython, 2)
	w.interp.mu.Lock()
	var insts []*instance
	for _, p := range w.interp.pools {
		for _, pi := range p.ready {
			insts = append(insts, pi.inst)
		}
	}
	w.interp.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	if err := w.Close(ctx); err != nil {
		t.Fatal(err)
	}
	for _, inst := range insts {
		select {
		case <-inst.sb.Done():
		case <-time.After(waitLong):
			t.Fatalf("pooled instance %s still runs after Close", inst.id)
		}
	}
	deadline := time.Now().Add(waitLong)
	for {
		entries, _ := os.ReadDir(w.interp.dir)
		if len(entries) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("pool directory still holds %d entries", len(entries))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestPoolable(t *testing.T) {
	base := func(edit func(*model.Function)) *model.Function {
		fn := pyFunction("fn", 256)
		edit(fn)
		return fn
	}
	cases := []struct {
		name string
		fn   *model.Function
		want bool
	}{
		{"python", base(func(*model.Function) {}), true},
		{"node", base(func(f *model.Function) { f.Runtime = model.RuntimeNode }), true},
		{"go", base(func(f *model.Function) { f.Runtime = model.RuntimeGo }), false},
		{"provided", base(func(f *model.Function) { f.Runtime = model.RuntimeProvided }), false},
		{"bigger tmp", base(func(f *model.Function) { f.EphemeralStorage = 1024 }), false},
		{"outbound", base(func(f *model.Function) { f.Network = model.NetworkOutbound }), false},
		{"NODE_OPTIONS", base(func(f *model.Function) { f.Env["NODE_OPTIONS"] = "--max-old-space-size=64" }), false},
		{"PYTHONPATH", base(func(f *model.Function) { f.Env["PYTHONPATH"] = "/var/task/lib" }), false},
		{"LD_PRELOAD", base(func(f *model.Function) { f.Env["LD_PRELOAD"] = "x.so" }), false},
		{"TZ", base(func(f *model.Function) { f.Env["TZ"] = "Europe/Paris" }), false},
		{"app variable", base(func(f *model.Function) { f.Env["NODES"] = "3" }), true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := poolable(c.fn); got != c.want {
				t.Errorf("got %v, want %v", got, c.want)
			}
		})
	}
}

func TestLinkTree(t *testing.T) {
	src := t.TempDir()
	if err := os.MkdirAll(filepath.Join(src, "pkg", "sub"), 0o750); err != nil {
		t.Fatal(err)
	}
	for name, body := range map[string]string{"a.py": "a", "pkg/b.py": "b", "pkg/sub/c.py": "c"} {
		if err := os.WriteFile(filepath.Join(src, name), []byte(body), 0o640); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("pkg/b.py", filepath.Join(src, "link.py")); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name     string
		dst      string
		wantLink bool
	}{
		{"same filesystem", t.TempDir(), true},
		// /dev/shm is a tmpfs: another filesystem than the test's temp dir.
		{"other filesystem", shmDir(t), false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.dst == "" {
				t.Skip("no /dev/shm on another filesystem")
			}
			copied, err := linkTree(src, c.dst)
			if err != nil {
				t.Fatal(err)
			}
			if copied == c.wantLink {
				t.Errorf("copied = %v, want %v", copied, !c.wantLink)
			}
			for _, name := range []string{"a.py", "pkg/b.py", "pkg/sub/c.py"} {
				s, _ := os.Stat(filepath.Join(src, name))
				d, err := os.Stat(filepath.Join(c.dst, name))
				if err != nil {
					t.Fatalf("%s: %v", name, err)
				}
				if os.SameFile(s, d) != c.wantLink {
					t.Errorf("%s: same file %v, want %v", name, os.SameFile(s, d), c.wantLink)
				}
				if d.Mode().Perm() != 0o640 {
					t.Errorf("%s: mode %v, want 0640", name, d.Mode().Perm())
				}
			}
			if fi, err := os.Stat(filepath.Join(c.dst, "pkg")); err != nil || fi.Mode().Perm() != 0o750 {
				t.Errorf("pkg: %v %v, want a 0750 directory", fi.Mode(), err)
			}
			if to, err := os.Readlink(filepath.Join(c.dst, "link.py")); err != nil || to != "pkg/b.py" {
				t.Errorf("link.py -> %q (%v), want pkg/b.py", to, err)
			}
		})
	}
}

// shmDir returns a new directory under /dev/shm, or "" when /dev/shm is
// not usable.
func shmDir(t *testing.T) string {
	d, err := os.MkdirTemp("/dev/shm", "aloft-linktree-")
	if err != nil {
		return ""
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	var tmp, shm syscall.Stat_t
	if syscall.Stat(t.TempDir(), &tmp) != nil || syscall.Stat(d, &shm) != nil || tmp.Dev == shm.Dev {
		return ""
	}
	return d
}
