package e2e_test

import (
	"archive/zip"
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"mime/multipart"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aloft-dev/aloft/internal/model"
	"github.com/aloft-dev/aloft/internal/node"
	"github.com/aloft-dev/aloft/internal/testfn"
)

// TestFunctionURL checks the function-URL event (payload format 2.0) and
// the mapping of the result back to HTTP, with a binary body both ways.
func TestFunctionURL(t *testing.T) {
	h := startNode(t, node.Config{})
	h.deployFiles(model.Config{Name: "web", Runtime: model.RuntimeNode, Handler: "url.handler"},
		map[string]string{"url.mjs": testfn.NodeURL})

	body := []byte{0, 1, 2, 250, 255, 'a'}
	r := h.do("POST", "/fn/web/a/b?x=1&y=2", body, "Content-Type", "application/octet-stream", "Authorization", "")
	if r.status != 201 {
		t.Fatalf("status %d, body %q, want 201", r.status, r.body)
	}
	want := []byte{'a', 255, 250, 2, 1, 0}
	if !bytes.Equal(r.body, want) {
		t.Errorf("body %v, want the reversed bytes %v", r.body, want)
	}
	for k, v := range map[string]string{"X-Method": "POST", "X-Path": "/a/b", "X-Query": "x=1&y=2", "X-B64": "true", "Content-Type": "application/octet-stream"} {
		if got := r.header.Get(k); got != v {
			t.Errorf("header %s = %q, want %q", k, got, v)
		}
	}
	if c := r.header.Values("Set-Cookie"); len(c) != 2 {
		t.Errorf("Set-Cookie = %v, want two cookies", c)
	}

	// A bare value becomes a 200 JSON body.
	r = h.do("GET", "/fn/web/bare", nil, "Authorization", "")
	if r.status != 200 || r.header.Get("Content-Type") != "application/json" || r.json(t)["bare"] != true {
		t.Errorf("bare: status %d type %q body %s", r.status, r.header.Get("Content-Type"), r.body)
	}

	// url_auth: token needs the bearer token.
	h.deployFiles(model.Config{Name: "private", Runtime: model.RuntimeNode, Handler: "url.handler", URLAuth: "token"},
		map[string]string{"url.mjs": testfn.NodeURL})
	if r := h.do("GET", "/fn/private/bare", nil, "Authorization", ""); r.status != 401 || r.header.Get("X-Amzn-ErrorType") != "UnauthorizedException" {
		t.Errorf("private without token: status %d type %q, want 401 UnauthorizedException", r.status, r.header.Get("X-Amzn-ErrorType"))
	}
	if r := h.do("GET", "/fn/private/bare", nil); r.status != 200 {
		t.Errorf("private with token: status %d, want 200", r.status)
	}
	// A function error is a 502.
	h.deployFiles(model.Config{Name: "urlfail", Runtime: model.RuntimePython},
		map[string]string{"main.py": "def handler(event, context):\n    raise RuntimeError('no')\n"})
	if r := h.do("POST", "/fn/urlfail/", nil, "Authorization", ""); r.status != 502 {
		t.Errorf("function error through a URL: status %d, want 502", r.status)
	}
}

// zipOf builds a zip from name→(mode, content).
func zipOf(t *testing.T, files map[string]os.FileMode, content string) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for name, mode := range files {
		fh := &zip.FileHeader{Name: name, Method: zip.Deflate}
		fh.SetMode(mode)
		w, err := zw.CreateHeader(fh)
		if err != nil {
			t.Fatal(err)
		}
		w.Write([]byte(content))
	}
	zw.Close()
	return buf.Bytes()
}

// deployRaw sends a deploy request with the given config JSON and code.
func (h *harness) deployRaw(name, config string, code []byte) response {
	h.t.Helper()
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	if config != "" {
		mw.WriteField("config", config)
	}
	if code != nil {
		w, _ := mw.CreateFormFile("code", "code.zip")
		w.Write(code)
	}
	mw.Close()
	return h.do("PUT", "/v1/functions/"+name, body.Bytes(), "Content-Type", mw.FormDataContentType())
}

