package worker

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/aloft-dev/aloft/internal/model"
	"github.com/aloft-dev/aloft/internal/sandbox/plain"
	"github.com/aloft-dev/aloft/internal/scheduler"
	"github.com/aloft-dev/aloft/runtimes"
)

// windowsPolicy is a keep-alive policy with fixed windows, to drive the
// worker's reaper and pre-warming through the scheduler.KeepAlivePolicy
// seam; the real policies are tested in internal/scheduler and internal/sim.
type windowsPolicy struct{ w scheduler.Windows }

func (windowsPolicy) Name() string                                             { return "windows" }
func (p windowsPolicy) Decide(*scheduler.IdleHistogram, int) scheduler.Windows { return p.w }

// TestKeepAliveWindows: with windows that say "unload right after the
// invocation, load again after 300 ms, keep 500 ms", the worker stops the
// instance at once, pre-warms one at about 300 ms (an instance the next
// invocation finds warm), and unloads that one when its window closes.
func TestKeepAliveWindows(t *testing.T) {
	rtDir, err := runtimes.Extract(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := runtimes.Interpreter(model.RuntimePython); err != nil {
		t.Skip(err)
	}
	code := t.TempDir()
	for name, body := range map[string]string{"app.py": pyEcho, "data.txt": "code"} {
		if err := os.WriteFile(filepath.Join(code, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	sink := &usageSink{}
	w := &Worker{Driver: &plain.Driver{}, Code: dirCode(code), Sink: sink, RuntimeDir: rtDir,
		PoolSize: -1, KeepAlive: 40 * time.Millisecond, // a reaper pass every 10 ms
		KeepAlivePolicy: windowsPolicy{scheduler.Windows{PrewarmAfter: 300 * time.Millisecond, KeepAlive: 500 * time.Millisecond}}}
	w.Start()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitLong)
		defer cancel()
		w.Close(ctx)
	})
	fn := pyFunction("prewarmed", 128)
	count := func() int { c := w.Instances(fn.Name); return c.Warm + c.Busy }
	waitFor := func(what string, within time.Duration, ok func() bool) time.Duration {
		t.Helper()
		start := time.Now()
		for !ok() {
			if time.Since(start) > within {
				t.Fatalf("%s: not after %v (instances %+v)", what, within, w.Instances(fn.Name))
			}
			time.Sleep(5 * time.Millisecond)
		}
		return time.Since(start)
	}

	resp, _ := invoke(t, w, fn)
	if !resp.Usage.Cold {
		t.Fatal("the first invocation was not a cold start")
	}
	ended := time.Now()
	waitFor("unloaded right after the invocation", 200*time.Millisecond, func() bool { return count() == 0 })
	waitFor("pre-warmed", 2*time.Second, func() bool { return w.Instances(fn.Name).Warm == 1 })
	if d := time.Since(ended); d < 250*time.Millisecond {
		t.Errorf("pre-warmed %v after the invocation, want about 300 ms", d)
	}
	resp, _ = invoke(t, w, fn)
	if resp.Usage.Cold {
		t.Error("the invocation after the pre-warm was a cold start, want warm")
	}
	// The instance that served it is unloaded at once again; the next
	// pre-warm comes, and goes when its keep-alive window closes.
	waitFor("unloaded after the second invocation", 200*time.Millisecond, func() bool { return count() == 0 })
	waitFor("pre-warmed again", 2*time.Second, func() bool { return count() == 1 })
	if d := waitFor("pre-warm unloaded at the end of its window", 2*time.Second, func() bool { return count() == 0 }); d < 300*time.Millisecond {
		t.Errorf("the pre-warmed instance went after %v, want it kept for its 500 ms window", d)
	}
}
