package bench

import (
	"io"
	"os"
	"os/exec"
	"strconv"
	"testing"
	"time"
)

// TestInstancesSince: of this process's children, the memory figure
// counts the new ones and the one that executed another program since the
// snapshot (as a pre-forked sandbox init does when it becomes an
// instance), not the one unchanged since, nor one running this program (as
// the inits still waiting in their pool do).
func TestInstancesSince(t *testing.T) {
	start := func(cmd *exec.Cmd) *exec.Cmd {
		t.Helper()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		return cmd
	}
	old := start(exec.Command("sleep", "60"))
	execs := exec.Command("sh", "-c", "read x; exec sleep 60")
	stdin, err := execs.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	start(execs)
	shell, err := os.Stat("/proc/" + strconv.Itoa(execs.Process.Pid) + "/exe")
	if err != nil {
		t.Fatal(err)
	}
	before, err := descendants(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	ranBefore := executables(before)

	fresh := start(exec.Command("sleep", "60"))
	helper := exec.Command(os.Args[0], "-test.run=^$")
	helper.Env = append(os.Environ(), "ALOFT_BENCH_TEST_WAIT=1")
	start(helper)
	io.WriteString(stdin, "go\n")
	for deadline := time.Now().Add(10 * time.Second); ; {
		fi, err := os.Stat("/proc/" + strconv.Itoa(execs.Process.Pid) + "/exe")
		if err == nil && !os.SameFile(fi, shell) {
			break // sh has executed sleep
		}
		if time.Now().After(deadline) {
			t.Fatal("the shell did not execute sleep")
		}
		time.Sleep(10 * time.Millisecond)
	}
	now, err := descendants(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	got := instancesSince(ranBefore, now)
	want := map[int]bool{fresh.Process.Pid: true, execs.Process.Pid: true}
	for pid := range want {
		if !got[pid] {
			t.Errorf("pid %d (new, or executed another program) not counted", pid)
		}
	}
	for name, pid := range map[string]int{"unchanged": old.Process.Pid, "running this program": helper.Process.Pid} {
		if got[pid] {
			t.Errorf("the %s process %d was counted", name, pid)
		}
	}
}