// TestBadInput checks that each bad request gets a clear 4xx in Lambda's
// shape and stores nothing.
func TestBadInput(t *testing.T) {
	h := startNode(t, node.Config{})
	goodZip := zipOf(t, map[string]os.FileMode{"bootstrap": 0o755}, "#!/bin/sh\n")
	cases := []struct {
		name, fn, config string
		code             []byte
		status           int
		errType, msg     string
	}{
		{"unknown config key", "f", `{"runtime":"provided","memroy":128}`, goodZip, 400, "InvalidParameterValueException", "unknown field"},
		{"badly typed key", "f", `{"runtime":"provided","memory":"lots"}`, goodZip, 400, "InvalidParameterValueException", "memory"},
		{"memory out of range", "f", `{"runtime":"provided","memory":64}`, goodZip, 400, "InvalidParameterValueException", "memory 64 MB"},
		{"timeout out of range", "f", `{"runtime":"provided","timeout":901}`, goodZip, 400, "InvalidParameterValueException", "timeout 901"},
		{"unknown runtime", "f", `{"runtime":"cobol"}`, goodZip, 400, "InvalidParameterValueException", "runtime"},
		{"bad name", "bad.name", `{"runtime":"provided"}`, goodZip, 400, "InvalidParameterValueException", "name"},
		{"name mismatch", "f", `{"name":"g","runtime":"provided"}`, goodZip, 400, "InvalidParameterValueException", "names"},
		{"not a zip", "f", `{"runtime":"provided"}`, []byte("hello, not a zip"), 400, "InvalidParameterValueException", "not a zip"},
		{"path escapes", "f", `{"runtime":"provided"}`, zipOf(t, map[string]os.FileMode{"bootstrap": 0o755, "../evil": 0o644}, "x"), 400, "InvalidParameterValueException", "escapes"},
		{"absolute path", "f", `{"runtime":"provided"}`, zipOf(t, map[string]os.FileMode{"bootstrap": 0o755, "/etc/evil": 0o644}, "x"), 400, "InvalidParameterValueException", "invalid path"},
		{"missing bootstrap", "f", `{"runtime":"provided"}`, zipOf(t, map[string]os.FileMode{"main": 0o755}, "x"), 400, "InvalidParameterValueException", "bootstrap"},
		{"bootstrap not executable", "f", `{"runtime":"provided"}`, zipOf(t, map[string]os.FileMode{"bootstrap": 0o644}, "x"), 400, "InvalidParameterValueException", "not executable"},
		{"missing code", "f", `{"runtime":"provided"}`, nil, 400, "InvalidParameterValueException", "code part"},
		{"reserved env", "f", `{"runtime":"provided","env":{"AWS_LAMBDA_RUNTIME_API":"x"}}`, goodZip, 400, "InvalidParameterValueException", "reserved"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h.t = t
			r := h.deployRaw(c.fn, c.config, c.code)
			checkAPIError(t, r, c.status, c.errType, c.msg)
		})
	}
	h.t = t

	// The Invoke API's own bad input.
	h.deployFiles(model.Config{Name: "ok", Runtime: model.RuntimeProvided}, map[string]string{"bootstrap": "#!/bin/sh\nexit 0\n"})
	checkAPIError(t, h.invoke("nope", `{}`), 404, "ResourceNotFoundException", "Function not found: arn:aws:lambda:us-east-1:000000000000:function:nope")
	checkAPIError(t, h.invoke("ok", strings.Repeat("x", 6*1024*1024+1)), 413, "RequestTooLargeException", "6291456")
	checkAPIError(t, h.invoke("ok", `{"unterminated"`), 400, "InvalidRequestContentException", "json")
	for _, cc := range []string{"not base64!", base64.StdEncoding.EncodeToString([]byte(`[1]`)), base64.StdEncoding.EncodeToString([]byte(`null`))} {
		checkAPIError(t, h.invoke("ok", `{}`, "X-Amz-Client-Context", cc), 400, "InvalidRequestContentException", "base64-encoded JSON object")
	}
	bigContext := base64.StdEncoding.EncodeToString([]byte(`{"custom":"` + strings.Repeat("x", 2700) + `"}`))
	checkAPIError(t, h.invoke("ok", `{}`, "X-Amz-Client-Context", bigContext), 400, "InvalidRequestContentException", "more than 3583")
	checkAPIError(t, h.invoke("ok", `{}`, "Authorization", "Bearer wrong"), 401, "UnauthorizedException", "token")
	checkAPIError(t, h.invoke("ok", `{}`, "Authorization", ""), 401, "UnauthorizedException", "token")
	checkAPIError(t, h.do("GET", "/v1/functions", nil, "Authorization", ""), 401, "UnauthorizedException", "token")
	checkAPIError(t, h.do("GET", "/v1/functions/nope", nil), 404, "ResourceNotFoundException", "nope")
	checkAPIError(t, h.do("GET", "/v1/functions/ok/logs?since=yesterday", nil), 400, "InvalidParameterValueException", "since")
	if r := h.invoke("ok", `{}`, "X-Amz-Invocation-Type", "DryRun"); r.status != 204 {
		t.Errorf("DryRun: status %d, want 204", r.status)
	}

	// Nothing but "ok" was stored.
	fns, err := h.client.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(fns) != 1 || fns[0].Name != "ok" {
		t.Errorf("functions after bad input: %v, want only ok", fns)
	}
	codeDirs, _ := os.ReadDir(filepath.Join(h.node.DataDir(), "code"))
	if len(codeDirs) != 1 {
		t.Errorf("%d unpacked bundles, want 1 (bad bundles are not kept)", len(codeDirs))
	}
}

