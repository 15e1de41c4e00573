package e2e_test

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aloft-dev/aloft/internal/model"
	"github.com/aloft-dev/aloft/internal/node"
)

// TestFunctionFailures checks that every way a function can fail reaches
// the caller in Lambda's shape and leaves the function usable.
func TestFunctionFailures(t *testing.T) {
	h := startNode(t, node.Config{})
	marker := newMarker()
	h.deployGoecho(model.Config{Name: "fail", Timeout: 1, Env: map[string]string{"APP_MARKER": marker}})

	t.Run("handler error", func(t *testing.T) {
		h.t = t
		fe := h.invokeErr("fail", `{"action":"error","text":"boom"}`)
		if fe.ErrorMessage != "boom" || fe.ErrorType != "errorString" {
			t.Errorf("error = %+v, want message boom, type errorString", fe)
		}
	})
	t.Run("timeout", func(t *testing.T) {
		h.t = t
		before := h.invokeOK("fail", `{}`)
		start := time.Now()
		fe := h.invokeErr("fail", `{"action":"sleep","ms":5000}`)
		if !strings.HasSuffix(fe.ErrorMessage, "Task timed out after 1.00 seconds") || fe.ErrorType != model.ErrTypeTimeout {
			t.Errorf("error = %+v, want Sandbox.Timedout: Task timed out after 1.00 seconds", fe)
		}
		if d := time.Since(start); d > 4*time.Second {
			t.Errorf("the timed-out invocation took %v, want about 1s", d)
		}
		// The instance was killed: the next invocation gets a fresh process.
		after := h.invokeOK("fail", `{}`)
		if after["instance"] == before["instance"] {
			t.Errorf("instance %v served again after a timeout, want a fresh instance", after["instance"])
		}
		if pids := processesWith(marker); len(pids) != 1 {
			t.Errorf("processes of the function: %v, want exactly one (the timed-out one is gone)", pids)
		}
		h.waitLogs("fail", "Task timed out after 1.00 seconds", "Status: timeout")
	})
	t.Run("crash", func(t *testing.T) {
		h.t = t
		fe := h.invokeErr("fail", `{"action":"crash"}`)
		if fe.ErrorType != model.ErrTypeExit || !strings.Contains(fe.ErrorMessage, "Runtime exited with error: exit status 3") {
			t.Errorf("error = %+v, want Runtime.ExitError with exit status 3", fe)
		}
		h.invokeOK("fail", `{}`)
		h.waitLogs("fail", "about to crash")
	})
	t.Run("out of memory", func(t *testing.T) {
		h.t = t
		fe := h.invokeErr("fail", `{"action":"alloc","mb":400}`)
		if fe.ErrorType != model.ErrTypeOutOfMemory {
			t.Errorf("error = %+v, want Runtime.OutOfMemory", fe)
		}
		h.waitLogs("fail", "Max Memory Used: 128 MB", "Error Type: Runtime.OutOfMemory")
		h.invokeOK("fail", `{}`)
	})
	t.Run("usage counts each outcome", func(t *testing.T) {
		h.t = t
		eventually(t, 5*time.Second, func() string {
			u, err := h.client.Usage(t.Context(), "fail")
			if err != nil {
				return err.Error()
			}
			if u.Total.Errors < 4 {
				return "errors = " + strconv.FormatInt(u.Total.Errors, 10) + ", want at least 4"
			}
			return ""
		})
	})
}

// TestInitErrors checks that a runtime that cannot load its handler reports
// Lambda's init error types.
func TestInitErrors(t *testing.T) {
	h := startNode(t, node.Config{})
	cases := []struct {
		name     string
		cfg      model.Config
		files    map[string]string
		wantType string
	}{
		{"py-missing-module", model.Config{Runtime: model.RuntimePython, Handler: "nope.handler"},
			map[string]string{"main.py": "def handler(e, c):\n    return 1\n"}, "Runtime.ImportModuleError"},
		{"py-syntax", model.Config{Runtime: model.RuntimePython, Handler: "main.handler"},
			map[string]string{"main.py": "def handler(e, c)\n    return 1\n"}, "Runtime.UserCodeSyntaxError"},
		{"py-missing-handler", model.Config{Runtime: model.RuntimePython, Handler: "main.other"},
			map[string]string{"main.py": "def handler(e, c):\n    return 1\n"}, "Runtime.HandlerNotFound"},
		{"node-missing-handler", model.Config{Runtime: model.RuntimeNode, Handler: "index.other"},
			map[string]string{"index.js": "exports.handler = async () => 1;\n"}, "Runtime.HandlerNotFound"},
		{"node-missing-module", model.Config{Runtime: model.RuntimeNode, Handler: "nope.handler"},
			map[string]string{"index.js": "exports.handler = async () => 1;\n"}, "Runtime.ImportModuleError"},
		{"provided-exits", model.Config{Runtime: model.RuntimeProvided},
			map[string]string{"bootstrap": "#!/bin/sh\necho starting\nexit 2\n"}, model.ErrTypeExit},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h.t = t
			c.cfg.Name = c.name
			h.deployFiles(c.cfg, c.files)
			for i := 0; i < 2; i++ { // the function stays failing, never stuck
				fe := h.invokeErr(c.name, `{}`)
				if fe.ErrorType != c.wantType {
					t.Errorf("attempt %d: errorType = %q (message %q), want %q", i, fe.ErrorType, fe.ErrorMessage, c.wantType)
				}
			}
		})
	}
}

