// Package uids hands out the user ids that function instances run as, one
// per instance, so that what the kernel keeps per user (keyrings, inotify
// and message-queue budgets, pipe buffers, RLIMIT_NPROC, signal
// permissions) is never shared between tenants, nor with host accounts.
//
// The ids come from a reserved range that no distribution allocates (above
// systemd's container ranges, which end at 0x6FFFFFFF, and below its
// 0x7FFE0000 mount range). The range is cut into blocks; each Allocator
// holds one block for its lifetime, claimed with an exclusive lock on a
// file in LockDir, so drivers of several nodes or tests on one host never
// hand out the same id. Blocks that overlap an account or a subordinate
// range the host lists (/etc/passwd, /etc/group, /etc/subuid, /etc/subgid)
// are skipped. Within its block an Allocator goes round, so a released id
// is handed out again as late as possible.
//
// The group id of an instance equals its user id.
package uids

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// The reserved range: Blocks blocks of BlockSize ids from First.
const (
	First     = 0x77400000
	BlockSize = 4096
	Blocks    = 256
)

// LockDir holds the block lock files (a variable for tests).
var LockDir = "/run/aloft/uids"

// ErrExhausted is returned by Get when every id of the block is in use.
var ErrExhausted = errors.New("every user id of the block is in use")

// Allocator hands out the ids of one claimed block. Create it with Claim.
type Allocator struct {
	lock  *os.File // the block's lock file, locked while the Allocator lives
	first int

	mu   sync.Mutex
	next int // offset of the next candidate
	used map[int]bool
}

// Claim locks the first free block of the range that no host account
// overlaps and returns its Allocator.
func Claim() (*Allocator, error) {
	if err := os.MkdirAll(LockDir, 0o755); err != nil {
		return nil, fmt.Errorf("cannot claim user ids: %w", err)
	}
	taken, err := hostIDs()
	if err != nil {
		return nil, fmt.Errorf("cannot claim user ids: %w", err)
	}
	for b := range Blocks {
		first := First + b*BlockSize
		if taken.overlaps(first, first+BlockSize) {
			continue
		}
		f, err := os.OpenFile(filepath.Join(LockDir, "block-"+strconv.Itoa(b)), os.O_RDWR|os.O_CREATE, 0o644)
		if err != nil {
			return nil, fmt.Errorf("cannot claim user ids: %w", err)
		}
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
			f.Close()
			if errors.Is(err, syscall.EWOULDBLOCK) {
				continue // another driver's
			}
			return nil, fmt.Errorf("cannot claim user ids: %w", err)
		}
		return &Allocator{lock: f, first: first, used: map[int]bool{}}, nil
	}
	return nil, fmt.Errorf("cannot claim user ids: all %d blocks from %d are in use", Blocks, First)
}

// Get returns an id no instance of this Allocator holds.
func (a *Allocator) Get() (int, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for range BlockSize {
		off := a.next
		a.next = (a.next + 1) % BlockSize
		if !a.used[off] {
			a.used[off] = true
			return a.first + off, nil
		}
	}
	return 0, ErrExhausted
}

// Put gives id back, once nothing runs as it any more.
func (a *Allocator) Put(id int) {
	a.mu.Lock()
	delete(a.used, id-a.first)
	a.mu.Unlock()
}

// Contains reports whether id belongs to this Allocator's block.
func (a *Allocator) Contains(id int) bool { return id >= a.first && id < a.first+BlockSize }

// Close releases the block.
func (a *Allocator) Close() error { return a.lock.Close() }

// ranges are half-open [from, to) id ranges.
type ranges [][2]int

func (r ranges) overlaps(from, to int) bool {
	for _, x := range r {
		if x[0] < to && from < x[1] {
			return true
		}
	}
	return false
}

// accountFile is a host file that names ids: fields holds the indexes of
// its ":"-separated fields that are ids; with span, the field after each
// is a count of ids from it (subuid, subgid).
type accountFile struct {
	path   string
	fields []int
	span   bool
}

// accountFiles are the files hostIDs reads (a variable for tests).
var accountFiles = []accountFile{
	{"/etc/passwd", []int{2, 3}, false},
	{"/etc/group", []int{2}, false},
	{"/etc/subuid", []int{1}, true},
	{"/etc/subgid", []int{1}, true},
}

// hostIDs lists the ids the host's account files name.
func hostIDs() (ranges, error) {
	var r ranges
	for _, f := range accountFiles {
		file, err := os.Open(f.path)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		sc := bufio.NewScanner(file)
		for sc.Scan() {
			fields := strings.Split(sc.Text(), ":")
			for _, i := range f.fields {
				if i >= len(fields) {
					continue
				}
				id, err := strconv.Atoi(fields[i])
				if err != nil {
					continue
				}
				n := 1
				if f.span && i+1 < len(fields) {
					n, _ = strconv.Atoi(fields[i+1])
				}
				r = append(r, [2]int{id, id + n})
			}
		}
		file.Close()
		if err := sc.Err(); err != nil {
			return nil, fmt.Errorf("%s: %w", f.path, err)
		}
	}
	return r, nil
}
