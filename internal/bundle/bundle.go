// Package bundle validates function code bundles (zip files) and unpacks
// them into the node's code cache, so a cold start finds its code ready on
// disk and never downloads or unzips.
package bundle

import (
	"archive/zip"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/aloft-dev/aloft/internal/model"
)

// Limits of a bundle, as Lambda's.
const (
	MaxZipped   = 50 << 20  // 50 MB
	MaxUnzipped = 250 << 20 // 250 MB
	MaxFiles    = 20000
)

// Info is what validation learned about a bundle.
type Info struct {
	SHA256 string
	Size   int64
}

// Validate checks that data is a zip whose entries stay inside its root,
// fit the size limits, and hold what the runtime needs. Errors wrap
// model.ErrInvalid.
func Validate(data []byte, runtime model.Runtime) (Info, error) {
	sum := sha256.Sum256(data)
	info := Info{SHA256: hex.EncodeToString(sum[:]), Size: int64(len(data))}
	if len(data) > MaxZipped {
		return info, fmt.Errorf("%w: the bundle is %d bytes, more than %d", model.ErrTooLarge, len(data), MaxZipped)
	}
	zr, err := zip.NewReader(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		return info, model.Invalidf("the code bundle is not a zip file: %v", err)
	}
	if len(zr.File) > MaxFiles {
		return info, model.Invalidf("the bundle has %d files, more than %d", len(zr.File), MaxFiles)
	}
	var total uint64
	var bootstrap *zip.File
	isDir := make(map[string]bool, len(zr.File)) // every path the bundle makes
	for _, f := range zr.File {
		name, err := cleanName(f.Name)
		if err != nil {
			return info, err
		}
		if f.Mode()&fs.ModeSymlink != 0 {
			return info, model.Invalidf("the bundle entry %q is a symbolic link; links are not allowed", f.Name)
		}
		if err := addPath(isDir, name, f.Mode().IsDir() || strings.HasSuffix(f.Name, "/")); err != nil {
			return info, err
		}
		total += f.UncompressedSize64
		if total > MaxUnzipped {
			return info, model.Invalidf("the bundle unzips to more than %d bytes", MaxUnzipped)
		}
		if name == "bootstrap" {
			bootstrap = f
		}
	}
	if runtime == model.RuntimeProvided {
		if bootstrap == nil {
			return info, model.Invalidf("runtime provided needs an executable file named bootstrap at the root of the bundle")
		}
		if bootstrap.Mode().IsDir() || bootstrap.Mode().Perm()&0o111 == 0 {
			return info, model.Invalidf("bootstrap is not executable (mode %v); set its executable bit before zipping", bootstrap.Mode())
		}
	}
	return info, nil
}

// addPath records that the bundle makes name, a directory or a file, and
// its parent directories. A path made twice as a file, or as both a file and
// a directory, could not be unpacked: it is an error.
func addPath(isDir map[string]bool, name string, dir bool) error {
	if name == "." {
		return nil // the root; Unpack skips it
	}
	for p := path.Dir(name); p != "."; p = path.Dir(p) {
		if d, seen := isDir[p]; seen && !d {
			return model.Invalidf("the bundle has %q both as a file and as a directory", p)
		}
		isDir[p] = true
	}
	if d, seen := isDir[name]; seen {
		switch {
		case d && dir:
			return nil // a directory listed again, or after its files
		case d || dir:
			return model.Invalidf("the bundle has %q both as a file and as a directory", name)
		default:
			return model.Invalidf("the bundle has the file %q twice", name)
		}
	}
	isDir[name] = dir
	return nil
}

// cleanName returns the entry's path relative to the bundle root, or an
// error when it would escape it.
func cleanName(name string) (string, error) {
	if name == "" || strings.ContainsAny(name, "\\\x00") || path.IsAbs(name) {
		return "", model.Invalidf("the bundle entry %q has an invalid path", name)
	}
	clean := path.Clean(name)
	if clean == ".." || strings.HasPrefix(clean, "../") {
		return "", model.Invalidf("the bundle entry %q escapes the bundle root", name)
	}
	if len(clean) > maxPathBytes {
		return "", model.Invalidf("the bundle entry %q… has a path longer than %d bytes", clean[:64], maxPathBytes)
	}
	for _, part := range strings.Split(clean, "/") {
		if len(part) > maxNameBytes {
			return "", model.Invalidf("the bundle entry %q… has a name longer than %d bytes", part[:64], maxNameBytes)
		}
	}
	return clean, nil
}

// Limits of an entry's path, so that every valid bundle can be unpacked:
// file systems take names of up to 255 bytes (NAME_MAX), and paths of up to
// 4096 (PATH_MAX) including the code directory they are unpacked under.
const (
	maxNameBytes = 255
	maxPathBytes = 1024
)

// Unpack extracts a validated bundle into dir, which must not exist yet. It
// writes into a sibling temporary directory and renames it, so dir is
// either complete or absent.
func Unpack(data []byte, dir string) error { return UnpackPrepared(data, dir, nil) }

// UnpackPrepared is Unpack with a step run on the unpacked files before they
// are renamed into place (byte-compiling them, say); its failure fails the
// unpack.
func UnpackPrepared(data []byte, dir string, prepare func(tmp string) error) error {
	zr, err := zip.NewReader(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		return model.Invalidf("the code bundle is not a zip file: %v", err)
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return err
	}
	tmp, err := os.MkdirTemp(filepath.Dir(dir), ".unpack-*")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	if err := os.Chmod(tmp, 0o755); err != nil {
		return err
	}
	var written int64
	for _, f := range zr.File {
		name, err := cleanName(f.Name)
		if err != nil {
			return err
		}
		if name == "." {
			continue
		}
		dst := filepath.Join(tmp, filepath.FromSlash(name))
		if f.Mode().IsDir() || strings.HasSuffix(f.Name, "/") {
			if err := os.MkdirAll(dst, 0o755); err != nil {
				return err
			}
			continue
		}
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return err
		}
		n, err := writeFile(f, dst, MaxUnzipped-written)
		if err != nil {
			return fmt.Errorf("cannot unpack %s: %w", f.Name, err)
		}
		written += n
	}
	if prepare != nil {
		if err := prepare(tmp); err != nil {
			return err
		}
	}
	if err := os.Rename(tmp, dir); err != nil {
		if _, statErr := os.Stat(dir); statErr == nil {
			return nil // another caller unpacked the same bundle first
		}
		return err
	}
	return nil
}

func writeFile(f *zip.File, dst string, budget int64) (int64, error) {
	// Files are readable by everyone (the sandbox runs functions as an
	// unprivileged user) and keep their executable bit; nothing is writable.
	mode := os.FileMode(0o444)
	if f.Mode().Perm()&0o111 != 0 {
		mode = 0o555
	}
	rc, err := f.Open()
	if err != nil {
		return 0, err
	}
	defer rc.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, mode)
	if err != nil {
		return 0, err
	}
	n, err := io.Copy(out, io.LimitReader(rc, budget+1))
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err == nil && n > budget {
		err = model.Invalidf("the bundle unzips to more than %d bytes", MaxUnzipped)
	}
	return n, err
}
