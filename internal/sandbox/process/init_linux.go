//go:build linux

package process

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// initEnv carries the shim's configuration (JSON) from the driver to the
// re-executed binary. The runtime never sees it: the shim execs the runtime
// with the instance's own environment.
const initEnv = "_ALOFT_SANDBOX_INIT"

// initArg0 is the shim's argv[0], for ps output on the host.
const initArg0 = "aloft-sandbox-init"

// Descriptors the driver passes to the shim.
const (
	fdSync = 3 // read end; EOF means "the Runtime API listens, go on"
	fdErr  = 4 // write end, close-on-exec; a setup error is written here
)

// initConfig is what the shim needs to build the instance.
type initConfig struct {
	Root       string   // empty directory to mount the new root on
	CodeDir    string   // host path, mounted read-only at /var/task
	RuntimeDir string   // host path, mounted read-only at /var/runtime; may be empty
	TmpMB      int      // size of /tmp
	UID, GID   int      // identity of the function
	Args       []string // command line; Args[0] resolved in the new root
	Env        []string // full environment of the runtime
}

// MaybeRunInit turns the process into the sandbox init shim when the
// process driver started it, and never returns then. Otherwise it returns at
// once. Call it first thing in main (and in TestMain of tests that start
// instances), before anything else starts goroutines or opens files.
func MaybeRunInit() {
	cfg := os.Getenv(initEnv)
	if cfg == "" {
		return
	}
	// Every per-thread setting (capability bounding set, no_new_privs,
	// seccomp) is made on this thread, which then execs.
	runtime.LockOSThread()
	err := runInit(cfg)
	// Only reached on failure: report it to the driver, which returns it
	// from Start.
	errPipe := os.NewFile(fdErr, "errpipe")
	fmt.Fprintf(errPipe, "%v", err)
	os.Exit(127)
}

func runInit(raw string) error {
	var cfg initConfig
	if err := json.Unmarshal([]byte(raw), &cfg); err != nil {
		return fmt.Errorf("cannot read sandbox config: %w", err)
	}
	syscall.CloseOnExec(fdErr)
	if err := buildRoot(&cfg); err != nil {
		return err
	}
	// Wait until the driver listens for the Runtime API inside our network
	// namespace and has put us in our cgroup.
	if _, err := io.Copy(io.Discard, os.NewFile(fdSync, "sync")); err != nil {
		return fmt.Errorf("cannot wait for the driver: %w", err)
	}
	syscall.Close(fdSync)
	if err := unix.Sethostname([]byte("localhost")); err != nil {
		return fmt.Errorf("cannot set hostname: %w", err)
	}
	path, err := lookPath(cfg.Args[0], cfg.Env)
	if err != nil {
		return err
	}
	if err := dropPrivileges(cfg.UID, cfg.GID); err != nil {
		return err
	}
	// Changing credentials cleared the parent-death signal; set it again so
	// the instance dies with the node.
	if err := unix.Prctl(unix.PR_SET_PDEATHSIG, uintptr(unix.SIGKILL), 0, 0, 0); err != nil {
		return fmt.Errorf("cannot set parent-death signal: %w", err)
	}
	if err := os.Chdir(TaskRoot); err != nil {
		return fmt.Errorf("cannot enter %s: %w", TaskRoot, err)
	}
	if err := installSeccomp(); err != nil {
		return err
	}
	err = syscall.Exec(path, cfg.Args, cfg.Env)
	return fmt.Errorf("cannot exec %s: %w", path, err)
}

// Host directories the instance sees read-only (when they exist; a symlink
// such as /bin -> usr/bin on merged-/usr systems is recreated as a symlink).
var systemDirs = []string{"/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"}

// Pieces of /etc the runtimes need; passwd and group are written fresh.
var etcFiles = []string{
	"resolv.conf", "hosts", "nsswitch.conf", "host.conf", "gai.conf",
	"ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime", "timezone",
	"ssl", "ca-certificates", "ca-certificates.conf", "pki", "crypto-policies",
	"mime.types", "protocols", "services", "os-release", "alternatives",
	"debian_version", "python3", "python3.11", "python3.12", "python3.13",
}

