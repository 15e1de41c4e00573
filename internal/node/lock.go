package node

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// lockFile is the file in the data directory a running node holds an
// exclusive lock on.
const lockFile = "aloft.lock"

// ErrDataDirInUse is returned by Start when another node runs on the same
// data directory: two nodes would write the same JetStream store and
// remove each other's sandbox cgroups.
var ErrDataDirInUse = errors.New("data directory in use")

// lockDataDir takes the data directory's lock, or fails with
// ErrDataDirInUse naming the process holding it. The kernel releases the
// lock when the process ends, however it ends, so a node killed with
// SIGKILL never blocks the next one.
func lockDataDir(dir string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(dir, lockFile), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("cannot lock the data directory: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		holder, _ := os.ReadFile(f.Name())
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			who := "another aloft up"
			if pid := strings.TrimSpace(string(holder)); pid != "" {
				who += " (pid " + pid + ")"
			}
			return nil, fmt.Errorf("%w: %s runs on %s; stop it or use another --data", ErrDataDirInUse, who, dir)
		}
		return nil, fmt.Errorf("cannot lock the data directory: %w", err)
	}
	// The holder's pid, for the message above; the lock is what counts.
	if err := f.Truncate(0); err == nil {
		f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return f, nil
}
