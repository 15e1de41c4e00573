package bundle

import (
	"archive/zip"
	"bytes"
	"compress/flate"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/aloft-dev/aloft/internal/model"
)

// entry is one file of a test zip.
type entry struct {
	name string
	mode fs.FileMode // 0 means 0o644
	data []byte
}

func makeZip(t *testing.T, entries ...entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, e := range entries {
		h := &zip.FileHeader{Name: e.name, Method: zip.Deflate}
		if len(e.data) == 0 {
			h.Method = zip.Store // a deflater per entry makes 20001 entries slow
		}
		mode := e.mode
		if mode == 0 {
			mode = 0o644
		}
		if strings.HasSuffix(e.name, "/") {
			mode |= fs.ModeDir
		}
		h.SetMode(mode)
		w, err := zw.CreateHeader(h)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write(e.data); err != nil {
			t.Fatal(err)
		}
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

var bootstrap = entry{name: "bootstrap", mode: 0o755, data: []byte("#!/bin/sh\n")}

func TestValidate(t *testing.T) {
	manyFiles := make([]entry, MaxFiles+1)
	for i := range manyFiles {
		manyFiles[i] = entry{name: "f" + strings.Repeat("x", i%7) + "/" + string(rune('a'+i%26)) + itoa(i)}
	}
	bomb := zipBomb(t, MaxUnzipped/(1<<20)+1)
	tests := []struct {
		name    string
		data    []byte
		runtime model.Runtime
		wantErr string // "" for a valid bundle
	}{
		{"provided with bootstrap", makeZip(t, bootstrap, entry{name: "lib/a.txt", data: []byte("a")}), model.RuntimeProvided, ""},
		{"node without bootstrap", makeZip(t, entry{name: "index.js", data: []byte("exports.handler=()=>1")}), model.RuntimeNode, ""},
		{"dot slash prefix", makeZip(t, entry{name: "./bootstrap", mode: 0o755}), model.RuntimeProvided, ""},
		{"inner dotdot that stays inside", makeZip(t, bootstrap, entry{name: "a/../b"}), model.RuntimeProvided, ""},
		{"directory entries", makeZip(t, entry{name: "lib/"}, bootstrap), model.RuntimeProvided, ""},
		{"empty zip, python", makeZip(t), model.RuntimePython, ""},
		{"not a zip", []byte("hello, world"), model.RuntimeNode, "the code bundle is not a zip file"},
		{"empty data", nil, model.RuntimeNode, "the code bundle is not a zip file"},
		{"parent escape", makeZip(t, bootstrap, entry{name: "../evil"}), model.RuntimeProvided, `the bundle entry "../evil" escapes the bundle root`},
		{"deep escape", makeZip(t, bootstrap, entry{name: "a/../../evil"}), model.RuntimeProvided, `the bundle entry "a/../../evil" escapes the bundle root`},
		{"dotdot alone", makeZip(t, entry{name: ".."}), model.RuntimeNode, `the bundle entry ".." escapes the bundle root`},
		{"absolute path", makeZip(t, entry{name: "/etc/passwd"}), model.RuntimeNode, `the bundle entry "/etc/passwd" has an invalid path`},
		{"backslash", makeZip(t, entry{name: `..\evil`}), model.RuntimeNode, `the bundle entry "..\\evil" has an invalid path`},
		{"NUL in a name", makeZip(t, entry{name: "a\x00b"}), model.RuntimeNode, `the bundle entry "a\x00b" has an invalid path`},
		{"file twice", makeZip(t, entry{name: "a.js"}, entry{name: "./a.js"}), model.RuntimeNode, `the bundle has the file "a.js" twice`},
		{"name of 255 bytes", makeZip(t, entry{name: "lib/" + strings.Repeat("n", 255)}), model.RuntimeNode, ""},
		{"name over 255 bytes", makeZip(t, entry{name: "lib/" + strings.Repeat("n", 256)}), model.RuntimeNode,
			`the bundle entry "` + strings.Repeat("n", 64) + `"… has a name longer than 255 bytes`},
		{"path over 1024 bytes", makeZip(t, entry{name: strings.Repeat("d/", 512) + "f"}), model.RuntimeNode,
			`the bundle entry "` + strings.Repeat("d/", 32) + `"… has a path longer than 1024 bytes`},
		{"file then directory", makeZip(t, entry{name: "lib"}, entry{name: "lib/a.js"}), model.RuntimeNode,
			`the bundle has "lib" both as a file and as a directory`},
		{"directory then file", makeZip(t, entry{name: "lib/a.js"}, entry{name: "lib"}), model.RuntimeNode,
			`the bundle has "lib" both as a file and as a directory`},
		{"directory entry then file", makeZip(t, entry{name: "lib/"}, entry{name: "lib"}), model.RuntimeNode,
			`the bundle has "lib" both as a file and as a directory`},
		{"symlink", makeZip(t, bootstrap, entry{name: "link", mode: fs.ModeSymlink | 0o777, data: []byte("/etc/passwd")}), model.RuntimeProvided,
			`the bundle entry "link" is a symbolic link; links are not allowed`},
		{"too many files", makeZip(t, manyFiles...), model.RuntimeNode, "the bundle has 20001 files, more than 20000"},
		{"zip bomb", bomb, model.RuntimeProvided, "the bundle unzips to more than 262144000 bytes"},
		{"no bootstrap", makeZip(t, entry{name: "main", mode: 0o755}), model.RuntimeProvided,
			"runtime provided needs an executable file named bootstrap at the root of the bundle"},
		{"bootstrap in a subdirectory", makeZip(t, entry{name: "bin/bootstrap", mode: 0o755}), model.RuntimeProvided,
			"runtime provided needs an executable file named bootstrap at the root of the bundle"},
		{"bootstrap not executable", makeZip(t, entry{name: "bootstrap", mode: 0o644}), model.RuntimeProvided,
			"bootstrap is not executable (mode -rw-r--r--); set its executable bit before zipping"},
		{"bootstrap is a directory", makeZip(t, entry{name: "bootstrap/", mode: 0o755}), model.RuntimeProvided,
			"bootstrap is not executable (mode drwxr-xr-x); set its executable bit before zipping"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			info, err := Validate(tt.data, tt.runtime)
			sum := sha256.Sum256(tt.data)
			if info.SHA256 != hex.EncodeToString(sum[:]) || info.Size != int64(len(tt.data)) {
				t.Errorf("info=%+v, want sha256 %x and size %d", info, sum, len(tt.data))
			}
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("got error %v, want none", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("got no error, want %q", tt.wantErr)
			}
			if !errors.Is(err, model.ErrInvalid) {
				t.Errorf("error %v does not wrap model.ErrInvalid", err)
			}
			if !strings.HasPrefix(err.Error(), "invalid parameter: "+tt.wantErr) {
				t.Errorf("error=%q, want it to start with %q", err, "invalid parameter: "+tt.wantErr)
			}
		})
	}
	if len(bomb) > 1<<20 {
		t.Errorf("the bomb is %d bytes; the test meant a small zip", len(bomb))
	}
}

func TestValidateTooLarge(t *testing.T) {
	_, err := Validate(make([]byte, MaxZipped+1), model.RuntimeNode)
	if !errors.Is(err, model.ErrTooLarge) {
		t.Fatalf("got %v, want an error wrapping model.ErrTooLarge", err)
	}
}

// zipBomb returns a small, well-formed zip holding bootstrap and a file of
// mib MiB of zeros. Deflating that much under the race detector takes many
// seconds, so it repeats one flushed deflate block of a zero MiB instead:
// its back-references point into zeros whatever precedes them.
func zipBomb(t *testing.T, mib int) []byte {
	t.Helper()
	zero := make([]byte, 1<<20)
	var block bytes.Buffer
	fw, _ := flate.NewWriter(&block, flate.BestCompression)
	fw.Write(zero)
	fw.Flush() // ends the block on a byte boundary, not final
	var tail bytes.Buffer
	fw2, _ := flate.NewWriter(&tail, flate.BestCompression)
	fw2.Close() // an empty final block
	var stream bytes.Buffer
	var crc uint32
	for range mib {
		stream.Write(block.Bytes())
		crc = crc32.Update(crc, crc32.IEEETable, zero)
	}
	stream.Write(tail.Bytes())

	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	w, _ := zw.Create("bootstrap")
	w.Write(bootstrap.data)
	h := &zip.FileHeader{Name: "zeros", Method: zip.Deflate, CRC32: crc,
		CompressedSize64: uint64(stream.Len()), UncompressedSize64: uint64(mib) << 20}
	h.SetMode(0o644)
	raw, err := zw.CreateRaw(h)
	if err != nil {
		t.Fatal(err)
	}
	raw.Write(stream.Bytes())
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestZipBombIsWellFormed(t *testing.T) {
	if testing.Short() {
		t.Skip("inflates 10 MiB")
	}
	data := zipBomb(t, 10)
	zr, err := zip.NewReader(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	rc, err := zr.File[1].Open()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	got, err := io.ReadAll(rc) // checks the size and the CRC at EOF
	if err != nil {
		t.Fatalf("inflating the bomb: %v", err)
	}
	if len(got) != 10<<20 || bytes.ContainsFunc(got, func(r rune) bool { return r != 0 }) {
		t.Errorf("the bomb inflates to %d bytes, not all zero; want %d zeros", len(got), 10<<20)
	}
}

func itoa(i int) string {
	var b []byte
	for {
		b = append([]byte{byte('0' + i%10)}, b...)
		i /= 10
		if i == 0 {
			return string(b)
		}
	}
}

func TestUnpack(t *testing.T) {
	data := makeZip(t,
		bootstrap,
		entry{name: "lib/"},
		entry{name: "lib/data.txt", mode: 0o666, data: []byte("hello")},
		entry{name: "deep/er/x.sh", mode: 0o700, data: []byte("echo")},
		entry{name: "./top.txt", data: []byte("top")},
		entry{name: "empty/"},
	)
	parent := t.TempDir()
	dir := filepath.Join(parent, "code", "abc")
	if err := Unpack(data, dir); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		path string
		mode fs.FileMode
		data string
	}{
		{".", fs.ModeDir | 0o755, ""},
		{"bootstrap", 0o555, "#!/bin/sh\n"},
		{"lib", fs.ModeDir | 0o755, ""},
		{"lib/data.txt", 0o444, "hello"},
		{"deep/er", fs.ModeDir | 0o755, ""},
		{"deep/er/x.sh", 0o555, "echo"},
		{"top.txt", 0o444, "top"},
		{"empty", fs.ModeDir | 0o755, ""},
	}
	for _, tt := range tests {
		p := filepath.Join(dir, tt.path)
		st, err := os.Lstat(p)
		if err != nil {
			t.Errorf("%s: %v", tt.path, err)
			continue
		}
		if st.Mode() != tt.mode {
			t.Errorf("%s: mode=%v, want %v", tt.path, st.Mode(), tt.mode)
		}
		if !st.IsDir() {
			b, _ := os.ReadFile(p)
			if string(b) != tt.data {
				t.Errorf("%s: content=%q, want %q", tt.path, b, tt.data)
			}
		}
	}
	// Nothing but the result is left next to it: the temporary directory
	// was renamed into place.
	names := dirNames(t, filepath.Dir(dir))
	if len(names) != 1 || names[0] != "abc" {
		t.Errorf("code dir holds %v, want [abc]", names)
	}

	// A second Unpack into the existing directory is a no-op.
	before, _ := os.Stat(filepath.Join(dir, "bootstrap"))
	if err := Unpack(makeZip(t, entry{name: "other"}), dir); err != nil {
		t.Fatalf("second Unpack: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "other")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("second Unpack wrote into the existing directory (stat other: %v)", err)
	}
	after, err := os.Stat(filepath.Join(dir, "bootstrap"))
	if err != nil || !os.SameFile(before, after) {
		t.Errorf("second Unpack replaced the existing bootstrap (%v)", err)
	}
	if names := dirNames(t, filepath.Dir(dir)); len(names) != 1 {
		t.Errorf("code dir holds %v after the second Unpack, want [abc]", names)
	}
}

func TestUnpackRefuses(t *testing.T) {
	tests := []struct {
		name    string
		data    []byte
		wantErr string
	}{
		{"not a zip", []byte("nope"), "the code bundle is not a zip file"},
		{"escape", makeZip(t, entry{name: "ok"}, entry{name: "../evil", data: []byte("x")}), "escapes the bundle root"},
		{"absolute", makeZip(t, entry{name: "/abs"}), "has an invalid path"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			parent := t.TempDir()
			dir := filepath.Join(parent, "sha")
			err := Unpack(tt.data, dir)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("got %v, want an error containing %q", err, tt.wantErr)
			}
			// Neither the target nor a temporary directory remains, and
			// nothing escaped into the parent.
			if names := dirNames(t, parent); len(names) != 0 {
				t.Errorf("parent holds %v after a failed Unpack, want nothing", names)
			}
			if _, err := os.Stat(filepath.Join(filepath.Dir(parent), "evil")); err == nil {
				t.Errorf("the escaping entry was written outside the bundle")
			}
		})
	}
}

func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

func TestCacheCodeDir(t *testing.T) {
	data := makeZip(t, bootstrap)
	info, err := Validate(data, model.RuntimeProvided)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	fetched := 0
	c := &Cache{Dir: t.TempDir(), Fetch: func(ctx context.Context, sha string) ([]byte, error) {
		mu.Lock()
		defer mu.Unlock()
		fetched++
		if sha != info.SHA256 {
			return nil, model.ErrNotFound
		}
		return data, nil
	}}
	fn := &model.Function{CodeSHA256: info.SHA256}

	// Concurrent first calls all get the same complete directory.
	var wg sync.WaitGroup
	dirs := make([]string, 4)
	errs := make([]error, 4)
	for i := range dirs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			dirs[i], errs[i] = c.CodeDir(context.Background(), fn)
		}()
	}
	wg.Wait()
	for i := range dirs {
		if errs[i] != nil {
			t.Fatalf("CodeDir: %v", errs[i])
		}
		if dirs[i] != c.Path(info.SHA256) {
			t.Errorf("CodeDir=%s, want %s", dirs[i], c.Path(info.SHA256))
		}
	}
	if _, err := os.Stat(filepath.Join(c.Path(info.SHA256), "bootstrap")); err != nil {
		t.Fatalf("bootstrap not unpacked: %v", err)
	}
	if fetched < 1 {
		t.Fatalf("fetched=%d, want at least 1", fetched)
	}

	// Present on disk: no fetch.
	before := fetched
	if _, err := c.CodeDir(context.Background(), fn); err != nil {
		t.Fatal(err)
	}
	if fetched != before {
		t.Errorf("CodeDir fetched a bundle already on disk")
	}

	// Lost (e.g. a wiped disk): fetched again.
	if err := c.Remove(info.SHA256); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CodeDir(context.Background(), fn); err != nil {
		t.Fatal(err)
	}
	if fetched != before+1 {
		t.Errorf("fetched=%d after Remove, want %d", fetched, before+1)
	}

	// A fetch failure is wrapped.
	_, err = c.CodeDir(context.Background(), &model.Function{CodeSHA256: "missing"})
	if !errors.Is(err, model.ErrNotFound) || !strings.HasPrefix(err.Error(), "cannot fetch code: ") {
		t.Errorf("got %v, want \"cannot fetch code: …\" wrapping ErrNotFound", err)
	}
}