var devNodes = []string{"null", "zero", "full", "random", "urandom", "tty"}

const (
	roFlags  = unix.MS_RDONLY | unix.MS_NOSUID | unix.MS_NODEV
	bindFlag = unix.MS_BIND
)

// buildRoot makes the instance's filesystem view in a fresh tmpfs and
// pivots into it. Every mount lives in the instance's own mount namespace,
// so all of them disappear with it; nothing is left on the host.
func buildRoot(cfg *initConfig) error {
	r := cfg.Root
	steps := []struct {
		what string
		fn   func() error
	}{
		{"make mounts private", func() error { return unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, "") }},
		{"mount root tmpfs", func() error {
			return unix.Mount("tmpfs", r, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "size=1m,mode=755")
		}},
		{"mount system directories", func() error {
			for _, d := range systemDirs {
				fi, err := os.Lstat(d)
				switch {
				case err != nil:
					continue
				case fi.Mode()&os.ModeSymlink != 0:
					t, err := os.Readlink(d)
					if err != nil {
						return err
					}
					if err := os.Symlink(t, filepath.Join(r, d)); err != nil {
						return err
					}
				case fi.IsDir():
					if err := bindRO(d, filepath.Join(r, d), true); err != nil {
						return err
					}
				}
			}
			return nil
		}},
		{"populate /etc", func() error { return populateEtc(r, cfg.UID, cfg.GID) }},
		{"mount code", func() error { return bindRO(cfg.CodeDir, filepath.Join(r, TaskRoot), true) }},
		{"mount runtime", func() error {
			if cfg.RuntimeDir == "" {
				return nil
			}
			return bindRO(cfg.RuntimeDir, filepath.Join(r, RuntimeRoot), true)
		}},
		{"mount /tmp", func() error {
			return mountAt("tmpfs", filepath.Join(r, "tmp"), "tmpfs", unix.MS_NOSUID|unix.MS_NODEV,
				"size="+strconv.Itoa(cfg.TmpMB)+"m,mode=1777")
		}},
		{"mount /proc", func() error {
			p := filepath.Join(r, "proc")
			if err := mountAt("proc", p, "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
				return err
			}
			// The kernel knobs stay read-only even for a process that would
			// regain privileges.
			for _, sub := range []string{"sys", "sysrq-trigger", "irq", "bus"} {
				s := filepath.Join(p, sub)
				if _, err := os.Lstat(s); err != nil {
					continue
				}
				if err := unix.Mount(s, s, "", bindFlag, ""); err != nil {
					return err
				}
				if err := unix.Mount("", s, "", bindFlag|unix.MS_REMOUNT|roFlags|unix.MS_NOEXEC, ""); err != nil {
					return err
				}
			}
			return nil
		}},
		{"populate /dev", func() error { return populateDev(r) }},
		{"make root read-only", func() error {
			return unix.Mount("", r, "", unix.MS_REMOUNT|roFlags, "")
		}},
		{"pivot root", func() error {
			if err := unix.Chdir(r); err != nil {
				return err
			}
			// pivot_root(".", ".") stacks the old root under the new one;
			// detaching it leaves only the new root.
			if err := unix.PivotRoot(".", "."); err != nil {
				return err
			}
			if err := unix.Unmount(".", unix.MNT_DETACH); err != nil {
				return err
			}
			return unix.Chdir("/")
		}},
	}
	for _, s := range steps {
		if err := s.fn(); err != nil {
			return fmt.Errorf("cannot %s: %w", s.what, err)
		}
	}
	return nil
}

// mountAt creates the directory dst and mounts there.
func mountAt(src, dst, fstype string, flags uintptr, data string) error {
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return err
	}
	return unix.Mount(src, dst, fstype, flags, data)
}

