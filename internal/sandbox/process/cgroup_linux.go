//go:build linux

package process

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/aloft-dev/aloft/internal/sandbox"
)

// cgroups manages the driver's cgroups, on v1 (one hierarchy per controller)
// or v2 (one unified hierarchy). The driver's parent cgroup sits below the
// cgroup of the current process in each hierarchy, so the limits the host put
// on Aloft still apply to its instances.
type cgroups struct {
	v2   bool
	base string // v2: the current process's cgroup directory
	// parent directory per controller; on v2 all are the same directory.
	memory, pids, cpu, cpuacct string
}

// v1Controllers are the v1 hierarchies an instance joins.
var v1Controllers = []string{"memory", "pids", "cpu", "cpuacct"}

// cgroupMount is one cgroup or cgroup2 mount from /proc/self/mountinfo.
type cgroupMount struct {
	root, point string
	v2          bool
	controllers []string // v1 only
}

// detectCgroups finds the hierarchies and the current process's cgroup in
// each, and returns the directories below which the driver may create its
// own cgroup named name. v2 is used when the unified hierarchy has the
// memory, pids and cpu controllers; otherwise v1 when those are mounted.
func detectCgroups(name string) (*cgroups, error) {
	mounts, err := readCgroupMounts()
	if err != nil {
		return nil, err
	}
	own, err := readOwnCgroups()
	if err != nil {
		return nil, err
	}
	// dir is the directory of the current cgroup in mount m, for the v1
	// controller ctrl ("" for v2).
	dir := func(m cgroupMount, ctrl string) (string, bool) {
		for key, p := range own {
			if (ctrl == "" && key == "") || (ctrl != "" && slices.Contains(strings.Split(key, ","), ctrl)) {
				return filepath.Join(m.point, strings.TrimPrefix(p, m.root)), true
			}
		}
		return "", false
	}
	var v2Problem string
	for _, m := range mounts {
		if !m.v2 {
			continue
		}
		d, ok := dir(m, "")
		if !ok {
			continue
		}
		avail, err := os.ReadFile(filepath.Join(d, "cgroup.controllers"))
		if err != nil {
			continue
		}
		have := strings.Fields(string(avail))
		var missing []string
		for _, c := range []string{"memory", "pids", "cpu"} {
			if !slices.Contains(have, c) {
				missing = append(missing, c)
			}
		}
		if len(missing) == 0 {
			p := filepath.Join(d, name)
			return &cgroups{v2: true, base: d, memory: p, pids: p, cpu: p, cpuacct: p}, nil
		}
		v2Problem = fmt.Sprintf("cgroup v2 at %s lacks controllers %s", m.point, strings.Join(missing, ", "))
	}
	cg := &cgroups{}
	dst := map[string]*string{"memory": &cg.memory, "pids": &cg.pids, "cpu": &cg.cpu, "cpuacct": &cg.cpuacct}
	for _, m := range mounts {
		if m.v2 {
			continue
		}
		for _, c := range m.controllers {
			if p, ok := dst[c]; ok && *p == "" {
				if d, ok := dir(m, c); ok {
					*p = filepath.Join(d, name)
				}
			}
		}
	}
	var missing []string
	for _, c := range v1Controllers {
		if *dst[c] == "" {
			missing = append(missing, c)
		}
	}
	if len(missing) > 0 {
		msg := "no cgroup v1 hierarchy for " + strings.Join(missing, ", ")
		if v2Problem != "" {
			msg = v2Problem + "; " + msg
		}
		return nil, errors.New(msg)
	}
	return cg, nil
}

func readCgroupMounts() ([]cgroupMount, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("cannot read mounts: %w", err)
	}
	defer f.Close()
	var out []cgroupMount
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// id parent maj:min root point opts [optional…] - fstype source superopts
		fields := strings.Fields(sc.Text())
		sep := slices.Index(fields, "-")
		if sep < 0 || sep+3 >= len(fields)+1 || len(fields) < sep+3 {
			continue
		}
		fstype := fields[sep+1]
		switch fstype {
		case "cgroup2":
			out = append(out, cgroupMount{root: fields[3], point: fields[4], v2: true})
		case "cgroup":
			var ctrls []string
			if sep+3 < len(fields) {
				for _, o := range strings.Split(fields[sep+3], ",") {
					switch {
					case o == "rw" || o == "ro" || strings.Contains(o, "="):
					default:
						ctrls = append(ctrls, o)
					}
				}
			}
			out = append(out, cgroupMount{root: fields[3], point: fields[4], controllers: ctrls})
		}
	}
	return out, sc.Err()
}

// readOwnCgroups maps the controller list of each hierarchy ("" for v2) to
// the current process's cgroup path in it.
func readOwnCgroups() (map[string]string, error) {
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return nil, fmt.Errorf("cannot read own cgroup: %w", err)
	}
	out := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) == 3 {
			out[parts[1]] = parts[2]
		}
	}
	return out, nil
}

