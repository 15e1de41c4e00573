package runtimes

import (
	"encoding/json"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/aloft-dev/aloft/internal/model"
	"github.com/aloft-dev/aloft/internal/runtimeapi"
)

// startPooled starts rt's bootstrap in pool mode (no function yet) over an
// empty task root, as the worker's pools do, and waits until it asks to be
// specialised. It returns the instance and its task root.
func startPooled(t *testing.T, rt model.Runtime) (*instance, string) {
	t.Helper()
	if _, err := Interpreter(rt); err != nil {
		t.Skipf("no interpreter for %s on this host: %v", rt, err)
	}
	runtimeDir, err := Extract(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	args, err := Command(rt, runtimeDir)
	if err != nil {
		t.Fatal(err)
	}
	taskRoot := t.TempDir()
	srv := runtimeapi.New()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: srv}
	go hs.Serve(ln)

	inst := &instance{t: t, srv: srv, out: &lockedBuffer{}, done: make(chan struct{})}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Dir = taskRoot
	cmd.Env = []string{
		"PATH=/usr/local/bin:/usr/bin:/bin",
		"AWS_LAMBDA_RUNTIME_API=" + ln.Addr().String(),
		"LAMBDA_TASK_ROOT=" + taskRoot,
		"LAMBDA_RUNTIME_DIR=" + runtimeDir,
		"TZ=:UTC",
		"LANG=C.UTF-8",
		"ALOFT_POOL=1",
	}
	inst.run(cmd, hs)
	select {
	case <-srv.PoolReady():
	case <-srv.Ready():
		t.Fatal("runtime in pool mode asked for an invocation before it was specialised")
	case <-inst.done:
		t.Fatalf("runtime exited while starting in pool mode: %s", exitString(inst.waitErr))
	case <-time.After(waitLong):
		t.Fatal("runtime did not ask to be specialised")
	}
	return inst, taskRoot
}

// specialize writes the function's files into the task root and hands the
// runtime the function's environment.
func (i *instance) specialize(taskRoot, handler string, files map[string]string) {
	i.t.Helper()
	for name, content := range files {
		p := filepath.Join(taskRoot, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			i.t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			i.t.Fatal(err)
		}
	}
	env := map[string]string{"_HANDLER": handler, "LAMBDA_TASK_ROOT": taskRoot, "APP_COLOR": "blue"}
	for _, kv := range testEnv {
		k, v, _ := cutEnv(kv)
		env[k] = v
	}
	if err := i.srv.Specialize(env); err != nil {
		i.t.Fatal(err)
	}
	if err := i.srv.Specialize(env); err != runtimeapi.ErrSpecialized {
		i.t.Errorf("second Specialize: got %v, want ErrSpecialized", err)
	}
}

func cutEnv(kv string) (string, string, bool) {
	for j := 0; j < len(kv); j++ {
		if kv[j] == '=' {
			return kv[:j], kv[j+1:], true
		}
	}
	return kv, "", false
}