// TestRuntimeAPIStates drives the Runtime API's error answers from inside a
// real instance: a provided runtime written in Python that misbehaves on
// purpose and reports the status codes it got.
func TestRuntimeAPIStates(t *testing.T) {
	h := startNode(t, node.Config{})
	script := `#!/usr/bin/python3
import http.client, json, os, sys
api = os.environ["AWS_LAMBDA_RUNTIME_API"]
def call(method, path, body=b""):
    c = http.client.HTTPConnection(api)
    c.request(method, "/2018-06-01/runtime/" + path, body=body)
    r = c.getresponse()
    data = r.read()
    return r.status, r.headers, data
while True:
    status, headers, body = call("GET", "invocation/next")
    rid = headers["Lambda-Runtime-Aws-Request-Id"]
    deadline = headers["Lambda-Runtime-Deadline-Ms"]
    mode = json.loads(body).get("mode")
    if mode == "states":
        bogus = call("POST", "invocation/not-a-request/response", b"{}")[0]
        first = call("POST", "invocation/%s/response" % rid, json.dumps({"deadline_is_int": deadline.isdigit(), "bogus": bogus}).encode())[0]
        second = call("POST", "invocation/%s/response" % rid, b"{}")[0]
        err_after = call("POST", "invocation/%s/error" % rid, b"{}")[0]
        print("first=%d second=%d error_after=%d" % (first, second, err_after), flush=True)
    elif mode == "big":
        s = call("POST", "invocation/%s/response" % rid, b"x" * (6 * 1024 * 1024 + 200))[0]
        print("big=%d" % s, flush=True)
    elif mode == "error":
        c = http.client.HTTPConnection(api)
        c.request("POST", "/2018-06-01/runtime/invocation/%s/error" % rid,
                  body=json.dumps({"errorMessage": "bad", "errorType": "MyError", "stackTrace": ["a"]}),
                  headers={"Lambda-Runtime-Function-Error-Type": "MyError"})
        print("error=%d" % c.getresponse().status, flush=True)
    else:
        call("POST", "invocation/%s/response" % rid, b"{}")
`
	h.deployFiles(model.Config{Name: "states", Runtime: model.RuntimeProvided}, map[string]string{"bootstrap": script})

	got := h.invokeOK("states", `{"mode":"states"}`)
	if got["bogus"] != float64(400) || got["deadline_is_int"] != true {
		t.Errorf("answer %v, want bogus 400 and an integer deadline", got)
	}

	fe := h.invokeErr("states", `{"mode":"big"}`)
	if fe.ErrorType != model.ErrTypeTooLarge {
		t.Errorf("big response: %+v, want %s", fe, model.ErrTypeTooLarge)
	}

	fe = h.invokeErr("states", `{"mode":"error"}`)
	if fe.ErrorType != "MyError" || fe.ErrorMessage != "bad" {
		t.Errorf("error: %+v, want MyError: bad", fe)
	}
	// What the runtime printed after answering lands in the next invocation's log.
	h.invokeOK("states", `{"mode":"noop"}`)
	eventually(t, 5*time.Second, func() string {
		return contains(h.logs("states"), "first=202 second=403 error_after=403", "big=413", "error=202")
	})
}

// newMarker returns a unique value to put in a function's environment, so
// the test can find the function's processes on the host whatever their
// pid namespace (processesWith).
func newMarker() string {
	var b [8]byte
	rand.Read(b[:])
	return "m" + hex.EncodeToString(b[:])
}

// processesWith returns the host pids of live (non-zombie) processes whose
// environment holds APP_MARKER=marker.
func processesWith(marker string) []int {
	want := []byte("APP_MARKER=" + marker + "\x00")
	var pids []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		env, err := os.ReadFile("/proc/" + e.Name() + "/environ")
		if err != nil || !bytes.Contains(env, want) {
			continue
		}
		stat, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		if i := bytes.LastIndexByte(stat, ')'); i > 0 && i+2 < len(stat) && stat[i+2] == 'Z' {
			continue
		}
		pids = append(pids, pid)
	}
	return pids
}