// dirs returns the distinct parent directories.
func (c *cgroups) dirs() []string { return distinct(c.memory, c.pids, c.cpu, c.cpuacct) }

// distinct returns dirs without repeats (on v2 the controllers share one
// directory), in order.
func distinct(dirs ...string) []string {
	var out []string
	for _, d := range dirs {
		if !slices.Contains(out, d) {
			out = append(out, d)
		}
	}
	return out
}

// parentLimits bound all of a driver's instances together.
type parentLimits struct {
	pids  int // processes and threads; also set on the parent shared by all drivers
	memMB int // 0: none
}

// setup creates the driver's parent cgroups (on v2 enabling the
// controllers for the children on the way down) and sets their limits.
func (c *cgroups) setup(lim parentLimits) error {
	if err := c.makeParents(); err != nil {
		return err
	}
	pids := strconv.Itoa(lim.pids)
	// The level above is shared by the drivers of every node on this host:
	// together they stay within the bound too.
	files := [][2]string{{filepath.Join(filepath.Dir(c.pids), "pids.max"), pids}, {filepath.Join(c.pids, "pids.max"), pids}}
	if lim.memMB > 0 {
		mem := strconv.FormatInt(int64(lim.memMB)<<20, 10)
		if c.v2 {
			files = append(files, [2]string{filepath.Join(c.memory, "memory.max"), mem})
		} else {
			// memsw first: it may never be below the memory limit, and a
			// previous run may have left a lower one.
			files = append(files, [2]string{filepath.Join(c.memory, "memory.memsw.limit_in_bytes"), "-1"},
				[2]string{filepath.Join(c.memory, "memory.limit_in_bytes"), mem},
				[2]string{filepath.Join(c.memory, "memory.memsw.limit_in_bytes"), mem})
		}
	}
	if err := writeLimits(files); err != nil {
		return fmt.Errorf("cannot limit the instances' parent cgroup: %w", err)
	}
	return nil
}

// makeParents creates the driver's parent cgroups; on v2 it enables the
// controllers for the children on the way down.
func (c *cgroups) makeParents() error {
	for _, d := range c.dirs() {
		// Retried: another driver's teardown may remove the shared parent
		// between the two mkdirs.
		var err error
		for try := 0; try < 3; try++ {
			if err = os.MkdirAll(d, 0o755); err == nil {
				break
			}
		}
		if err != nil {
			return fmt.Errorf("cannot create cgroup %s: %w", d, err)
		}
	}
	if !c.v2 {
		return nil
	}
	// Enable memory, pids and cpu from the current cgroup down to the
	// driver's parent. Fails with EBUSY when the current (non-root) cgroup
	// has processes in it: the host must then give Aloft a delegated subtree.
	rel, err := filepath.Rel(c.base, c.memory)
	if err != nil {
		return err
	}
	d := c.base
	for _, part := range append([]string{""}, strings.Split(rel, "/")...) {
		d = filepath.Join(d, part) // down to the instances' parent itself
		if err := writeFile(filepath.Join(d, "cgroup.subtree_control"), "+memory +pids +cpu"); err != nil {
			return fmt.Errorf("cannot enable cgroup controllers (run Aloft in a delegated cgroup): %w", err)
		}
	}
	return nil
}

// teardown removes the driver's parent cgroups (after cleanup).
func (c *cgroups) teardown() {
	for _, d := range c.dirs() {
		_ = syscall.Rmdir(d)
		_ = syscall.Rmdir(filepath.Dir(d)) // fails while another driver uses it
	}
}

// cleanup kills and removes every instance cgroup below the driver's
// parent: leftovers of a previous run that crashed.
func (c *cgroups) cleanup() error {
	var errs []error
	seen := map[string]bool{}
	for _, d := range c.dirs() {
		entries, err := os.ReadDir(d)
		if err != nil {
			if !os.IsNotExist(err) {
				errs = append(errs, err)
			}
			continue
		}
		for _, e := range entries {
			if e.IsDir() && !seen[e.Name()] {
				seen[e.Name()] = true
				if err := c.instance(e.Name()).destroy(); err != nil {
					errs = append(errs, err)
				}
			}
		}
	}
	return errors.Join(errs...)
}

// instanceCgroup is one instance's cgroup (one directory per v1 hierarchy).
type instanceCgroup struct {
	v2                             bool
	memory, pids, cpu, cpuacct     string
	lastPeak, lastCPU, lastOOMKill int64

	// Kept open by stats until closeStats (destroy).
	peakFile, cpuFile *sandbox.StatFile
	closed            bool
}

