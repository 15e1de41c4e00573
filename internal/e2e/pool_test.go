package e2e_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"log/slog"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aloft-dev/aloft/internal/model"
	"github.com/aloft-dev/aloft/internal/node"
	"github.com/aloft-dev/aloft/internal/testfn"
)

// syncBuffer is a bytes.Buffer safe for a logger and a test to share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startPoolNode starts a node with pools of size (negative: none) and a
// debug log the test can read.
func startPoolNode(t *testing.T, size int) (*harness, *syncBuffer) {
	t.Helper()
	log := &syncBuffer{}
	h := startNode(t, node.Config{PoolSize: size,
		Logger: slog.New(slog.NewTextHandler(log, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	return h, log
}

// waitPool waits until rt's pool holds n ready instances.
func (h *harness) waitPool(rt model.Runtime, n int) {
	h.t.Helper()
	eventually(h.t, 60*time.Second, func() string {
		if c := h.node.PoolCounts()[rt]; c.Warm != n {
			return fmt.Sprintf("pool of %s: %d ready, %d starting; want %d ready", rt, c.Warm, c.Busy, n)
		}
		return ""
	})
}

var initDurationRE = regexp.MustCompile(`Init Duration: ([0-9.]+) ms`)

// invokeTail invokes with X-Amz-Log-Type: Tail and returns the answer, the
// log tail and the REPORT line's Init Duration (-1 when absent).
func (h *harness) invokeTail(name, payload string) (response, string, float64) {
	h.t.Helper()
	r := h.invoke(name, payload, "X-Amz-Log-Type", "Tail")
	tail, err := base64.StdEncoding.DecodeString(r.header.Get("X-Amz-Log-Result"))
	if err != nil {
		h.t.Fatalf("X-Amz-Log-Result: %v", err)
	}
	m := initDurationRE.FindSubmatch(tail)
	if m == nil {
		return r, string(tail), -1
	}
	d, _ := strconv.ParseFloat(string(m[1]), 64)
	return r, string(tail), d
}

// specialised reports whether the node's log says fn got a pooled instance.
func specialised(log *syncBuffer, fn string) bool {
	for _, line := range strings.Split(log.String(), "\n") {
		if strings.Contains(line, `msg="specialised pooled instance"`) && strings.Contains(line, " function="+fn+" ") {
			return true
		}
	}
	return false
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}

// poolFunctions are the functions of the pool tests, by runtime: files and
// handler of a function echoing its context (testfn).
var poolFunctions = []struct {
	rt      model.Runtime
	handler string
	files   map[string]string
}{
	{model.RuntimeNode, "index.handler", map[string]string{"index.js": testfn.NodeCommonJS}},
	{model.RuntimePython, "app.handler", map[string]string{"app.py": testfn.Python}},
}

// TestPooledColdStart checks that a cold start served by a pre-started
// instance behaves like a fresh one (context, environment, code, memory
// limit, warm reuse), reports a smaller Init Duration than a cold start on
// a node without pools, and that the pool refills.
func TestPooledColdStart(t *testing.T) {
	pooledNode, log := startPoolNode(t, 2)
	plainNode, _ := startPoolNode(t, -1)
	env := map[string]string{"APP_GREETING": "hi"}
	const samples = 3
	for _, f := range poolFunctions {
		t.Run(string(f.rt), func(t *testing.T) {
			pooledNode.t, plainNode.t = t, t
			var pooled, unpooled, pooledRT, unpooledRT []float64
			for i := range samples {
				pooledNode.waitPool(f.rt, 2)
				name := fmt.Sprintf("pooled-%s-%d", f.rt, i)
				pooledNode.deployFiles(model.Config{Name: name, Runtime: f.rt, Handler: f.handler, Memory: 256, Env: env}, f.files)
				begin := time.Now()
				r, tail, initMs := pooledNode.invokeTail(name, `{"value":"v1"}`)
				pooledRT = append(pooledRT, float64(time.Since(begin).Microseconds())/1000)
				if r.status != 200 || r.header.Get("X-Amz-Function-Error") != "" {
					t.Fatalf("pooled invoke: status %d, function error %q, body %s\nlog:\n%s", r.status, r.header.Get("X-Amz-Function-Error"), r.body, tail)
				}
				if !specialised(log, name) {
					t.Fatalf("%s did not get a pooled instance; node log:\n%s", name, log.String())
				}
				if initMs < 0 {
					t.Fatalf("pooled cold start has no Init Duration in its REPORT:\n%s", tail)
				}
				pooled = append(pooled, initMs)
				got := r.json(t)
				checkContext(t, got, name, 256, r.header.Get("X-Amzn-RequestId"))
				if got["value"] != "v1" {
					t.Errorf("value = %v, want v1", got["value"])
				}
				// Warm reuse of the same, now ordinary, instance.
				r2, tail2, init2 := pooledNode.invokeTail(name, `{"value":"v2"}`)
				again := r2.json(t)
				if init2 >= 0 || again["instance"] != got["instance"] || num(again["invocations"]) != 2 {
					t.Errorf("second invocation: instance %v invocations %v init %v, want instance %v invocations 2 and no Init Duration\n%s",
						again["instance"], again["invocations"], init2, got["instance"], tail2)
				}

				plainName := fmt.Sprintf("plain-%s-%d", f.rt, i)
				plainNode.deployFiles(model.Config{Name: plainName, Runtime: f.rt, Handler: f.handler, Memory: 256, Env: env}, f.files)
				begin = time.Now()
				pr, ptail, pInit := plainNode.invokeTail(plainName, `{"value":"v1"}`)
				unpooledRT = append(unpooledRT, float64(time.Since(begin).Microseconds())/1000)
				if pr.status != 200 || pr.header.Get("X-Amz-Function-Error") != "" || pInit < 0 {
					t.Fatalf("unpooled invoke: status %d, function error %q, body %s\n%s", pr.status, pr.header.Get("X-Amz-Function-Error"), pr.body, ptail)
				}
				unpooled = append(unpooled, pInit)
			}
			t.Logf("%s Init Duration: pooled %v ms, unpooled %v ms", f.rt, pooled, unpooled)
			t.Logf("%s cold start, request to response: pooled %v ms, unpooled %v ms", f.rt, pooledRT, unpooledRT)
			if p, u := median(pooled), median(unpooled); p >= u {
				t.Errorf("median pooled Init Duration %.2f ms, want less than the unpooled %.2f ms", p, u)
			}
			// Taking instances started new ones.
			pooledNode.waitPool(f.rt, 2)
		})
	}
}

// TestPooledMemoryLimit checks that a pooled instance runs with its
// function's memory limit, not the pool's smaller start limit: 200 MB fit in
// 320 MB (and not in 128).
func TestPooledMemoryLimit(t *testing.T) {
	h, log := startPoolNode(t, 1)
	h.waitPool(model.RuntimePython, 1)
	h.deployFiles(model.Config{Name: "pymem", Runtime: model.RuntimePython, Handler: "app.handler", Memory: 320},
		map[string]string{"app.py": testfn.Python})
	h.invokeOK("pymem", `{"action":"alloc","mb":200}`)
	if !specialised(log, "pymem") {
		t.Fatalf("pymem did not get a pooled instance; node log:\n%s", log.String())
	}
	// The limit still holds: far past it, the instance is killed.
	h.waitPool(model.RuntimePython, 1)
	h.deployFiles(model.Config{Name: "pyoom", Runtime: model.RuntimePython, Handler: "app.handler", Memory: 160},
		map[string]string{"app.py": testfn.Python})
	fe := h.invokeErr("pyoom", `{"action":"alloc","mb":400}`)
	if fe.ErrorType != model.ErrTypeOutOfMemory {
		t.Errorf("errorType = %q, want %s (%s)", fe.ErrorType, model.ErrTypeOutOfMemory, fe.ErrorMessage)
	}
	if !specialised(log, "pyoom") {
		t.Fatalf("pyoom did not get a pooled instance; node log:\n%s", log.String())
	}
}

// TestPooledInitErrors checks that init errors of pooled instances are
// reported as they are without pools.
func TestPooledInitErrors(t *testing.T) {
	pooledNode, log := startPoolNode(t, 1)
	plainNode, _ := startPoolNode(t, -1)
	cases := []struct {
		name    string
		rt      model.Runtime
		handler string
		files   map[string]string
		errType string
	}{
		{"node-throws", model.RuntimeNode, "index.handler",
			map[string]string{"index.js": `throw new TypeError("broken at import");`}, "TypeError"},
		{"node-missing", model.RuntimeNode, "index.nope",
			map[string]string{"index.js": `exports.handler = async () => 1;`}, "Runtime.HandlerNotFound"},
		{"python-raises", model.RuntimePython, "app.handler",
			map[string]string{"app.py": "raise RuntimeError('broken at import')\n"}, "RuntimeError"},
		{"python-no-module", model.RuntimePython, "nomodule.handler",
			map[string]string{"app.py": "def handler(e, c): return 1\n"}, "Runtime.ImportModuleError"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			pooledNode.t, plainNode.t = t, t
			pooledNode.waitPool(c.rt, 1)
			cfg := model.Config{Name: c.name, Runtime: c.rt, Handler: c.handler}
			pooledNode.deployFiles(cfg, c.files)
			plainNode.deployFiles(cfg, c.files)
			got := pooledNode.invokeErr(c.name, `{}`)
			want := plainNode.invokeErr(c.name, `{}`)
			if !specialised(log, c.name) {
				t.Fatalf("%s did not get a pooled instance; node log:\n%s", c.name, log.String())
			}
			if got.ErrorType != c.errType || got.ErrorType != want.ErrorType || got.ErrorMessage != want.ErrorMessage {
				t.Errorf("pooled error %q: %q, want %s as without pools (%q: %q)",
					got.ErrorType, got.ErrorMessage, c.errType, want.ErrorType, want.ErrorMessage)
			}
			eventually(t, 10*time.Second, func() string {
				return contains(pooledNode.logs(c.name), "Init Duration", "Status: error", "Error Type: "+c.errType)
			})
		})
	}
}

// isolationProbe reports what a function can see and do.
const isolationProbe = `import os

def handler(event, context):
    r = {"uid": os.getuid(), "cwd": os.getcwd(), "files": sorted(os.listdir(os.environ["LAMBDA_TASK_ROOT"])),
         "pids": len([p for p in os.listdir("/proc") if p.isdigit()]),
         "host_data": os.path.exists(event["data_dir"])}
    try:
        open(os.path.join(os.environ["LAMBDA_TASK_ROOT"], "x"), "w").close()
        r["task_writable"] = True
    except OSError:
        r["task_writable"] = False
    return r
`

// TestPooledIsolation checks that a pooled instance is as isolated as a
// fresh one: it sees its own code only, read-only, runs unprivileged in its
// own pid namespace and cannot see the host's data directory.
func TestPooledIsolation(t *testing.T) {
	h, log := startPoolNode(t, 1)
	if h.node.Isolation().Level != "isolated" {
		t.Skip("the node does not isolate instances on this host (needs root, namespaces and cgroups)")
	}
	h.waitPool(model.RuntimePython, 1)
	h.deployFiles(model.Config{Name: "probe", Runtime: model.RuntimePython, Handler: "probe.handler"},
		map[string]string{"probe.py": isolationProbe, "data/blob.txt": "x"})
	payload, _ := json.Marshal(map[string]string{"data_dir": h.node.DataDir()})
	got := h.invokeOK("probe", string(payload))
	if !specialised(log, "probe") {
		t.Fatalf("probe did not get a pooled instance; node log:\n%s", log.String())
	}
	if uid := num(got["uid"]); uid == 0 {
		t.Errorf("uid = %v, want an unprivileged one", uid)
	}
	if got["cwd"] != "/var/task" {
		t.Errorf("cwd = %v, want /var/task", got["cwd"])
	}
	// __pycache__ is the function's own code, byte-compiled at deploy.
	if files := fmt.Sprint(got["files"]); files != "[__pycache__ data probe.py]" {
		t.Errorf("task root holds %s, want [__pycache__ data probe.py]", files)
	}
	if got["task_writable"] != false {
		t.Errorf("task root writable = %v, want false", got["task_writable"])
	}
	if got["host_data"] != false {
		t.Errorf("host data directory visible = %v, want false", got["host_data"])
	}
	if n := num(got["pids"]); n > 3 {
		t.Errorf("%v processes visible, want the instance's own only", n)
	}
}
