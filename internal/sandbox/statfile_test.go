package sandbox

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"strconv"
	"testing"
)

func TestStatFileRereadsFromStart(t *testing.T) {
	f, err := OpenStatFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 4096)
	for range 3 {
		b, err := f.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.HasPrefix(b, []byte("Name:")) || !bytes.Contains(b, []byte("\nVmRSS:")) {
			t.Fatalf("read %q, want the whole status from its start", b)
		}
	}
	short, err := f.Read(make([]byte, 5))
	if err != nil || string(short) != "Name:" {
		t.Fatalf("short read = %q, %v; want the first 5 bytes", short, err)
	}
}

func TestStatFileClosed(t *testing.T) {
	f, err := OpenStatFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	if _, err := f.Read(make([]byte, 64)); !errors.Is(err, os.ErrClosed) {
		t.Fatalf("read after close: %v, want os.ErrClosed", err)
	}
}

// A kept /proc/PID/status describes that process only: once it is reaped
// the file fails instead of describing whatever reuses the pid.
func TestStatFileStaysWithItsProcess(t *testing.T) {
	cmd := exec.Command("sleep", "10")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	f, err := OpenStatFile("/proc/" + strconv.Itoa(cmd.Process.Pid) + "/status")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 4096)
	if b, err := f.Read(buf); err != nil || !bytes.Contains(b, []byte("sleep")) {
		t.Fatalf("read %q, %v; want the status of sleep", b, err)
	}
	cmd.Process.Kill()
	cmd.Wait()
	if b, err := f.Read(buf); err == nil {
		t.Fatalf("read after the process was reaped = %q, want an error", b)
	}
}

// The figures in docs/performance.md: reading a statistics file by opening
// it each time, against re-reading a kept one.
//
//	go test -run x -bench StatFile ./internal/sandbox
func BenchmarkStatFile(b *testing.B) {
	paths := map[string]string{"status": "/proc/self/status"}
	for _, p := range []string{"/sys/fs/cgroup/memory/memory.max_usage_in_bytes", "/sys/fs/cgroup/memory.peak"} {
		if _, err := os.Stat(p); err == nil {
			paths["cgroup"] = p
			break
		}
	}
	for name, path := range paths {
		b.Run(name+"/open-each-time", func(b *testing.B) {
			for b.Loop() {
				if _, err := os.ReadFile(path); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(name+"/kept", func(b *testing.B) {
			f, err := OpenStatFile(path)
			if err != nil {
				b.Fatal(err)
			}
			defer f.Close()
			buf := make([]byte, 4096)
			for b.Loop() {
				if _, err := f.Read(buf); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