// TestPoolMode starts each bootstrap in pool mode, then gives it a function
// whose code appeared in the task root meanwhile: the handler must find its
// code (and sibling modules), its environment and its context.
func TestPoolMode(t *testing.T) {
	nodeHandler := `const fs = require("fs");
const lib = require("./lib");
exports.handler = async (event, context) => ({
  color: process.env.APP_COLOR, handler: process.env._HANDLER, pool: process.env.ALOFT_POOL ?? null,
  function_name: context.functionName, memory: context.memoryLimitInMB, cwd: process.cwd(),
  data: fs.readFileSync("data.txt", "utf8"), lib: lib.name, event,
});
`
	cases := []struct {
		name    string
		rt      model.Runtime
		handler string
		files   map[string]string
	}{
		{"node-cjs", model.RuntimeNode, "index.handler", map[string]string{
			"index.js": nodeHandler, "lib.js": `exports.name = "lib";`, "data.txt": "code",
		}},
		{"node-esm", model.RuntimeNode, "src/app.handler", map[string]string{
			"src/app.mjs": `import fs from "node:fs";
import { name } from "./lib.mjs";
export const handler = async (event, context) => ({
  color: process.env.APP_COLOR, handler: process.env._HANDLER, pool: process.env.ALOFT_POOL ?? null,
  function_name: context.functionName, memory: context.memoryLimitInMB, cwd: process.cwd(),
  data: fs.readFileSync("data.txt", "utf8"), lib: name, event,
});
`,
			"src/lib.mjs": `export const name = "lib";`, "data.txt": "code",
		}},
		{"python", model.RuntimePython, "pkg.app.handler", map[string]string{
			"pkg/__init__.py": "",
			"pkg/app.py": `import os
import helper

def handler(event, context):
    return {"color": os.environ.get("APP_COLOR"), "handler": os.environ.get("_HANDLER"),
            "pool": os.environ.get("ALOFT_POOL"), "function_name": context.function_name,
            "memory": context.memory_limit_in_mb, "cwd": os.getcwd(),
            "data": open("data.txt").read(), "lib": helper.name, "event": event}
`,
			"helper.py": `name = "lib"`, "data.txt": "code",
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			inst, taskRoot := startPooled(t, c.rt)
			inst.specialize(taskRoot, c.handler, c.files)
			res := inst.invoke(`{"n":1}`)
			var got map[string]any
			if err := json.Unmarshal(res.Payload, &got); err != nil || res.Error {
				t.Fatalf("got %s (error %v), want the handler's answer", res.Payload, res.Error)
			}
			cwd, _ := filepath.EvalSymlinks(taskRoot)
			want := map[string]any{
				"color": "blue", "handler": c.handler, "pool": nil, "function_name": "fn-under-test",
				"memory": "256", "cwd": cwd, "data": "code", "lib": "lib", "event": map[string]any{"n": 1.0},
			}
			for k, w := range want {
				g, _ := json.Marshal(got[k])
				wb, _ := json.Marshal(w)
				if string(g) != string(wb) {
					t.Errorf("%s: got %s, want %s", k, g, wb)
				}
			}
			// The instance goes on serving as usual.
			if res := inst.invoke(`{"n":2}`); res.Error {
				t.Errorf("second invocation: got error %s", res.Payload)
			}
		})
	}
}

// TestPoolModeInitErrors checks that a handler that fails to load after
// specialisation is reported through /init/error, as without pool mode.
func TestPoolModeInitErrors(t *testing.T) {
	cases := []struct {
		name    string
		rt      model.Runtime
		handler string
		files   map[string]string
		errType string
	}{
		{"node-import", model.RuntimeNode, "missing.handler", map[string]string{"index.js": ""}, "Runtime.ImportModuleError"},
		{"node-throws", model.RuntimeNode, "index.handler",
			map[string]string{"index.js": `throw new RangeError("at import");`}, "RangeError"},
		{"python-import", model.RuntimePython, "missing.handler", map[string]string{"app.py": ""}, "Runtime.ImportModuleError"},
		{"python-raises", model.RuntimePython, "app.handler",
			map[string]string{"app.py": `raise KeyError("at import")`}, "KeyError"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			inst, taskRoot := startPooled(t, c.rt)
			inst.specialize(taskRoot, c.handler, c.files)
			d := decodeError(t, inst.initError())
			if d.ErrorType != c.errType {
				t.Errorf("got errorType %q (%s), want %s", d.ErrorType, d.ErrorMessage, c.errType)
			}
			if code := inst.exited(); code == 0 {
				t.Errorf("got exit code 0, want a failure")
			}
		})
	}
}

// TestPoolModeClosed checks that a pooled runtime whose instance goes away
// before it got a function exits instead of waiting forever.
func TestPoolModeClosed(t *testing.T) {
	for _, rt := range []model.Runtime{model.RuntimeNode, model.RuntimePython} {
		t.Run(string(rt), func(t *testing.T) {
			inst, _ := startPooled(t, rt)
			inst.srv.Close()
			if code := inst.exited(); code == 0 {
				t.Errorf("got exit code 0, want a failure")
			}
		})
	}
}