func checkAPIError(t *testing.T, r response, status int, errType, msg string) {
	t.Helper()
	if r.status != status || r.header.Get("X-Amzn-ErrorType") != errType {
		t.Errorf("status %d type %q, want %d %s; body %s", r.status, r.header.Get("X-Amzn-ErrorType"), status, errType, r.body)
		return
	}
	var body struct{ Type, Message string }
	if err := json.Unmarshal(r.body, &body); err != nil || body.Message == "" {
		t.Errorf("body %s is not Lambda's error shape", r.body)
		return
	}
	if !strings.Contains(strings.ToLower(body.Message), strings.ToLower(msg)) {
		t.Errorf("message %q, want it to mention %q", body.Message, msg)
	}
}

// TestRestartKeepsState restarts a node on the same data directory and
// finds its functions, logs and usage there.
func TestRestartKeepsState(t *testing.T) {
	h := startNode(t, node.Config{DataDir: t.TempDir()})
	h.deployGoecho(model.Config{Name: "keep", Env: map[string]string{"APP_GREETING": "hi"}})
	h.invokeOK("keep", `{"action":"print","text":"before restart"}`)
	h.restart()

	fn, err := h.client.Get(context.Background(), "keep")
	if err != nil || fn.Env["APP_GREETING"] != "hi" {
		t.Fatalf("after restart: %+v, %v; want the function with its env", fn, err)
	}
	if msg := contains(h.logs("keep"), "before restart", "REPORT RequestId"); msg != "" {
		t.Errorf("logs after restart: %s", msg)
	}
	h.invokeOK("keep", `{}`)
	// Usage records are written after the response.
	eventually(t, 5*time.Second, func() string {
		u, err := h.client.Usage(context.Background(), "keep")
		if err != nil || u.Total.Invocations != 2 || u.Total.ColdStarts != 2 {
			return fmt.Sprintf("usage after restart: %+v, %v; want 2 invocations, 2 cold starts", u.Total, err)
		}
		return ""
	})
}

// TestDataDirInUse starts a second node on a running node's data
// directory: it is refused, and the first keeps serving; once the first
// stopped, a node starts there again.
func TestDataDirInUse(t *testing.T) {
	dir := t.TempDir()
	h := startNode(t, node.Config{DataDir: dir})
	h.deployGoecho(model.Config{Name: "first"})
	_, err := node.Start(context.Background(), node.Config{DataDir: dir, Listen: "127.0.0.1:0", Isolation: isolation()})
	if !errors.Is(err, node.ErrDataDirInUse) || !strings.Contains(err.Error(), fmt.Sprintf("pid %d", os.Getpid())) {
		t.Fatalf("second node on the same data directory: %v, want ErrDataDirInUse naming pid %d", err, os.Getpid())
	}
	h.invokeOK("first", `{}`)
	h.restart() // stop releases the lock
	h.invokeOK("first", `{}`)
}

