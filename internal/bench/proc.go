package bench

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// descendants returns the pids of every process below pid, from /proc.
func descendants(pid int) (map[int]bool, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, fmt.Errorf("cannot list processes: %w", err)
	}
	children := map[int][]int{}
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		f := statFields(p)
		if len(f) < 2 {
			continue // exited meanwhile
		}
		ppid, _ := strconv.Atoi(f[1])
		children[ppid] = append(children[ppid], p)
	}
	out := map[int]bool{}
	queue := []int{pid}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		for _, c := range children[p] {
			if !out[c] {
				out[c] = true
				queue = append(queue, c)
			}
		}
	}
	return out, nil
}

// executables returns the file each of pids runs (absent: gone, or not
// readable).
func executables(pids map[int]bool) map[int]os.FileInfo {
	out := make(map[int]os.FileInfo, len(pids))
	for pid := range pids {
		if fi, err := os.Stat("/proc/" + strconv.Itoa(pid) + "/exe"); err == nil {
			out[pid] = fi
		}
	}
	return out
}

// instancesSince returns the processes of now that became function
// instances since the snapshot ranBefore (executables of the descendants
// then): new processes, and old ones that have since executed another
// program — the isolating driver's pre-forked sandbox inits become
// instances by exec, keeping their pid. Processes running this program are
// the node's helpers (such inits still waiting in their pool), not
// instances.
func instancesSince(ranBefore map[int]os.FileInfo, now map[int]bool) map[int]bool {
	self, _ := os.Stat("/proc/self/exe")
	out := map[int]bool{}
	for pid, fi := range executables(now) {
		if self != nil && os.SameFile(fi, self) {
			continue
		}
		if old, ok := ranBefore[pid]; ok && os.SameFile(old, fi) {
			continue
		}
		out[pid] = true
	}
	return out
}

// procMemory returns a process's resident set size and proportional set
// size (shared pages divided among their users), in bytes.
func procMemory(pid int) (rss, pss int64, err error) {
	dir := "/proc/" + strconv.Itoa(pid)
	rss, err = kbField(dir+"/status", "VmRSS:")
	if err != nil {
		return 0, 0, err
	}
	pss, _ = kbField(dir+"/smaps_rollup", "Pss:") // absent on old kernels
	return rss, pss, nil
}

// kbField reads a "Name:   123 kB" line of a /proc file, in bytes.
func kbField(path, name string) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("cannot parse %s in %s: %w", name, path, err)
			}
			return kb << 10, nil
		}
	}
	return 0, fmt.Errorf("no %s in %s", name, path)
}

// clockTicks is the unit of utime and stime in /proc/PID/stat (USER_HZ,
// 100 on every Linux architecture Go supports).
const clockTicks = 100

// cpuUse is CPU time spent, split between this process (the node and the
// bench's client, or the floor and the client) and its descendants (the
// function instances).
type cpuUse struct {
	self, instances time.Duration
}

// cpuNow reads this process's CPU time and its live descendants'.
func cpuNow() (cpuUse, error) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return cpuUse{}, fmt.Errorf("cannot read CPU time: %w", err)
	}
	u := cpuUse{self: time.Duration(ru.Utime.Nano() + ru.Stime.Nano())}
	pids, err := descendants(os.Getpid())
	if err != nil {
		return cpuUse{}, err
	}
	for pid := range pids {
		// utime and stime are the stat file's fields 14 and 15.
		f := statFields(pid)
		if len(f) < 13 {
			continue // exited meanwhile
		}
		ut, _ := strconv.ParseInt(f[11], 10, 64)
		st, _ := strconv.ParseInt(f[12], 10, 64)
		u.instances += time.Duration(ut+st) * time.Second / clockTicks
	}
	return u, nil
}

func (u cpuUse) sub(v cpuUse) cpuUse {
	return cpuUse{self: u.self - v.self, instances: u.instances - v.instances}
}

// statFields returns the fields of /proc/PID/stat after the command name
// (field 3, the state, first), or nil when the process is gone. The command
// name, in parentheses, may hold spaces, so fields start after its closing
// parenthesis.
func statFields(pid int) []string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return nil
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return nil
	}
	return strings.Fields(string(b[i+1:]))
}
