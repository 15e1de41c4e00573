package cli

import (
	"archive/zip"
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aloft-dev/aloft/internal/bundle"
)

// writeTree creates files under dir: path -> content, with mode 0755 for
// paths in exec.
func writeTree(t *testing.T, dir string, files map[string]string, exec map[string]bool) {
	t.Helper()
	for p, content := range files {
		full := filepath.Join(dir, filepath.FromSlash(p))
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		mode := os.FileMode(0o644)
		if exec[p] {
			mode = 0o755
		}
		if err := os.WriteFile(full, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(full, mode); err != nil { // not masked by umask
			t.Fatal(err)
		}
	}
}

// readZip returns the files of a zip (directories left out) and their modes.
func readZip(t *testing.T, data []byte) (map[string]string, map[string]os.FileMode) {
	t.Helper()
	zr, err := zip.NewReader(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		t.Fatalf("cannot read zip: %v", err)
	}
	files, modes := map[string]string{}, map[string]os.FileMode{}
	for _, f := range zr.File {
		if f.FileInfo().IsDir() {
			continue
		}
		rc, err := f.Open()
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			t.Fatal(err)
		}
		files[f.Name] = string(b)
		modes[f.Name] = f.Mode()
	}
	return files, modes
}

func TestZipDir(t *testing.T) {
	dir := t.TempDir()
	writeTree(t, dir, map[string]string{
		"aloft.yaml":                           "name: x\n",
		"index.mjs":                            "export const handler = 1;\n",
		"bin/run":                              "#!/bin/sh\necho hi\n",
		"lib/deep/data.json":                   "{}",
		"node_modules/pkg/index.js":            "module.exports = 1;\n",
		"node_modules/.cache/big":              "cache",
		"node_modules/a/node_modules/.cache/x": "cache",
		".git/HEAD":                            "ref: refs/heads/main\n",
		"lib/.git/HEAD":                        "nested repo",
		".aloft/token":                         "secret",
		".gitignore":                           "node_modules\n",
	}, map[string]bool{"bin/run": true})
	if err := os.Symlink("index.mjs", filepath.Join(dir, "link.mjs")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("lib", filepath.Join(dir, "liblink")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("missing", filepath.Join(dir, "dangling")); err != nil {
		t.Fatal(err)
	}

	var buf bytes.Buffer
	if err := ZipDir(&buf, dir); err != nil {
		t.Fatalf("ZipDir: %v", err)
	}
	files, modes := readZip(t, buf.Bytes())

	want := map[string]string{
		"aloft.yaml":                "name: x\n",
		"index.mjs":                 "export const handler = 1;\n",
		"link.mjs":                  "export const handler = 1;\n",
		"bin/run":                   "#!/bin/sh\necho hi\n",
		"lib/deep/data.json":        "{}",
		"liblink/deep/data.json":    "{}",
		"node_modules/pkg/index.js": "module.exports = 1;\n",
		".gitignore":                "node_modules\n",
	}
	if len(files) != len(want) {
		t.Errorf("got files %v, want %v", keys(files), keys(want))
	}
	for name, content := range want {
		if got, ok := files[name]; !ok {
			t.Errorf("%s is missing from the zip", name)
		} else if got != content {
			t.Errorf("%s=%q, want %q", name, got, content)
		}
	}
	for name, mode := range modes {
		wantMode := os.FileMode(0o644)
		if name == "bin/run" {
			wantMode = 0o755
		}
		if mode.Perm() != wantMode {
			t.Errorf("%s mode=%v, want %v", name, mode.Perm(), wantMode)
		}
	}

	// The same files give the same bytes, whatever their mtimes.
	future := time.Now().Add(time.Hour)
	if err := os.Chtimes(filepath.Join(dir, "index.mjs"), future, future); err != nil {
		t.Fatal(err)
	}
	var again bytes.Buffer
	if err := ZipDir(&again, dir); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf.Bytes(), again.Bytes()) {
		t.Errorf("packaging the same folder twice gave different zips")
	}
}

func TestZipDirSymlinkLoop(t *testing.T) {
	dir := t.TempDir()
	writeTree(t, dir, map[string]string{"a/f": "x"}, nil)
	if err := os.Symlink("..", filepath.Join(dir, "a", "up")); err != nil {
		t.Fatal(err)
	}
	if err := ZipDir(io.Discard, dir); err == nil {
		t.Fatalf("err=nil, want a symbolic link loop error")
	}
}

// TestZipDirStopsAtTheLimits: a folder the server would refuse is not
// read to its end (the big file is sparse: nothing of it is read).
func TestZipDirStopsAtTheLimits(t *testing.T) {
	big := t.TempDir()
	f, err := os.Create(filepath.Join(big, "big.bin"))
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(bundle.MaxUnzipped + 1); err != nil {
		t.Fatal(err)
	}
	f.Close()
	many := t.TempDir()
	for i := range bundle.MaxFiles + 1 {
		if err := os.WriteFile(filepath.Join(many, strconv.Itoa(i)), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for dir, want := range map[string]string{
		big:  "the folder's files add up to more than 250 MB, the limit of a bundle",
		many: "the folder has more than 20000 files, the limit of a bundle",
	} {
		var out bytes.Buffer
		err := ZipDir(&out, dir)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ZipDir: %v, want an error saying %q", err, want)
		}
		if dir == big && out.Len() > 1<<10 {
			t.Errorf("ZipDir wrote %d bytes of the big folder before refusing", out.Len())
		}
	}
}

// TestZipDirContext: packaging stops when its context ends.
func TestZipDirContext(t *testing.T) {
	dir := t.TempDir()
	writeTree(t, dir, map[string]string{"a": "x"}, nil)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := ZipDirContext(ctx, io.Discard, dir); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
}

func TestZipFile(t *testing.T) {
	dir := t.TempDir()
	writeTree(t, dir, map[string]string{"out/app": "\x7fELF..."}, map[string]bool{"out/app": true})
	var buf bytes.Buffer
	if err := ZipFile(&buf, filepath.Join(dir, "out/app"), "bootstrap"); err != nil {
		t.Fatal(err)
	}
	files, modes := readZip(t, buf.Bytes())
	if len(files) != 1 || files["bootstrap"] != "\x7fELF..." {
		t.Fatalf("got files %v, want only bootstrap", keys(files))
	}
	if got := modes["bootstrap"].Perm(); got != 0o755 {
		t.Fatalf("bootstrap mode=%v, want 0755", got)
	}
}

func TestBuildGoReportsCompileErrors(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("no go toolchain on PATH")
	}
	dir := t.TempDir()
	writeTree(t, dir, map[string]string{
		"go.mod":  "module broken\n\ngo 1.26\n",
		"main.go": "package main\n\nfunc main() { undefinedThing() }\n",
	}, nil)
	var stderr bytes.Buffer
	err := BuildGo(context.Background(), dir, filepath.Join(t.TempDir(), "bootstrap"), &stderr)
	if err == nil {
		t.Fatal("err=nil, want a build error")
	}
	if !bytes.Contains(stderr.Bytes(), []byte("undefinedThing")) {
		t.Fatalf("stderr=%q, want the compiler's message", stderr.String())
	}
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