func (c *cgroups) instance(id string) *instanceCgroup {
	return &instanceCgroup{
		v2:      c.v2,
		memory:  filepath.Join(c.memory, id),
		pids:    filepath.Join(c.pids, id),
		cpu:     filepath.Join(c.cpu, id),
		cpuacct: filepath.Join(c.cpuacct, id),
	}
}

func (g *instanceCgroup) dirs() []string { return distinct(g.memory, g.pids, g.cpu, g.cpuacct) }

// create makes the instance's cgroup with its limits: memory (swap off),
// pids, and a CPU weight proportional to memory.
func (c *cgroups) create(id string, memMB, pidsMax int) (*instanceCgroup, error) {
	g := c.instance(id)
	for _, d := range g.dirs() {
		if err := os.Mkdir(d, 0o755); err != nil {
			g.destroy()
			return nil, fmt.Errorf("cannot create cgroup: %w", err)
		}
	}
	mem := strconv.FormatInt(int64(memMB)<<20, 10)
	shares := cpuShares(memMB)
	var files [][2]string
	if g.v2 {
		files = [][2]string{
			{filepath.Join(g.memory, "memory.max"), mem},
			{filepath.Join(g.memory, "memory.swap.max"), "0"},
			{filepath.Join(g.memory, "memory.oom.group"), "1"},
			{filepath.Join(g.pids, "pids.max"), strconv.Itoa(pidsMax)},
			{filepath.Join(g.cpu, "cpu.weight"), strconv.Itoa(cpuWeightV2(shares))},
		}
	} else {
		files = [][2]string{
			{filepath.Join(g.memory, "memory.limit_in_bytes"), mem},
			{filepath.Join(g.memory, "memory.memsw.limit_in_bytes"), mem},
			{filepath.Join(g.pids, "pids.max"), strconv.Itoa(pidsMax)},
			{filepath.Join(g.cpu, "cpu.shares"), strconv.Itoa(shares)},
		}
	}
	for _, f := range files {
		err := writeFile(f[0], f[1])
		if err != nil && os.IsNotExist(err) && strings.Contains(f[0], "swap") {
			continue // no swap accounting: the kernel has no swap to use anyway
		}
		if err != nil {
			g.destroy()
			return nil, fmt.Errorf("cannot set cgroup limit: %w", err)
		}
	}
	return g, nil
}

// resize changes the memory limit and the CPU weight that follows from it.
// On v1 the memory+swap limit may never be below the memory limit, so the
// order of the two writes depends on the direction.
func (g *instanceCgroup) resize(memMB int) error {
	mem := strconv.FormatInt(int64(memMB)<<20, 10)
	shares := cpuShares(memMB)
	var files [][2]string
	if g.v2 {
		files = [][2]string{
			{filepath.Join(g.memory, "memory.max"), mem},
			{filepath.Join(g.cpu, "cpu.weight"), strconv.Itoa(cpuWeightV2(shares))},
		}
	} else {
		limit := filepath.Join(g.memory, "memory.limit_in_bytes")
		memsw := filepath.Join(g.memory, "memory.memsw.limit_in_bytes")
		cur, err := readInt(limit)
		if err != nil {
			return fmt.Errorf("cannot read memory limit: %w", err)
		}
		if int64(memMB)<<20 >= cur {
			files = [][2]string{{memsw, mem}, {limit, mem}}
		} else {
			files = [][2]string{{limit, mem}, {memsw, mem}}
		}
		files = append(files, [2]string{filepath.Join(g.cpu, "cpu.shares"), strconv.Itoa(shares)})
	}
	if err := writeLimits(files); err != nil {
		return fmt.Errorf("cannot set cgroup limit: %w", err)
	}
	return nil
}

