package cli

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/aloft-dev/aloft/internal/manifest"
	"github.com/aloft-dev/aloft/internal/model"
)

func TestScaffoldFiles(t *testing.T) {
	tests := []struct {
		runtime model.Runtime
		files   []string
		handler string // after Normalize
	}{
		{model.RuntimeGo, []string{"aloft.yaml", "go.mod", "go.sum", "main.go"}, "bootstrap"},
		{model.RuntimeNode, []string{"aloft.yaml", "index.mjs"}, "index.handler"},
		{model.RuntimePython, []string{"aloft.yaml", "main.py"}, "main.handler"},
	}
	for _, tt := range tests {
		t.Run(string(tt.runtime), func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "hello-fn")
			files, err := Scaffold(dir, "hello-fn", tt.runtime)
			if err != nil {
				t.Fatalf("Scaffold: %v", err)
			}
			if !reflect.DeepEqual(files, tt.files) {
				t.Fatalf("files=%v, want %v", files, tt.files)
			}
			cfg, err := manifest.Load(dir)
			if err != nil {
				t.Fatalf("the scaffold's manifest: %v", err)
			}
			norm, err := cfg.Normalize()
			if err != nil {
				t.Fatalf("the scaffold's manifest does not validate: %v", err)
			}
			if norm.Name != "hello-fn" || norm.Runtime != tt.runtime || norm.Handler != tt.handler {
				t.Fatalf("manifest=%+v, want name hello-fn, runtime %s, handler %s", norm, tt.runtime, tt.handler)
			}
		})
	}
}

func TestScaffoldRefuses(t *testing.T) {
	full := t.TempDir()
	if err := os.WriteFile(filepath.Join(full, "keep.txt"), []byte("mine"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, dir, fn string
		runtime       model.Runtime
		wantErr       string
	}{
		{"non-empty folder", full, "x", model.RuntimePython, "the folder exists and is not empty"},
		{"bad name", filepath.Join(t.TempDir(), "a"), "no/slash", model.RuntimePython, `name "no/slash" must match`},
		{"unknown runtime", filepath.Join(t.TempDir(), "b"), "x", "ruby", `runtime "ruby" is not one of go, node, python`},
		{"provided has no scaffold", filepath.Join(t.TempDir(), "c"), "x", model.RuntimeProvided, `runtime "provided" is not one of`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Scaffold(tt.dir, tt.fn, tt.runtime)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err=%v, want one containing %q", err, tt.wantErr)
			}
		})
	}
	if b, err := os.ReadFile(filepath.Join(full, "keep.txt")); err != nil || string(b) != "mine" {
		t.Fatalf("keep.txt=%q, %v; want it untouched", b, err)
	}
	// An existing empty folder is fine.
	empty := t.TempDir()
	if _, err := Scaffold(empty, "x", model.RuntimeNode); err != nil {
		t.Fatalf("scaffold into an empty folder: %v", err)
	}
}

func TestScaffoldPythonRuns(t *testing.T) {
	const python = "/usr/bin/python3"
	if _, err := os.Stat(python); err != nil {
		t.Skipf("%s not found", python)
	}
	dir := t.TempDir()
	if _, err := Scaffold(dir, "hello", model.RuntimePython); err != nil {
		t.Fatal(err)
	}
	script := `import json, sys
sys.path.insert(0, sys.argv[1])
import main
print(json.dumps([main.handler({"name": "ann"}, None), main.handler({}, None), main.handler("text", None)]))`
	out, err := exec.Command(python, "-c", script, dir).CombinedOutput()
	if err != nil {
		t.Fatalf("python: %v\n%s", err, out)
	}
	checkHelloResults(t, out)
}

func TestScaffoldNodeRuns(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		if _, err2 := os.Stat("/usr/bin/node"); err2 != nil {
			t.Skip("node not found")
		}
		node = "/usr/bin/node"
	}
	dir := t.TempDir()
	if _, err := Scaffold(dir, "hello", model.RuntimeNode); err != nil {
		t.Fatal(err)
	}
	script := `const m = await import(process.argv[1]);
console.log(JSON.stringify([await m.handler({name: "ann"}, {}), await m.handler({}, {}), await m.handler("text", {})]));`
	out, err := exec.Command(node, "--input-type=module", "-e", script, "file://"+filepath.Join(dir, "index.mjs")).CombinedOutput()
	if err != nil {
		t.Fatalf("node: %v\n%s", err, out)
	}
	checkHelloResults(t, out)
}

func checkHelloResults(t *testing.T, out []byte) {
	t.Helper()
	var got []map[string]string
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("output %q: %v", out, err)
	}
	want := []map[string]string{{"message": "hello, ann"}, {"message": "hello, world"}, {"message": "hello, world"}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
}

// TestScaffoldGoBuilds builds the Go scaffold the way deploy does, offline:
// its go.mod and go.sum must be complete for the module cache that built
// Aloft.
func TestScaffoldGoBuilds(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("no go toolchain on PATH")
	}
	t.Setenv("GOPROXY", "off")
	t.Setenv("GOFLAGS", "-mod=readonly")
	t.Setenv("GOTOOLCHAIN", "local")
	t.Setenv("GOWORK", "off")
	dir := t.TempDir()
	if _, err := Scaffold(dir, "hello", model.RuntimeGo); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "bootstrap")
	var out strings.Builder
	if err := BuildGo(context.Background(), dir, bin, &out); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	info, err := os.Stat(bin)
	if err != nil {
		t.Fatal(err)
	}
	if info.Mode().Perm()&0o111 == 0 {
		t.Fatalf("bootstrap mode=%v, want executable", info.Mode())
	}
}

// TestScaffoldGoVersions checks the embedded aws-lambda-go version and sums
// against Aloft's own go.mod and go.sum, when Aloft requires aws-lambda-go.
func TestScaffoldGoVersions(t *testing.T) {
	gomod, err := os.ReadFile("../../go.mod")
	if err != nil {
		t.Skipf("Aloft's go.mod: %v", err)
	}
	const mod = "github.com/aws/aws-lambda-go "
	var required string
	for _, line := range strings.Split(string(gomod), "\n") {
		if f := strings.Fields(strings.TrimPrefix(strings.TrimSpace(line), "require ")); len(f) >= 2 && f[0]+" " == mod {
			required = f[1]
		}
	}
	if required == "" {
		t.Skip("Aloft's go.mod does not require aws-lambda-go (yet)")
	}
	if required != lambdaVersion {
		t.Fatalf("Aloft requires aws-lambda-go %s, the scaffold %s; update lambdaVersion and templates/go/go.sum.tmpl", required, lambdaVersion)
	}
	gosum, err := os.ReadFile("../../go.sum")
	if err != nil {
		t.Fatal(err)
	}
	embedded, err := templates.ReadFile("templates/go/go.sum.tmpl")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(embedded), "\n") {
		if strings.HasPrefix(line, mod) && !strings.Contains(string(gosum), line) {
			t.Errorf("embedded go.sum line %q is not in Aloft's go.sum", line)
		}
	}
}
