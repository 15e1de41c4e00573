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

	"github.com/aloft-dev/aloft/internal/sandbox"
	"golang.org/x/sys/unix"
)

// initEnv carries the driver-wide part of the shim's configuration
// (initBase, JSON) from the driver to the re-executed binary. The runtime
// never sees it: the shim execs the runtime with the instance's own
// environment.
const initEnv = "_ALOFT_SANDBOX_INIT"

// maxOpenFiles is each process's descriptor limit (RLIMIT_NOFILE), Lambda's.
const maxOpenFiles = 1024

// initArg0 is the shim's argv[0], for ps output on the host.
const initArg0 = "aloft-sandbox-init"

// Descriptors the driver passes to the shim.
const (
	// fdSync is the read end of the config pipe: the driver writes the
	// instance's initConfig (JSON) and closes it once the shim is in its
	// cgroup and the Runtime API listens in its network namespace.
	fdSync = 3
	fdErr  = 4 // write end, close-on-exec; a setup error is written here
)

// initBase is what the shim needs before it knows its function: the same
// for every instance of a driver, so a pre-forked (pooled) shim has it.
type initBase struct {
	Root string // empty directory to mount the new root on
}

// initConfig is the function-specific rest, read from fdSync.
type initConfig struct {
	CodeDir    string   // host path, mounted read-only at /var/task
	RuntimeDir string   // host path, mounted read-only at /var/runtime; may be empty
	TmpMB      int      // size of /tmp
	Args       []string // command line; Args[0] resolved in the new root
	Env        []string // full environment of the runtime
	UID, GID   int      // identity of the instance
}

// MaybeRunInit turns the process into the sandbox init shim when the
// process driver started it, and never returns then. Otherwise it returns at
// once. Call it first thing in main (and in TestMain of tests that start
// instances), before anything else starts goroutines or opens files.
func MaybeRunInit() {
	base := os.Getenv(initEnv)
	if base == "" {
		return
	}
	// Every per-thread setting (capability bounding set, no_new_privs,
	// seccomp) is made on this thread, which then execs.
	runtime.LockOSThread()
	err := runInit(base)
	// Only reached on failure: report it to the driver, which returns it
	// from Start (or logs it, for a pooled shim).
	errPipe := os.NewFile(fdErr, "errpipe")
	fmt.Fprintf(errPipe, "%v", err)
	os.Exit(127)
}

// runInit builds everything that does not depend on the function (the
// root with system directories, /etc, /proc, /dev), then waits for the
// function's configuration on fdSync — a pooled shim waits there until an
// instance is started — and finishes: code, runtime and /tmp mounts, pivot,
// privileges, seccomp, exec.
func runInit(raw string) error {
	var base initBase
	if err := json.Unmarshal([]byte(raw), &base); err != nil {
		return fmt.Errorf("cannot read sandbox config: %w", err)
	}
	syscall.CloseOnExec(fdErr)
	if err := buildBase(&base); err != nil {
		return err
	}
	if err := unix.Sethostname([]byte("localhost")); err != nil {
		return fmt.Errorf("cannot set hostname: %w", err)
	}
	// Bounding set and seccomp program now, so that a pooled shim has less
	// to do once its function is known. Mounting needs only the effective
	// capabilities, which the bounding set does not touch.
	if err := dropBoundingSet(); err != nil {
		return err
	}
	filter, err := assembleSeccomp()
	if err != nil {
		return err
	}
	b, err := io.ReadAll(os.NewFile(fdSync, "sync"))
	if err != nil {
		return fmt.Errorf("cannot wait for the driver: %w", err)
	}
	syscall.Close(fdSync)
	if len(b) == 0 {
		return errors.New("driver sent no config")
	}
	var cfg initConfig
	if err := json.Unmarshal(b, &cfg); err != nil {
		return fmt.Errorf("cannot read sandbox config: %w", err)
	}
	if len(cfg.Args) == 0 {
		return errors.New("no command")
	}
	if cfg.UID <= 0 || cfg.GID <= 0 {
		return fmt.Errorf("refusing to run a function as uid %d, gid %d", cfg.UID, cfg.GID)
	}
	if err := buildTask(base.Root, &cfg); err != nil {
		return err
	}
	path, err := lookPath(cfg.Args[0], cfg.Env)
	if err != nil {
		return err
	}
	// Lambda's descriptor limit; the node's own may be far higher.
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &syscall.Rlimit{Cur: maxOpenFiles, Max: maxOpenFiles}); err != nil {
		return fmt.Errorf("cannot limit open files: %w", err)
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
	// Only stdin, stdout and stderr go on to the runtime: whatever else
	// the node had open (inherited from its own parent, say) stays here.
	if err := sandbox.MarkInheritedCloseOnExec(); err != nil {
		return fmt.Errorf("cannot close inherited descriptors: %w", err)
	}
	if err := installSeccomp(filter); err != nil {
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

type step struct {
	what string
	fn   func() error
}

func runSteps(steps []step) error {
	for _, s := range steps {
		if err := s.fn(); err != nil {
			return fmt.Errorf("cannot %s: %w", s.what, err)
		}
	}
	return nil
}

// buildBase makes the function-independent part of the instance's
// filesystem view in a fresh tmpfs at base.Root: system directories, /etc,
// /proc and /dev. Every mount lives in the instance's own mount namespace,
// so all of them disappear with it; nothing is left on the host.
func buildBase(base *initBase) error {
	r := base.Root
	return runSteps([]step{
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
		{"populate /etc", func() error { return populateEtc(r) }},
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
	})
}

// buildTask adds the function's mounts to the root buildBase made (code at
// /var/task, runtime at /var/runtime, /tmp of its size), makes the root
// read-only and pivots into it.
func buildTask(r string, cfg *initConfig) error {
	return runSteps([]step{
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
		{"write /etc/passwd", func() error { return writeAccounts(r, cfg.UID, cfg.GID) }},
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
	})
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

func populateEtc(r string) error {
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
	return nil
}

// writeAccounts writes /etc/passwd and /etc/group, which name root and the
// instance's own user (runtimes look their user up).
func writeAccounts(r string, uid, gid int) error {
	etc := filepath.Join(r, "etc")
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

// dropBoundingSet empties the capability bounding set of the calling
// thread (the one that execs).
func dropBoundingSet() error {
	for c := 0; ; c++ {
		err := unix.Prctl(unix.PR_CAPBSET_DROP, uintptr(c), 0, 0, 0)
		if errors.Is(err, unix.EINVAL) {
			return nil // past the last capability
		}
		if err != nil {
			return fmt.Errorf("cannot drop capability %d: %w", c, err)
		}
	}
}

// dropPrivileges switches the calling thread to uid/gid without
// supplementary groups, which clears its permitted, effective and ambient
// capability sets. Credentials are per thread in Linux; the raw system
// calls change only this thread's (Go's syscall.Setresuid would stop every
// thread of the runtime to change theirs too, which costs ~0.5 ms). That is
// enough because this locked thread is the one that execs, and exec leaves
// only the calling thread.
func dropPrivileges(uid, gid int) error {
	if _, _, e := unix.RawSyscall(unix.SYS_SETGROUPS, 0, 0, 0); e != 0 {
		return fmt.Errorf("cannot clear groups: %w", e)
	}
	if _, _, e := unix.RawSyscall(unix.SYS_SETRESGID, uintptr(gid), uintptr(gid), uintptr(gid)); e != 0 {
		return fmt.Errorf("cannot set gid: %w", e)
	}
	if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, uintptr(uid), uintptr(uid), uintptr(uid)); e != 0 {
		return fmt.Errorf("cannot set uid: %w", e)
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
