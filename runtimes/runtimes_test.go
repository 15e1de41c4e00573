package runtimes

import (
	"errors"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aloft-dev/aloft/internal/model"
)

func TestExtract(t *testing.T) {
	dir := t.TempDir()
	got, err := Extract(dir)
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(dir, Version()); got != want {
		t.Fatalf("got runtime dir %s, want %s", got, want)
	}
	for _, name := range []string{NodeBootstrap, PythonBootstrap} {
		b, err := os.ReadFile(filepath.Join(got, name))
		if err != nil {
			t.Fatal(err)
		}
		want, _ := files.ReadFile(name)
		if string(b) != string(want) {
			t.Errorf("%s: extracted content differs from the embedded one", name)
		}
	}
	// Readable by an unprivileged instance user.
	err = filepath.WalkDir(got, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		want := fs.FileMode(0o644)
		if d.IsDir() {
			want = 0o755
		}
		if fi.Mode().Perm() != want {
			t.Errorf("%s: got mode %v, want %v", p, fi.Mode().Perm(), want)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	// Again: the same directory, nothing else left behind.
	again, err := Extract(dir)
	if err != nil || again != got {
		t.Fatalf("second Extract: got %s, %v; want %s, nil", again, err, got)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("got %d entries in %s, want only the runtime dir", len(entries), dir)
	}
}

func TestExtractConcurrent(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "nested", "runtimes")
	var wg sync.WaitGroup
	results := make([]string, 8)
	errs := make([]error, 8)
	for i := range results {
		wg.Go(func() { results[i], errs[i] = Extract(dir) })
	}
	wg.Wait()
	for i := range results {
		if errs[i] != nil || results[i] != filepath.Join(dir, Version()) {
			t.Errorf("Extract %d: got %s, %v; want %s, nil", i, results[i], errs[i], filepath.Join(dir, Version()))
		}
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("got %d entries in %s, want only the runtime dir", len(entries), dir)
	}
}

func TestCommand(t *testing.T) {
	interps := Interpreters()
	tests := []struct {
		name    string
		runtime model.Runtime
		want    []string
		wantErr error
	}{
		{"node", model.RuntimeNode, []string{interps[model.RuntimeNode], "/var/runtime/node/bootstrap.mjs"}, nil},
		{"python", model.RuntimePython, []string{interps[model.RuntimePython], "-s", "/var/runtime/python/bootstrap.py"}, nil},
		{"provided has no bootstrap", model.RuntimeProvided, nil, model.ErrInvalid},
		{"unknown runtime", model.Runtime("ruby"), nil, model.ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.wantErr == nil && tt.want[0] == "" {
				t.Skipf("no interpreter for %s on this host", tt.runtime)
			}
			got, err := Command(tt.runtime, "/var/runtime")
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("got error %v, want %v", err, tt.wantErr)
			}
			if mustJSON(got) != mustJSON(tt.want) {
				t.Errorf("got %q, want %q", got, tt.want)
			}
			if err != nil {
				return
			}
			if !filepath.IsAbs(got[0]) {
				t.Errorf("got interpreter %s, want an absolute path", got[0])
			}
			if fi, err := os.Lstat(got[0]); err != nil || fi.Mode()&fs.ModeSymlink != 0 || fi.Mode()&0o111 == 0 {
				t.Errorf("interpreter %s: want an executable file, not a link (%v, %v)", got[0], fi, err)
			}
		})
	}
}

// TestWarmInvocations runs many invocations on one instance of each runtime
// (under -race it exercises the Runtime API server with real clients). It
// logs the mean warm round trip but asserts nothing about speed.
func TestWarmInvocations(t *testing.T) {
	cases := []struct {
		name    string
		runtime model.Runtime
		handler string
		files   map[string]string
	}{
		{"node", model.RuntimeNode, "index.handler", map[string]string{
			"index.js": `let n = 0; exports.handler = async (e) => ({ n: ++n, echo: e.i });`}},
		{"python", model.RuntimePython, "main.handler", map[string]string{
			"main.py": "n = 0\ndef handler(e, c):\n    global n\n    n += 1\n    return {'n': n, 'echo': e['i']}\n"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			inst := start(t, c.runtime, c.handler, c.files)
			inst.invoke(`{"i": 0}`) // cold
			const n = 50
			began := time.Now()
			for i := 1; i <= n; i++ {
				s := strconv.Itoa(i)
				wantPayload(t, inst.invoke(`{"i": `+s+`}`), `{"n": `+strconv.Itoa(i+1)+`, "echo": `+s+`}`)
			}
			t.Logf("%s: %d warm invocations, mean %v", c.name, n, time.Since(began)/n)
		})
	}
}

