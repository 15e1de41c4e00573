//go:build linux

package process

import (
	"bufio"
	"log/slog"
	"os"
	"strconv"
	"strings"
)

// Host-wide limits the driver keeps its instances below.

// hostPids is the host's pid space: the lower of kernel.pid_max and
// kernel.threads-max (each thread takes a pid too).
func hostPids() int {
	n := 32768 // the kernel's default pid_max
	if v, err := readInt("/proc/sys/kernel/pid_max"); err == nil && v > 0 {
		n = int(v)
	}
	if v, err := readInt("/proc/sys/kernel/threads-max"); err == nil && v > 0 && int(v) < n {
		n = int(v)
	}
	return n
}

// defaultPidsTotal leaves a quarter of the host's pid space to the host.
func defaultPidsTotal() int { return hostPids() * 3 / 4 }

// poolHeadroomMB is the memory the parent cgroup allows beyond the
// instances' budget: pooled inits (a few MB each, not budgeted) and slack.
func poolHeadroomMB(prewarm int) int { return 128 + 16*max(prewarm, 0) }

// filesPerMB is about how many open files a megabyte of memory holds (a
// struct file and its dentry, charged to the instance's memory cgroup).
const filesPerMB = 1536

// raiseFileMax raises fs.file-max, if needed, to what the machine's whole
// memory can hold in open files. Every file an instance opens is charged
// to its memory cgroup, so memory limits then bound open files before the
// host-wide table runs out; with the table smaller than that (about 1.7 GB
// of function memory filled it here), instances could leave the host
// without files.
func raiseFileMax(log *slog.Logger) {
	const path = "/proc/sys/fs/file-max"
	memMB := memTotalMB()
	cur, err := readInt(path)
	if err != nil || memMB == 0 {
		log.Warn("cannot check the host's open-file limit", "err", err)
		return
	}
	need := int64(memMB) * filesPerMB
	if cur >= need {
		return
	}
	if err := writeFile(path, strconv.FormatInt(need, 10)); err != nil {
		log.Warn("instances together may use up the host's open files: cannot raise fs.file-max",
			"file_max", cur, "want", need, "err", err)
		return
	}
	log.Info("raised fs.file-max so that memory limits bound open files first", "from", cur, "to", need)
}

// memTotalMB reads MemTotal from /proc/meminfo (0 if it cannot).
func memTotalMB() int {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "MemTotal:"); ok {
			kb, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(rest), " kB"))
			return kb / 1024
		}
	}
	return 0
}