// writeLimits writes each {file, value} in order, skipping the memsw files
// of a kernel without swap accounting.
func writeLimits(files [][2]string) error {
	for _, f := range files {
		err := writeFile(f[0], f[1])
		if err != nil && os.IsNotExist(err) && strings.Contains(f[0], "memsw") {
			continue
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// resetStats zeroes the peak memory and CPU time counters where the
// kernel allows it (v1), so that a pooled init's own start-up is not billed
// to the function it becomes. Best effort: v2 has no such reset.
func (g *instanceCgroup) resetStats() {
	if g.v2 {
		return
	}
	_ = writeFile(filepath.Join(g.memory, "memory.max_usage_in_bytes"), "0")
	_ = writeFile(filepath.Join(g.cpuacct, "cpuacct.usage"), "0")
}

// attach moves pid into the instance's cgroup in every hierarchy (v1; on v2
// the process is cloned straight into it).
func (g *instanceCgroup) attach(pid int) error {
	// Concurrent writes share the RCU grace period each cgroup migration
	// waits for, which makes four hierarchies cost about as much as one.
	dirs := g.dirs()
	errs := make([]error, len(dirs))
	var wg sync.WaitGroup
	for n, d := range dirs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := writeFile(filepath.Join(d, "cgroup.procs"), strconv.Itoa(pid)); err != nil {
				errs[n] = fmt.Errorf("cannot join cgroup: %w", err)
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// openDir opens the v2 cgroup directory for clone3(CLONE_INTO_CGROUP).
func (g *instanceCgroup) openDir() (*os.File, error) {
	return os.OpenFile(g.memory, os.O_RDONLY|syscall.O_DIRECTORY, 0)
}

// oomKills is how many processes the kernel killed for exceeding the limit.
func (g *instanceCgroup) oomKills() int64 {
	file := "memory.oom_control"
	if g.v2 {
		file = "memory.events"
	}
	if v, ok := readKey(filepath.Join(g.memory, file), "oom_kill"); ok {
		g.lastOOMKill = v
	}
	return g.lastOOMKill
}

// stats returns the peak memory and the CPU time so far (the last values
// read once the cgroup is gone). It keeps the two files open: it runs after
// every invocation.
func (g *instanceCgroup) stats() (peak int64, cpu time.Duration) {
	if g.peakFile == nil && !g.closed {
		peakPath, cpuPath := filepath.Join(g.memory, "memory.max_usage_in_bytes"), filepath.Join(g.cpuacct, "cpuacct.usage")
		if g.v2 {
			peakPath, cpuPath = filepath.Join(g.memory, "memory.peak"), filepath.Join(g.cpuacct, "cpu.stat")
		}
		var err error
		if g.peakFile, err = sandbox.OpenStatFile(peakPath); err != nil {
			return g.lastPeak, time.Duration(g.lastCPU)
		}
		if g.cpuFile, err = sandbox.OpenStatFile(cpuPath); err != nil {
			g.peakFile.Close()
			g.peakFile = nil
			return g.lastPeak, time.Duration(g.lastCPU)
		}
	}
	if g.peakFile == nil {
		return g.lastPeak, time.Duration(g.lastCPU)
	}
	var buf [512]byte
	if b, err := g.peakFile.Read(buf[:]); err == nil {
		if v, err := strconv.ParseInt(string(bytes.TrimSpace(b)), 10, 64); err == nil {
			g.lastPeak = v
		}
	}
	if b, err := g.cpuFile.Read(buf[:]); err == nil {
		if g.v2 {
			if v, ok := keyValue(b, "usage_usec"); ok {
				g.lastCPU = v * 1000
			}
		} else if v, err := strconv.ParseInt(string(bytes.TrimSpace(b)), 10, 64); err == nil {
			g.lastCPU = v
		}
	}
	return g.lastPeak, time.Duration(g.lastCPU)
}

// closeStats closes the files stats keeps open; stats then returns the
// last values it read.
func (g *instanceCgroup) closeStats() {
	g.closed = true
	if g.peakFile != nil {
		g.peakFile.Close()
		g.cpuFile.Close()
		g.peakFile, g.cpuFile = nil, nil
	}
}

// destroy kills every process in the cgroup and removes it. Instances are
// pid-namespace inits, so killing them takes their whole namespace along.
func (g *instanceCgroup) destroy() error {
	g.closeStats()
	if g.v2 {
		_ = writeFile(filepath.Join(g.memory, "cgroup.kill"), "1")
	}
	deadline := time.Now().Add(5 * time.Second)
	for _, d := range g.dirs() {
		for {
			pids, err := readPids(filepath.Join(d, "cgroup.procs"))
			if err != nil && os.IsNotExist(err) {
				break
			}
			for _, p := range pids {
				_ = syscall.Kill(p, syscall.SIGKILL)
			}
			err = syscall.Rmdir(d)
			if err == nil || errors.Is(err, syscall.ENOENT) {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("cannot remove cgroup %s: %w", d, err)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	return nil
}

func writeFile(path, value string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		return err
	}
	_, err = f.WriteString(value)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

func readInt(path string) (int64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
}

// readKey reads "key value" from a flat-keyed cgroup file.
func readKey(path, key string) (int64, bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, false
	}
	return keyValue(b, key)
}

// keyValue finds "key value" in the text of a flat-keyed cgroup file.
func keyValue(b []byte, key string) (int64, bool) {
	for len(b) > 0 {
		var line []byte
		line, b, _ = bytes.Cut(b, []byte("\n"))
		f := bytes.Fields(line)
		if len(f) == 2 && string(f[0]) == key {
			v, err := strconv.ParseInt(string(f[1]), 10, 64)
			return v, err == nil
		}
	}
	return 0, false
}

func readPids(path string) ([]int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out []int
	for _, f := range strings.Fields(string(b)) {
		if p, err := strconv.Atoi(f); err == nil {
			out = append(out, p)
		}
	}
	return out, nil
}
