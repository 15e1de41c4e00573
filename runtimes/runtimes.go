// Package runtimes ships Aloft's Node.js and Python runtime bootstraps. They
// are embedded in the binary, extracted to a directory the sandbox shows to
// instances (Extract), and started with the host's interpreters (Command).
// Each bootstrap imports the function's handler and serves invocations over
// the Lambda Runtime API, as AWS's managed runtimes do.
package runtimes

import (
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sort"
	"sync"

	"github.com/aloft-dev/aloft/internal/model"
)

//go:embed node python
var files embed.FS

// Paths of the bootstraps inside a runtime directory.
const (
	NodeBootstrap   = "node/bootstrap.mjs"
	PythonBootstrap = "python/bootstrap.py"
)

// pythonPath is Debian's interpreter, preferred over whatever python3 is
// first on PATH (often a slow pyenv shim).
const pythonPath = "/usr/bin/python3"

var (
	versionOnce sync.Once
	version     string
)

// Version is a short hash of the embedded files; it names the directory
// Extract writes, so a new binary never reuses an old runtime directory.
func Version() string {
	versionOnce.Do(func() {
		var names []string
		err := fs.WalkDir(files, ".", func(p string, d fs.DirEntry, err error) error {
			if err == nil && !d.IsDir() {
				names = append(names, p)
			}
			return err
		})
		if err != nil {
			panic(fmt.Sprintf("runtimes: cannot walk embedded files: %v", err))
		}
		sort.Strings(names)
		h := sha256.New()
		for _, n := range names {
			b, err := files.ReadFile(n)
			if err != nil {
				panic(fmt.Sprintf("runtimes: cannot read embedded %s: %v", n, err))
			}
			fmt.Fprintf(h, "%s\x00%d\x00", n, len(b))
			h.Write(b)
		}
		version = hex.EncodeToString(h.Sum(nil))[:12]
	})
	return version
}

// Extract writes the embedded bootstraps to dir/<Version()>/ and returns
// that directory, the runtime directory to show instances. It is idempotent
// and safe to call concurrently, also from several processes: the files are
// written to a temporary directory that is renamed into place, and an
// existing runtime directory is reused as is. Directories are 0755 and files
// 0644, so an unprivileged instance user can read them.
func Extract(dir string) (string, error) {
	final := filepath.Join(dir, Version())
	if fi, err := os.Stat(final); err == nil && fi.IsDir() {
		return final, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("cannot create runtime directory: %w", err)
	}
	tmp, err := os.MkdirTemp(dir, ".extract-")
	if err != nil {
		return "", fmt.Errorf("cannot create runtime directory: %w", err)
	}
	defer os.RemoveAll(tmp) // a no-op once renamed
	err = fs.WalkDir(files, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		target := filepath.Join(tmp, filepath.FromSlash(p))
		if d.IsDir() {
			if p == "." {
				return nil
			}
			return os.Mkdir(target, 0o755)
		}
		b, err := files.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(target, b, 0o644)
	})
	if err != nil {
		return "", fmt.Errorf("cannot extract runtimes: %w", err)
	}
	if err := os.Chmod(tmp, 0o755); err != nil { // MkdirTemp makes it 0700
		return "", fmt.Errorf("cannot extract runtimes: %w", err)
	}
	if err := os.Rename(tmp, final); err != nil {
		// Someone else extracted the same version meanwhile.
		if fi, statErr := os.Stat(final); statErr == nil && fi.IsDir() {
			return final, nil
		}
		return "", fmt.Errorf("cannot extract runtimes: %w", err)
	}
	return final, nil
}

// ErrNoInterpreter is returned when the host lacks a runtime's interpreter.
var ErrNoInterpreter = errors.New("interpreter not found")

// Interpreter returns the absolute host path of the interpreter for rt,
// with symbolic links resolved (so /bin/node on a merged-/usr host becomes
// /usr/bin/node, a path valid in sandboxes that show only /usr).
func Interpreter(rt model.Runtime) (string, error) {
	var p string
	switch rt {
	case model.RuntimeNode:
		found, err := exec.LookPath("node")
		if err != nil {
			return "", fmt.Errorf("cannot find node: %w", ErrNoInterpreter)
		}
		p = found
	case model.RuntimePython:
		if fi, err := os.Stat(pythonPath); err == nil && !fi.IsDir() {
			p = pythonPath
		} else {
			found, err := exec.LookPath("python3")
			if err != nil {
				return "", fmt.Errorf("cannot find python3: %w", ErrNoInterpreter)
			}
			p = found
		}
	default:
		return "", fmt.Errorf("runtime %q has no bootstrap: %w", rt, model.ErrInvalid)
	}
	abs, err := filepath.Abs(p)
	if err != nil {
		return "", fmt.Errorf("cannot resolve %s: %w", p, err)
	}
	real, err := filepath.EvalSymlinks(abs)
	if err != nil {
		return "", fmt.Errorf("cannot resolve %s: %w", abs, err)
	}
	return real, nil
}

// Interpreters returns the host paths of the interpreters this host has, by
// runtime, so a sandbox driver knows which host paths instances need.
func Interpreters() map[model.Runtime]string {
	m := make(map[model.Runtime]string, 2)
	for _, rt := range []model.Runtime{model.RuntimeNode, model.RuntimePython} {
		if p, err := Interpreter(rt); err == nil {
			m[rt] = p
		}
	}
	return m
}

// Command returns the command line that starts rt's bootstrap, given the
// runtime directory as the instance sees it. The interpreter is an absolute
// host path (see Interpreter). Python runs with -s (no user site-packages;
// Debian's dist-packages stay available).
func Command(rt model.Runtime, runtimeDir string) ([]string, error) {
	interp, err := Interpreter(rt)
	if err != nil {
		return nil, err
	}
	switch rt {
	case model.RuntimeNode:
		return []string{interp, path.Join(runtimeDir, NodeBootstrap)}, nil
	default: // model.RuntimePython; Interpreter rejected the rest
		return []string{interp, "-s", path.Join(runtimeDir, PythonBootstrap)}, nil
	}
}

// Prepare readies a function's unpacked code for its runtime at deploy
// time, so a cold start compiles nothing: Python sources are byte-compiled
// (with the interpreter instances run, into __pycache__ beside them).
func Prepare(dir string, rt model.Runtime) error {
	if rt != model.RuntimePython {
		return nil
	}
	py, err := Interpreter(model.RuntimePython)
	if err != nil {
		return err
	}
	// -q: quiet; -j 0: all cores. Sources that do not compile are left for
	// the runtime to report as Runtime.UserCodeSyntaxError at init, as Lambda does.
	out, err := exec.Command(py, "-m", "compileall", "-q", "-j", "0", dir).CombinedOutput()
	if err != nil {
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			return nil // a syntax error: compileall exits 1, the runtime reports it
		}
		return fmt.Errorf("cannot byte-compile the function: %v: %s", err, out)
	}
	return nil
}