// TestGracefulDrain closes a node while an invocation runs: it finishes,
// and no process the function started is left behind.
func TestGracefulDrain(t *testing.T) {
	h := startNode(t, node.Config{})
	marker := newMarker()
	h.deployGoecho(model.Config{Name: "slow", Timeout: 10, Env: map[string]string{"APP_MARKER": marker}})
	h.invokeOK("slow", `{"action":"spawn"}`)
	if pids := processesWith(marker); len(pids) != 2 {
		t.Fatalf("processes of the function: %v, want the runtime and the child it spawned", pids)
	}

	var wg sync.WaitGroup
	var r response
	wg.Add(1)
	go func() {
		defer wg.Done()
		r = h.invoke("slow", `{"action":"sleep","ms":1500}`)
	}()
	time.Sleep(300 * time.Millisecond) // let the invocation start
	h.stop()
	wg.Wait()
	if r.status != 200 || r.header.Get("X-Amz-Function-Error") != "" {
		t.Errorf("in-flight invocation during drain: status %d, error %q, body %s; want it to finish", r.status, r.header.Get("X-Amz-Function-Error"), r.body)
	}
	eventually(t, 5*time.Second, func() string {
		if pids := processesWith(marker); len(pids) > 0 {
			return fmt.Sprintf("processes of the function are still running after the node stopped: %v", pids)
		}
		return ""
	})
}

// TestCLI drives the user's path: init, deploy (Go from source, Python,
// Node), invoke, ls, logs, usage, rm.
func TestCLI(t *testing.T) {
	h := startNode(t, node.Config{})
	work := t.TempDir()
	for _, rt := range []string{"go", "python", "node"} {
		name := "hello-" + rt
		if _, stderr, err := h.runCLI(work, "init", name, "--runtime", rt); err != nil {
			t.Fatalf("init %s: %v %s", rt, err, stderr)
		}
		out, stderr, err := h.runCLI(work, "deploy", name)
		if err != nil {
			t.Fatalf("deploy %s: %v %s", rt, err, stderr)
		}
		if !strings.Contains(out, "/fn/"+name+"/") {
			t.Errorf("deploy %s printed %q, want the function URL", rt, out)
		}
		out, stderr, err = h.runCLI(work, "invoke", name, "--data", `{"name":"cli"}`)
		if err != nil || !strings.Contains(out, "cli") {
			t.Errorf("invoke %s: out %q stderr %q err %v", rt, out, stderr, err)
		}
	}
	fn, err := h.client.Get(context.Background(), "hello-go")
	if err != nil || fn.Runtime != model.RuntimeProvided {
		t.Errorf("hello-go: %+v %v, want runtime provided (built at deploy)", fn.Runtime, err)
	}
	out, _, err := h.runCLI(work, "ls")
	if err != nil || contains(out, "hello-go", "hello-python", "hello-node") != "" {
		t.Errorf("ls: %q %v", out, err)
	}
	// A function error goes to stderr, exit status 1 (an error).
	h.deployGoecho(model.Config{Name: "clifail"})
	out, stderr, err := h.runCLI(work, "invoke", "clifail", "--data", `{"action":"error","text":"nope"}`)
	if err == nil || !strings.Contains(stderr, "nope") || out != "" {
		t.Errorf("failing invoke: out %q stderr %q err %v; want the error on stderr and a failure", out, stderr, err)
	}
	out, _, err = h.runCLI(work, "logs", "hello-python", "--since", "10m")
	if err != nil || contains(out, "START RequestId", "REPORT RequestId", "Init Duration") != "" {
		t.Errorf("logs: %q %v", out, err)
	}
	out, _, err = h.runCLI(work, "usage")
	if err != nil || contains(out, "hello-node", "TOTAL") != "" {
		t.Errorf("usage: %q %v", out, err)
	}
	if _, _, err := h.runCLI(work, "rm", "hello-node"); err != nil {
		t.Errorf("rm: %v", err)
	}
	if _, err := h.client.Get(context.Background(), "hello-node"); err == nil {
		t.Error("hello-node still exists after rm")
	}
	// Bad aloft.yaml: one line, nothing deployed.
	os.WriteFile(filepath.Join(work, "hello-python", "aloft.yaml"), []byte("name: x\nruntime: python\nmemroy: 1\n"), 0o644)
	if _, _, err := h.runCLI(work, "deploy", "hello-python"); err == nil || !strings.Contains(err.Error(), "memroy") {
		t.Errorf("deploy with an unknown key: %v, want an error naming it", err)
	}
	if _, err := h.client.Get(context.Background(), "x"); err == nil {
		t.Error("a bad aloft.yaml deployed a function")
	}
}

