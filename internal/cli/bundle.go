package cli

import (
	"archive/zip"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/aloft-dev/aloft/internal/bundle"
)

// excluded are the paths that are never packaged, at any depth: VCS data,
// build caches and the data dir of a local `aloft up`.
var excluded = []string{".git", ".aloft", "node_modules/.cache"}

// isExcluded reports whether the slash path name (relative to the function
// folder) is or ends with one of the excluded paths.
func isExcluded(name string) bool {
	for _, x := range excluded {
		if name == x || strings.HasSuffix(name, "/"+x) {
			return true
		}
	}
	return false
}

// zipEpoch is the modification time of every zip entry, so that packaging
// the same files twice yields the same bytes (and the same code_sha256).
var zipEpoch = time.Date(1980, 1, 1, 0, 0, 0, 0, time.UTC)

// ZipDir writes the files under dir to w as a zip bundle. It keeps each
// file's permission bits (notably the executable bit) in the entries'
// external attributes, dereferences symbolic links, and skips the paths in
// excluded.
func ZipDir(w io.Writer, dir string) error { return ZipDirContext(context.Background(), w, dir) }

// ZipDirContext is ZipDir that stops when ctx ends (the user pressed
// Ctrl-C while a big folder was being packaged).
func ZipDirContext(ctx context.Context, w io.Writer, dir string) error {
	zw := zip.NewWriter(w)
	root, err := filepath.Abs(dir)
	if err != nil {
		return fmt.Errorf("cannot package %s: %w", dir, err)
	}
	real, err := filepath.EvalSymlinks(root)
	if err != nil {
		return fmt.Errorf("cannot package %s: %w", dir, err)
	}
	b := budget{ctx: ctx}
	if err := zipTree(zw, root, "", map[string]bool{real: true}, &b); err != nil {
		return err
	}
	if err := zw.Close(); err != nil {
		return fmt.Errorf("cannot package %s: %w", dir, err)
	}
	return nil
}

// budget counts what a bundle holds so far, so that packaging a folder
// the server would refuse (say, a home directory deployed by mistake) stops
// at the limit instead of reading all of it.
type budget struct {
	ctx   context.Context
	files int
	bytes int64
}

func (b *budget) add(fsPath string, size int64) error {
	if err := b.ctx.Err(); err != nil {
		return fmt.Errorf("cannot package %s: %w", fsPath, err)
	}
	b.files++
	b.bytes += size
	switch {
	case b.files > bundle.MaxFiles:
		return fmt.Errorf("cannot package %s: the folder has more than %d files, the limit of a bundle", fsPath, bundle.MaxFiles)
	case b.bytes > bundle.MaxUnzipped:
		return fmt.Errorf("cannot package %s: the folder's files add up to more than %d MB, the limit of a bundle", fsPath, bundle.MaxUnzipped>>20)
	}
	return nil
}

// zipTree adds the contents of the directory fsDir under the zip prefix
// (a slash path, "" for the root). ancestors holds the real paths of the
// directories being walked, to stop symlink cycles.
func zipTree(zw *zip.Writer, fsDir, prefix string, ancestors map[string]bool, b *budget) error {
	entries, err := os.ReadDir(fsDir)
	if err != nil {
		return fmt.Errorf("cannot package %s: %w", fsDir, err)
	}
	for _, e := range entries {
		name := path.Join(prefix, e.Name())
		if isExcluded(name) {
			continue
		}
		fsPath := filepath.Join(fsDir, e.Name())
		info, err := os.Stat(fsPath) // follows symbolic links
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) && e.Type()&fs.ModeSymlink != 0 {
				continue // a dangling link has nothing to package
			}
			return fmt.Errorf("cannot package %s: %w", fsPath, err)
		}
		switch {
		case info.IsDir():
			real, err := filepath.EvalSymlinks(fsPath)
			if err != nil {
				return fmt.Errorf("cannot package %s: %w", fsPath, err)
			}
			if ancestors[real] {
				return fmt.Errorf("cannot package %s: symbolic link loop", fsPath)
			}
			if err := b.add(fsPath, 0); err != nil {
				return err
			}
			if err := addZipEntry(zw, name+"/", info, nil); err != nil {
				return err
			}
			ancestors[real] = true
			err = zipTree(zw, fsPath, name, ancestors, b)
			delete(ancestors, real)
			if err != nil {
				return err
			}
		case info.Mode().IsRegular():
			if err := b.add(fsPath, info.Size()); err != nil {
				return err
			}
			f, err := os.Open(fsPath)
			if err != nil {
				return fmt.Errorf("cannot package %s: %w", fsPath, err)
			}
			err = addZipEntry(zw, name, info, f)
			f.Close()
			if err != nil {
				return err
			}
		default:
			// Sockets, pipes and devices are not code.
		}
	}
	return nil
}

// ZipFile writes a zip bundle holding the one file src, stored as name.
func ZipFile(w io.Writer, src, name string) error {
	f, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("cannot package %s: %w", src, err)
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return fmt.Errorf("cannot package %s: %w", src, err)
	}
	zw := zip.NewWriter(w)
	if err := addZipEntry(zw, name, info, f); err != nil {
		return err
	}
	if err := zw.Close(); err != nil {
		return fmt.Errorf("cannot package %s: %w", src, err)
	}
	return nil
}

// addZipEntry adds one file (or, with a name ending in "/", a directory)
// whose Unix mode comes from info; zip.FileInfoHeader stores it in the
// high 16 bits of the external attributes with a Unix creator.
func addZipEntry(zw *zip.Writer, name string, info fs.FileInfo, r io.Reader) error {
	h, err := zip.FileInfoHeader(info)
	if err != nil {
		return fmt.Errorf("cannot package %s: %w", name, err)
	}
	h.Name = name
	h.Modified = zipEpoch
	if info.IsDir() {
		h.Method = zip.Store
	} else {
		h.Method = zip.Deflate
	}
	w, err := zw.CreateHeader(h)
	if err != nil {
		return fmt.Errorf("cannot package %s: %w", name, err)
	}
	if r != nil {
		if _, err := io.Copy(w, r); err != nil {
			return fmt.Errorf("cannot package %s: %w", name, err)
		}
	}
	return nil
}

// BuildGo builds the Go main package in dir into the Linux executable out,
// the way Lambda's provided runtimes expect it: static (CGO_ENABLED=0),
// without aws-lambda-go's net/rpc mode (-tags lambda.norpc), reproducible
// paths (-trimpath). The compiler's output goes to stderr.
func BuildGo(ctx context.Context, dir, out string, stderr io.Writer) error {
	goBin, err := exec.LookPath("go")
	if err != nil {
		return fmt.Errorf("cannot build the Go function: no go toolchain on PATH (install Go from https://go.dev/dl)")
	}
	absOut, err := filepath.Abs(out)
	if err != nil {
		return fmt.Errorf("cannot build the Go function: %w", err)
	}
	cmd := exec.CommandContext(ctx, goBin, "build", "-tags", "lambda.norpc", "-trimpath", "-o", absOut, ".")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux")
	cmd.Stdout = stderr
	cmd.Stderr = stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("cannot build the Go function in %s: go build: %w", dir, err)
	}
	return nil
}
