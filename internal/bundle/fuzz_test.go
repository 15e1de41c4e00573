package bundle

import (
	"archive/zip"
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/aloft-dev/aloft/internal/model"
)

// FuzzBundle builds zips of three entries with fuzzed names and modes. A
// bundle Validate accepts unpacks, or fails as bad input (never as a
// server error), and nothing lands outside the target directory.
func FuzzBundle(f *testing.F) {
	f.Add("bootstrap", "lib/a.txt", "lib/", uint32(0o755), uint32(0o644), uint32(fs.ModeDir|0o755), []byte("x"))
	f.Add("a", "a/b", "c", uint32(0o644), uint32(0o644), uint32(0o644), []byte("x"))
	f.Add("a/b", "a", "c", uint32(0o644), uint32(0o644), uint32(0o644), []byte("x"))
	f.Add("../x", "x", "y", uint32(0o644), uint32(0o644), uint32(0o644), []byte("x"))
	f.Add("a/../../x", "/etc/x", `a\b`, uint32(0o644), uint32(0o644), uint32(0o644), []byte("x"))
	f.Add("link", "x", "y", uint32(fs.ModeSymlink|0o777), uint32(0o644), uint32(0o644), []byte("/etc/passwd"))
	f.Add(".", "./a", "a/./b", uint32(0o644), uint32(0o644), uint32(0o644), []byte("x"))
	f.Add("a", "a", "a", uint32(0o644), uint32(0o755), uint32(fs.ModeDir), []byte("x"))
	f.Fuzz(func(t *testing.T, n1, n2, n3 string, m1, m2, m3 uint32, content []byte) {
		var buf bytes.Buffer
		zw := zip.NewWriter(&buf)
		for i, n := range []string{n1, n2, n3} {
			h := &zip.FileHeader{Name: n, Method: zip.Store}
			h.SetMode(fs.FileMode([]uint32{m1, m2, m3}[i]))
			w, err := zw.CreateHeader(h)
			if err != nil {
				return // a name archive/zip itself refuses
			}
			if !h.Mode().IsDir() {
				w.Write(content)
			}
		}
		if err := zw.Close(); err != nil {
			return
		}
		data := buf.Bytes()
		if _, err := Validate(data, model.RuntimeNode); err != nil {
			if !errors.Is(err, model.ErrInvalid) && !errors.Is(err, model.ErrTooLarge) {
				t.Fatalf("Validate: %v, want a bad-input error", err)
			}
			return
		}
		root := t.TempDir()
		dir := filepath.Join(root, "code", "x")
		if err := Unpack(data, dir); err != nil && !errors.Is(err, model.ErrInvalid) {
			t.Fatalf("names %q %q %q: Unpack of a valid bundle: %v, want success or a bad-input error", n1, n2, n3, err)
		}
		filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return nil
			}
			if d.Type()&fs.ModeSymlink != 0 {
				t.Errorf("unpacked a symbolic link: %s", p)
			}
			if p != root && p != filepath.Join(root, "code") && !strings.HasPrefix(p, dir) {
				t.Errorf("unpacked outside the target: %s", p)
			}
			return nil
		})
		if entries, _ := os.ReadDir(filepath.Join(root, "code")); len(entries) > 1 {
			t.Errorf("left %d entries beside the target, want none", len(entries)-1)
		}
	})
}