// TestDeployPreparesCode checks that deploy leaves the code ready for a
// cold start: unpacked, and for Python byte-compiled.
func TestDeployPreparesCode(t *testing.T) {
	h := startNode(t, node.Config{})
	fn := h.deployFiles(model.Config{Name: "pyc", Runtime: model.RuntimePython, Handler: "app.handler"},
		map[string]string{"app.py": testfn.Python, "lib/util.py": "X = 1\n"})
	dir := filepath.Join(h.node.DataDir(), "code", fn.CodeSHA256)
	for _, p := range []string{"app.py", "__pycache__", "lib/__pycache__"} {
		if _, err := os.Stat(filepath.Join(dir, p)); err != nil {
			t.Errorf("%s after deploy: %v", p, err)
		}
	}
	pycs, _ := filepath.Glob(filepath.Join(dir, "__pycache__", "app.*.pyc"))
	if len(pycs) != 1 {
		t.Errorf("compiled app: %v, want one app.*.pyc", pycs)
	}
	h.invokeOK("pyc", `{}`)
}

// TestLogsFollow follows a function's logs while it is invoked: each
// invocation's lines arrive as it finishes, and the stream ends when the
// client goes away.
func TestLogsFollow(t *testing.T) {
	h := startNode(t, node.Config{})
	h.deployGoecho(model.Config{Name: "tail"})
	h.invokeOK("tail", `{"action":"print","text":"before following"}`)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	rc, err := h.client.Logs(ctx, "tail", "", true)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	lines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(rc)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	want := []string{"before following", "first while following", "second while following"}
	h.invokeOK("tail", `{"action":"print","text":"first while following"}`)
	h.invokeOK("tail", `{"action":"print","text":"second while following"}`)
	deadline := time.After(10 * time.Second)
	for len(want) > 0 {
		select {
		case line, ok := <-lines:
			if !ok {
				t.Fatalf("the log stream ended early; still waiting for %q", want)
			}
			if line == want[0] {
				want = want[1:]
			}
		case <-deadline:
			t.Fatalf("followed logs: still waiting for %q", want)
		}
	}
	cancel()
	end := time.After(5 * time.Second)
	for {
		select {
		case _, ok := <-lines:
			if !ok {
				return
			}
		case <-end:
			t.Fatal("the log stream did not end after the client went away")
		}
	}
}

// TestStartFailsCleanly: a node that cannot listen says why and leaves
// nothing running (no pre-started interpreter, no sandbox).
func TestStartFailsCleanly(t *testing.T) {
	h := startNode(t, node.Config{})
	dir := t.TempDir()
	// Plain processes: their command lines name the data directory.
	_, err := node.Start(context.Background(), node.Config{DataDir: dir, Listen: h.node.Addr(), Isolation: "none"})
	if err == nil || !strings.Contains(err.Error(), "cannot listen") {
		t.Fatalf("start on a taken port: %v, want a cannot-listen error", err)
	}
	// Pools start in the background: give a leak the time to show.
	time.Sleep(1500 * time.Millisecond)
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		for _, f := range []string{"cmdline", "environ"} {
			b, err := os.ReadFile("/proc/" + e.Name() + "/" + f)
			if err == nil && bytes.Contains(b, []byte(dir)) {
				t.Errorf("process %s of the failed node still runs (its %s names %s)", e.Name(), f, dir)
			}
		}
	}
}