func BenchmarkWarmNode(b *testing.B) {
	benchmarkWarm(b, model.RuntimeNode, "index.handler", map[string]string{
		"index.js": `exports.handler = async (e) => ({ ok: true, echo: e });`})
}

func BenchmarkWarmPython(b *testing.B) {
	benchmarkWarm(b, model.RuntimePython, "main.handler", map[string]string{
		"main.py": "def handler(e, c):\n    return {'ok': True, 'echo': e}\n"})
}

func benchmarkWarm(b *testing.B, rt model.Runtime, handler string, files map[string]string) {
	inst := start(b, rt, handler, files)
	inst.invoke(`{}`)
	b.ResetTimer()
	for b.Loop() {
		if res := inst.invoke(`{"k":"v"}`); res.Error {
			b.Fatalf("got error %s", res.Payload)
		}
	}
}

// BenchmarkCold measures start-up to the first answer.
func BenchmarkColdNode(b *testing.B) {
	for b.Loop() {
		inst := start(b, model.RuntimeNode, "index.handler", map[string]string{"index.js": `exports.handler = async () => 1;`})
		inst.invoke(`{}`)
	}
}

func BenchmarkColdPython(b *testing.B) {
	for b.Loop() {
		inst := start(b, model.RuntimePython, "main.handler", map[string]string{"main.py": "def handler(e, c):\n    return 1\n"})
		inst.invoke(`{}`)
	}
}

// TestConnectionClose: a Runtime API server that closes every connection
// after one request (Connection: close) still serves both bootstraps, which
// then reconnect for each request.
func TestConnectionClose(t *testing.T) {
	cases := []struct {
		name    string
		runtime model.Runtime
		handler string
		files   map[string]string
	}{
		{"node", model.RuntimeNode, "index.handler", map[string]string{"index.js": `exports.handler = async (e) => e.i;`}},
		{"python", model.RuntimePython, "main.handler", map[string]string{"main.py": "def handler(e, c):\n    return e['i']\n"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			inst := startWith(t, func(hs *http.Server) { hs.SetKeepAlivesEnabled(false) }, c.runtime, c.handler, c.files)
			for i := range 5 {
				s := strconv.Itoa(i)
				wantPayload(t, inst.invoke(`{"i": `+s+`}`), s)
			}
		})
	}
}

// TestLargePayloads: multi-megabyte events and responses cross the Runtime
// API intact, and a response over the limit is reported as too large
// without breaking the instance.
func TestLargePayloads(t *testing.T) {
	cases := []struct {
		name    string
		runtime model.Runtime
		handler string
		files   map[string]string
	}{
		{"node", model.RuntimeNode, "index.handler", map[string]string{
			"index.js": `exports.handler = async (e) => e.big ? "x".repeat(7 * 1024 * 1024) : { s: e.s, len: e.s.length };`}},
		{"python", model.RuntimePython, "main.handler", map[string]string{
			"main.py": "def handler(e, c):\n    if e.get('big'):\n        return 'x' * (7 * 1024 * 1024)\n    return {'s': e['s'], 'len': len(e['s'])}\n"}},
	}
	s := strings.Repeat("abcdefgh", 3*1024*1024/8) // 3 MiB
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			inst := start(t, c.runtime, c.handler, c.files)
			want := `{"s":"` + s + `","len":` + strconv.Itoa(len(s)) + `}`
			wantPayload(t, inst.invoke(`{"s":"`+s+`"}`), want)

			res := inst.invoke(`{"big": true}`)
			if !res.TooLarge || res.ErrorType != model.ErrTypeTooLarge {
				t.Errorf("got TooLarge %v, error type %q; want true, %q", res.TooLarge, res.ErrorType, model.ErrTypeTooLarge)
			}
			wantPayload(t, inst.invoke(`{"s":"after"}`), `{"s":"after","len":5}`)
		})
	}
}