// bindRO bind-mounts src at dst read-only, nosuid, nodev.
func bindRO(src, dst string, dir bool) error {
	if dir {
		if err := os.MkdirAll(dst, 0o755); err != nil {
			return err
		}
	} else {
		f, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY, 0o644)
		if err != nil {
			return err
		}
		f.Close()
	}
	if err := unix.Mount(src, dst, "", bindFlag, ""); err != nil {
		return fmt.Errorf("%s: %w", src, err)
	}
	return unix.Mount("", dst, "", bindFlag|unix.MS_REMOUNT|roFlags, "")
}

func populateEtc(r string, uid, gid int) error {
	etc := filepath.Join(r, "etc")
	if err := os.Mkdir(etc, 0o755); err != nil {
		return err
	}
	for _, name := range etcFiles {
		src := filepath.Join("/etc", name)
		fi, err := os.Stat(src)
		if err != nil {
			continue
		}
		if err := bindRO(src, filepath.Join(etc, name), fi.IsDir()); err != nil {
			return err
		}
	}
	passwd := fmt.Sprintf("root:x:0:0:root:/root:/usr/sbin/nologin\nsbx_user:x:%d:%d:function:/tmp:/usr/sbin/nologin\n", uid, gid)
	group := fmt.Sprintf("root:x:0:\nsbx_user:x:%d:\n", gid)
	if err := os.WriteFile(filepath.Join(etc, "passwd"), []byte(passwd), 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(etc, "group"), []byte(group), 0o644)
}

func populateDev(r string) error {
	dev := filepath.Join(r, "dev")
	if err := mountAt("tmpfs", dev, "tmpfs", unix.MS_NOSUID|unix.MS_NOEXEC, "size=64k,mode=755"); err != nil {
		return err
	}
	for _, n := range devNodes {
		dst := filepath.Join(dev, n)
		f, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY, 0o666)
		if err != nil {
			return err
		}
		f.Close()
		if err := unix.Mount(filepath.Join("/dev", n), dst, "", bindFlag, ""); err != nil {
			return fmt.Errorf("/dev/%s: %w", n, err)
		}
	}
	for name, target := range map[string]string{
		"fd": "/proc/self/fd", "stdin": "/proc/self/fd/0", "stdout": "/proc/self/fd/1", "stderr": "/proc/self/fd/2",
	} {
		if err := os.Symlink(target, filepath.Join(dev, name)); err != nil {
			return err
		}
	}
	return unix.Mount("", dev, "", unix.MS_REMOUNT|unix.MS_NOSUID|unix.MS_NOEXEC|unix.MS_RDONLY, "size=64k,mode=755")
}

// dropPrivileges empties the capability bounding set and switches to
// uid/gid, which clears the permitted, effective and ambient sets.
func dropPrivileges(uid, gid int) error {
	for c := 0; ; c++ {
		err := unix.Prctl(unix.PR_CAPBSET_DROP, uintptr(c), 0, 0, 0)
		if errors.Is(err, unix.EINVAL) {
			break // past the last capability
		}
		if err != nil {
			return fmt.Errorf("cannot drop capability %d: %w", c, err)
		}
	}
	if err := syscall.Setgroups(nil); err != nil {
		return fmt.Errorf("cannot clear groups: %w", err)
	}
	if err := syscall.Setresgid(gid, gid, gid); err != nil {
		return fmt.Errorf("cannot set gid: %w", err)
	}
	if err := syscall.Setresuid(uid, uid, uid); err != nil {
		return fmt.Errorf("cannot set uid: %w", err)
	}
	return nil
}

// lookPath resolves name the way execvp would, with the instance's PATH.
func lookPath(name string, env []string) (string, error) {
	if strings.Contains(name, "/") {
		return name, nil
	}
	path := "/usr/local/bin:/usr/bin:/bin"
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "PATH="); ok {
			path = v
		}
	}
	for _, dir := range filepath.SplitList(path) {
		p := filepath.Join(dir, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("cannot find %q on PATH %s: %w", name, path, exec.ErrNotFound)
}