func TestCacheAdd(t *testing.T) {
	var prepared []string
	c := &Cache{Dir: t.TempDir()}
	c.Prepare = func(dir string, rt model.Runtime) error {
		// Runs on the unpacked files before they are renamed into place.
		if filepath.Dir(dir) != c.Dir || dir == c.Path("s1") {
			return fmt.Errorf("prepare ran on %s, want a temporary sibling of the cache entry", dir)
		}
		if rt == model.RuntimePython {
			if err := os.WriteFile(filepath.Join(dir, "prepared"), []byte("yes"), 0o444); err != nil {
				return err
			}
		}
		prepared = append(prepared, string(rt))
		return nil
	}
	if err := c.Add("s1", makeZip(t, entry{name: "a", data: []byte("1")}), model.RuntimePython); err != nil {
		t.Fatal(err)
	}
	// Adding again keeps the first content and does not prepare again.
	if err := c.Add("s1", makeZip(t, entry{name: "a", data: []byte("2")}), model.RuntimePython); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(c.Path("s1"), "a"))
	if err != nil || string(b) != "1" {
		t.Errorf("a=%q (%v), want 1", b, err)
	}
	if b, err := os.ReadFile(filepath.Join(c.Path("s1"), "prepared")); err != nil || string(b) != "yes" {
		t.Errorf("prepared=%q (%v), want yes", b, err)
	}
	if got := strings.Join(prepared, ","); got != "python" {
		t.Errorf("Prepare ran for %q, want python once", got)
	}

	// A failing Prepare fails the Add and leaves nothing in the cache.
	c.Prepare = func(string, model.Runtime) error { return errors.New("compile failed") }
	err = c.Add("s2", makeZip(t, entry{name: "a"}), model.RuntimeNode)
	if err == nil || !strings.Contains(err.Error(), "compile failed") {
		t.Fatalf("got %v, want the Prepare error", err)
	}
	if names := dirNames(t, c.Dir); len(names) != 1 || names[0] != "s1" {
		t.Errorf("cache holds %v after a failed Prepare, want [s1]", names)
	}
}

// Directories may be listed before or after their files, or again.
func TestValidateDirectoriesInAnyOrder(t *testing.T) {
	data := makeZip(t, entry{name: "lib/a.js"}, entry{name: "lib/"}, entry{name: "lib/b/c.js"},
		entry{name: "lib/b/"}, entry{name: "lib/"}, entry{name: "./"})
	if _, err := Validate(data, model.RuntimeNode); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	if err := Unpack(data, filepath.Join(t.TempDir(), "x")); err != nil {
		t.Fatalf("Unpack: %v", err)
	}
}
