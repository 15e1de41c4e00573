//go:build linux

package process

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aloft-dev/aloft/internal/runtimeapi"
	"github.com/aloft-dev/aloft/internal/sandbox"
)

// TestSetMemoryLimit: raising a running instance's limit lets it use the
// new amount, and lowering it back holds again (the order of the cgroup v1
// writes differs by direction); the CPU weight follows.
func TestSetMemoryLimit(t *testing.T) {
	d := newDriver(t, Options{})
	r := start(t, d, func(s *sandbox.Spec) { s.MemoryMB = 64 }, true)
	if err := r.inst.SetMemoryLimit(1769); err != nil {
		t.Fatal(err)
	}
	if got := r.invoke(t, "alloc:128"); got != "ok: 128" {
		t.Fatalf("alloc 128 MB after raising the limit to 1769 MB: got %q", got)
	}
	g := r.inst.cg
	limit, weight, want := "memory.limit_in_bytes", "cpu.shares", "1024"
	if g.v2 {
		limit, weight, want = "memory.max", "cpu.weight", strconv.Itoa(cpuWeightV2(1024))
	}
	for path, want := range map[string]string{
		filepath.Join(g.memory, limit): strconv.Itoa(1769 << 20),
		filepath.Join(g.cpu, weight):   want,
	} {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.TrimSpace(string(b)); got != want {
			t.Errorf("%s: got %s, want %s", filepath.Base(path), got, want)
		}
	}
	if err := r.inst.SetMemoryLimit(256); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go r.api.Invoke(ctx, &runtimeapi.Invocation{RequestID: "oom", Payload: []byte("alloc:512"), Deadline: time.Now().Add(time.Minute)})
	select {
	case <-r.inst.Done():
	case <-time.After(60 * time.Second):
		t.Fatal("instance did not die allocating 512 MB after its limit went down to 256 MB")
	}
	if st := r.inst.ExitStatus(); !st.OutOfMemory {
		t.Errorf("exit: got %+v, want OutOfMemory", st)
	}
}
