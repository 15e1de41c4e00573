package runtimes

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sync"
	"testing"
	"time"

	"github.com/aloft-dev/aloft/internal/model"
	"github.com/aloft-dev/aloft/internal/runtimeapi"
)

// waitLong bounds every wait on a real process: generous, for a loaded
// 2-core machine.
const waitLong = 60 * time.Second

// instance is a real bootstrap process served by a real runtimeapi.Server
// on a loopback listener.
type instance struct {
	t       testing.TB
	srv     *runtimeapi.Server
	cmd     *exec.Cmd
	out     *lockedBuffer
	done    chan struct{}
	waitErr error
	n       int
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// writeFiles writes name → content under a new temporary task root.
func writeFiles(t testing.TB, files map[string]string) string {
	t.Helper()
	root := t.TempDir()
	for name, content := range files {
		p := filepath.Join(root, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

// testEnv is the instance environment the worker would set, less the
// Runtime API address and handler.
var testEnv = []string{
	"AWS_LAMBDA_FUNCTION_NAME=fn-under-test",
	"AWS_LAMBDA_FUNCTION_VERSION=$LATEST",
	"AWS_LAMBDA_FUNCTION_MEMORY_SIZE=256",
	"AWS_LAMBDA_LOG_GROUP_NAME=/aws/lambda/fn-under-test",
	"AWS_LAMBDA_LOG_STREAM_NAME=2024/01/01/[$LATEST]abc",
	"AWS_REGION=us-east-1",
	"TZ=:UTC",
	"LANG=C.UTF-8",
}

// start extracts the runtimes, serves a Runtime API and starts rt's
// bootstrap with handler over files.
func start(t testing.TB, rt model.Runtime, handler string, files map[string]string, extraEnv ...string) *instance {
	t.Helper()
	return startWith(t, nil, rt, handler, files, extraEnv...)
}

// startWith is start with a hook to configure the Runtime API's http.Server.
func startWith(t testing.TB, configure func(*http.Server), rt model.Runtime, handler string, files map[string]string, extraEnv ...string) *instance {
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
	taskRoot := writeFiles(t, files)

	srv := runtimeapi.New()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: srv}
	if configure != nil {
		configure(hs)
	}
	go hs.Serve(ln)

	inst := &instance{t: t, srv: srv, out: &lockedBuffer{}, done: make(chan struct{})}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Dir = "/"
	cmd.Env = append([]string{
		"PATH=/usr/local/bin:/usr/bin:/bin",
		"AWS_LAMBDA_RUNTIME_API=" + ln.Addr().String(),
		"_HANDLER=" + handler,
		"LAMBDA_TASK_ROOT=" + taskRoot,
		"LAMBDA_RUNTIME_DIR=" + runtimeDir,
	}, append(append([]string{}, testEnv...), extraEnv...)...)
	inst.run(cmd, hs)
	return inst
}

// run starts cmd as the instance's runtime process, reaps it, and stops it
// with its Runtime API server hs when the test ends.
func (inst *instance) run(cmd *exec.Cmd, hs *http.Server) {
	t := inst.t
	t.Helper()
	cmd.Stdout, cmd.Stderr = inst.out, inst.out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	inst.cmd = cmd
	go func() {
		inst.waitErr = cmd.Wait()
		close(inst.done)
	}()
	t.Cleanup(func() {
		inst.srv.Close()
		cmd.Process.Kill()
		<-inst.done
		hs.Close()
		if t.Failed() {
			t.Logf("instance output:\n%s", inst.out.String())
		}
	})
}

// invoke sends payload and waits for the answer; it fails the test when the
// instance does not answer.
func (i *instance) invoke(payload string, opts ...func(*runtimeapi.Invocation)) *runtimeapi.Result {
	i.t.Helper()
	res, err := i.tryInvoke(payload, opts...)
	if err != nil {
		i.t.Fatalf("invoke: %v", err)
	}
	return res
}

func (i *instance) tryInvoke(payload string, opts ...func(*runtimeapi.Invocation)) (*runtimeapi.Result, error) {
	i.n++
	inv := &runtimeapi.Invocation{
		RequestID:          fmt.Sprintf("%08x-0000-4000-8000-%012d", rand.Uint32(), i.n),
		Payload:            []byte(payload),
		Deadline:           time.Now().Add(waitLong),
		InvokedFunctionARN: "arn:aws:lambda:us-east-1:000000000000:function:fn-under-test",
		TraceID:            "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1",
	}
	for _, o := range opts {
		o(inv)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	type answer struct {
		res *runtimeapi.Result
		err error
	}
	ch := make(chan answer, 1)
	go func() {
		res, err := i.srv.Invoke(ctx, inv)
		ch <- answer{res, err}
	}()
	select {
	case a := <-ch:
		return a.res, a.err
	case <-i.done:
		// The process exited; its answer may still be in flight.
		select {
		case a := <-ch:
			return a.res, a.err
		case <-time.After(2 * time.Second):
			return nil, errors.New("instance exited: " + exitString(i.waitErr))
		}
	}
}

func exitString(err error) string {
	if err == nil {
		return "exit status 0"
	}
	return err.Error()
}

// initError waits for the instance to report an init error.
func (i *instance) initError() *runtimeapi.Result {
	i.t.Helper()
	select {
	case <-i.srv.InitFailed():
		return i.srv.InitError()
	case <-i.srv.Ready():
		i.t.Fatal("runtime asked for an invocation instead of reporting an init error")
	case <-i.done:
		select {
		case <-i.srv.InitFailed():
			return i.srv.InitError()
		default:
		}
		i.t.Fatalf("instance exited without reporting an init error: %s", exitString(i.waitErr))
	case <-time.After(waitLong):
		i.t.Fatal("timed out waiting for an init error")
	}
	return nil
}

// exited waits for the process to end and returns its exit code.
func (i *instance) exited() int {
	i.t.Helper()
	select {
	case <-i.done:
	case <-time.After(waitLong):
		i.t.Fatal("timed out waiting for the instance to exit")
	}
	return i.cmd.ProcessState.ExitCode()
}

// errorDoc is the union of the error documents the bootstraps post.
type errorDoc struct {
	ErrorMessage string   `json:"errorMessage"`
	ErrorType    string   `json:"errorType"`
	Trace        []string `json:"trace"`      // Node
	StackTrace   []string `json:"stackTrace"` // Python
	RequestID    *string  `json:"requestId"`  // Python
}

func decodeError(t *testing.T, res *runtimeapi.Result) errorDoc {
	t.Helper()
	if !res.Error {
		t.Fatalf("got success %s, want an error", res.Payload)
	}
	var d errorDoc
	if err := json.Unmarshal(res.Payload, &d); err != nil {
		t.Fatalf("error document %q: %v", res.Payload, err)
	}
	if res.ErrorType != d.ErrorType {
		t.Errorf("got Lambda-Runtime-Function-Error-Type %q, want the document's errorType %q", res.ErrorType, d.ErrorType)
	}
	return d
}

func wantPayload(t *testing.T, res *runtimeapi.Result, want string) {
	t.Helper()
	if res.Error {
		t.Fatalf("got error %s (%s), want %s", res.Payload, res.ErrorType, want)
	}
	if !jsonEqual(res.Payload, []byte(want)) {
		t.Errorf("got payload %s, want %s", res.Payload, want)
	}
}

func jsonEqual(a, b []byte) bool {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return bytes.Equal(a, b)
	}
	ja, _ := json.Marshal(x)
	jb, _ := json.Marshal(y)
	return bytes.Equal(ja, jb)
}

// waitOutput waits until the instance's output matches re: output travels
// through a pipe and may trail the invocation's answer.
func (i *instance) waitOutput(re *regexp.Regexp) bool {
	i.t.Helper()
	deadline := time.Now().Add(waitLong)
	for {
		if re.MatchString(i.out.String()) {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
}
