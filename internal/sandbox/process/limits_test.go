//go:build linux

package process

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aloft-dev/aloft/internal/runtimeapi"
	"github.com/aloft-dev/aloft/internal/sandbox"
)

// TestParentCgroupBounds: all instances together stay within the driver's
// pid total, well below what their per-instance limits add up to, so a few
// instances cannot use up the host's pid space; the host still forks while
// they are at the bound. The parent's memory is bounded by the node's budget.
func TestParentCgroupBounds(t *testing.T) {
	const pidsMax, pidsTotal = 1000, 200
	d := newDriver(t, Options{
		PidsMax:        pidsMax,
		PidsTotal:      pidsTotal,
		MemoryBudgetMB: 256,
		Prewarm:        -1,
		// Own parent: the shared one is bounded by each driver, and this
		// bound would starve the other tests' instances on this host.
		CgroupName: fmt.Sprintf("aloft-test-%d", os.Getpid()),
	})
	shared := filepath.Dir(d.cg.pids)
	for _, dir := range []string{shared, d.cg.pids} {
		if got := readTrimmed(t, filepath.Join(dir, "pids.max")); got != strconv.Itoa(pidsTotal) {
			t.Errorf("%s/pids.max: got %s, want %d", dir, got, pidsTotal)
		}
	}
	memFile := "memory.limit_in_bytes"
	if d.cg.v2 {
		memFile = "memory.max"
	}
	if got, want := readTrimmed(t, filepath.Join(d.cg.memory, memFile)), strconv.Itoa((256+poolHeadroomMB(-1))<<20); got != want {
		t.Errorf("parent %s: got %s, want %s", memFile, got, want)
	}

	a := start(t, d, nil, true)
	b := start(t, d, func(s *sandbox.Spec) { s.MemoryMB = 512 }, true)
	if got := a.invoke(t, "spawn:10"); got != "ok: 10" {
		t.Fatalf("spawn in the first instance: got %q", got)
	}
	// Each hostile child is a Go process of several threads, so the bomb
	// ends far below its own instance's limit of 1000.
	got := b.invoke(t, "forkbomb")
	if !strings.Contains(got, "resource temporarily unavailable") {
		t.Fatalf("forkbomb: got %q, want EAGAIN", got)
	}
	var n int
	fmt.Sscanf(got, "err: after %d children", &n)
	t.Logf("forkbomb: %s", got)
	if n == 0 || n >= pidsTotal {
		t.Errorf("forkbomb started %d children, more than the total of %d pids", n, pidsTotal)
	}
	// Lambda's 1024 descriptors per process, whatever the node's limit.
	if got := a.invoke(t, "open-files"); !strings.HasSuffix(got, "too many open files") {
		t.Errorf("open files: got %q, want EMFILE", got)
	} else if n, _ := strconv.Atoi(strings.Split(got, ":")[0]); n > maxOpenFiles {
		t.Errorf("open files: %d opened, want at most %d", n, maxOpenFiles)
	}
	if err := exec.Command("/bin/true").Run(); err != nil {
		t.Errorf("host fork while the instances are at their bound: %v", err)
	}
	if got := a.invoke(t, "echo:a"); got != "ok: a" {
		t.Errorf("first instance after the bomb: got %q", got)
	}

	// 400 MB fit the instance's own 512 MB but not the parent's bound.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go b.api.Invoke(ctx, &runtimeapi.Invocation{RequestID: "big", Payload: []byte("alloc:400"), Deadline: time.Now().Add(time.Minute)})
	select {
	case <-b.inst.Done():
	case <-time.After(60 * time.Second):
		t.Fatal("instance allocating 400 MB outlived a parent bound of 384 MB")
	}
	if got := a.invoke(t, "echo:a"); got != "ok: a" {
		t.Errorf("first instance after the other's OOM: got %q", got)
	}
}

func readTrimmed(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// TestFileMaxRaised: after New the host's file table holds what its memory
// can, so memory limits bound instances' open files before the table does.
func TestFileMaxRaised(t *testing.T) {
	newDriver(t, Options{Prewarm: -1})
	n, err := readInt("/proc/sys/fs/file-max")
	if err != nil {
		t.Fatal(err)
	}
	if want := int64(memTotalMB()) * filesPerMB; n < want {
		t.Errorf("fs.file-max: got %d, want at least %d", n, want)
	}
}
