// Package e2e_test runs a real Aloft node in-process (embedded JetStream,
// real instances, temp data directory, random port) and drives it over
// HTTP and through the CLI, as users do.
package e2e_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aloft-dev/aloft/internal/cli"
	"github.com/aloft-dev/aloft/internal/model"
	"github.com/aloft-dev/aloft/internal/node"
	"github.com/aloft-dev/aloft/internal/testfn"
)

// isolation is the node's --isolation for these tests (ALOFT_TEST_ISOLATION,
// default auto: isolated where the host allows).
func isolation() string {
	if v := os.Getenv("ALOFT_TEST_ISOLATION"); v != "" {
		return v
	}
	return "auto"
}

type harness struct {
	t      *testing.T
	cfg    node.Config
	node   *node.Node
	client *cli.Client
}

// startNode starts a node on a fresh data directory (or cfg.DataDir) and
// closes it when the test ends.
func startNode(t *testing.T, cfg node.Config) *harness {
	t.Helper()
	if cfg.DataDir == "" {
		cfg.DataDir = t.TempDir()
	}
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:0"
	}
	if cfg.Isolation == "" {
		cfg.Isolation = isolation()
	}
	if cfg.Grace == 0 {
		cfg.Grace = 10 * time.Second
	}
	h := &harness{t: t, cfg: cfg}
	h.start()
	t.Cleanup(func() { h.stop() })
	return h
}

func (h *harness) start() {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	n, err := node.Start(ctx, h.cfg)
	if err != nil {
		h.t.Fatalf("cannot start node: %v", err)
	}
	h.node = n
	h.cfg.Listen = n.Addr() // a restart keeps the address
	h.client = &cli.Client{BaseURL: n.URL(), Token: n.Token()}
}

func (h *harness) stop() {
	if h.node != nil {
		if err := h.node.Close(); err != nil {
			h.t.Errorf("node close: %v", err)
		}
		h.node = nil
	}
}

func (h *harness) restart() {
	h.t.Helper()
	h.stop()
	h.start()
}

// deployDir deploys the folder dir with cfg.
func (h *harness) deployDir(cfg model.Config, dir string) cli.Function {
	h.t.Helper()
	var zip bytes.Buffer
	if err := cli.ZipDir(&zip, dir); err != nil {
		h.t.Fatal(err)
	}
	fn, err := h.client.Deploy(context.Background(), cfg.Name, cfg, &zip, int64(zip.Len()), nil)
	if err != nil {
		h.t.Fatalf("deploy %s: %v", cfg.Name, err)
	}
	return fn
}

// deployFiles writes files into a temp folder and deploys it.
func (h *harness) deployFiles(cfg model.Config, files map[string]string) cli.Function {
	h.t.Helper()
	dir := h.t.TempDir()
	if err := testfn.Write(dir, files); err != nil {
		h.t.Fatal(err)
	}
	return h.deployDir(cfg, dir)
}

var (
	goechoOnce sync.Once
	goechoDir  string
	goechoErr  error
)

// goecho returns a folder holding the aws-lambda-go test function built as
// a bootstrap, built once per test binary.
func goecho(t *testing.T) string {
	t.Helper()
	goechoOnce.Do(func() {
		goechoDir, goechoErr = os.MkdirTemp("", "aloft-goecho-")
		if goechoErr == nil {
			goechoErr = testfn.BuildGo("./internal/testfn/goecho", goechoDir)
		}
	})
	if goechoErr != nil {
		t.Fatal(goechoErr)
	}
	return goechoDir
}

func (h *harness) deployGoecho(cfg model.Config) {
	h.t.Helper()
	cfg.Runtime = model.RuntimeProvided
	h.deployDir(cfg, goecho(h.t))
}

// response is a raw HTTP answer.
type response struct {
	status int
	header http.Header
	body   []byte
}

func (r response) json(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("body %q is not a JSON object: %v", r.body, err)
	}
	return m
}

// do sends a request to the node; header pairs are name, value.
func (h *harness) do(method, path string, body []byte, header ...string) response {
	h.t.Helper()
	req, err := http.NewRequest(method, h.node.URL()+path, bytes.NewReader(body))
	if err != nil {
		h.t.Fatal(err)
	}
	auth := true
	for i := 0; i+1 < len(header); i += 2 {
		if header[i] == "Authorization" && header[i+1] == "" {
			auth = false
			continue
		}
		req.Header.Set(header[i], header[i+1])
	}
	if auth && req.Header.Get("Authorization") == "" {
		req.Header.Set("Authorization", "Bearer "+h.node.Token())
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		h.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		h.t.Fatal(err)
	}
	return response{status: resp.StatusCode, header: resp.Header, body: b}
}

// invoke calls the Lambda Invoke API.
func (h *harness) invoke(name, payload string, header ...string) response {
	h.t.Helper()
	return h.do("POST", "/2015-03-31/functions/"+name+"/invocations", []byte(payload), header...)
}

// invokeOK invokes and fails the test unless the function succeeded.
func (h *harness) invokeOK(name, payload string, header ...string) map[string]any {
	h.t.Helper()
	r := h.invoke(name, payload, header...)
	if r.status != 200 || r.header.Get("X-Amz-Function-Error") != "" {
		h.t.Fatalf("invoke %s: status %d, function error %q, body %s", name, r.status, r.header.Get("X-Amz-Function-Error"), r.body)
	}
	return r.json(h.t)
}

// invokeErr invokes and returns the function error document, failing the
// test unless the invocation failed the way Lambda reports it.
func (h *harness) invokeErr(name, payload string) model.FunctionError {
	h.t.Helper()
	r := h.invoke(name, payload)
	if r.status != 200 || r.header.Get("X-Amz-Function-Error") != "Unhandled" {
		h.t.Fatalf("invoke %s: status %d, X-Amz-Function-Error %q, want 200 Unhandled; body %s",
			name, r.status, r.header.Get("X-Amz-Function-Error"), r.body)
	}
	var fe model.FunctionError
	if err := json.Unmarshal(r.body, &fe); err != nil {
		h.t.Fatalf("error body %q: %v", r.body, err)
	}
	return fe
}

// logs returns the function's stored log text.
func (h *harness) logs(name string) string {
	h.t.Helper()
	rc, err := h.client.Logs(context.Background(), name, "", false)
	if err != nil {
		h.t.Fatal(err)
	}
	defer rc.Close()
	b, _ := io.ReadAll(rc)
	return string(b)
}

// eventually retries f until it returns "" or the time is up.
func eventually(t *testing.T, within time.Duration, f func() string) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		msg := f()
		if msg == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal(msg)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// runCLI runs the aloft CLI in-process against h and returns stdout,
// stderr and the error.
func (h *harness) runCLI(dir string, args ...string) (string, string, error) {
	h.t.Helper()
	h.t.Setenv("ALOFT_URL", h.node.URL())
	h.t.Setenv("ALOFT_TOKEN", h.node.Token())
	if dir != "" {
		wd, _ := os.Getwd()
		if err := os.Chdir(dir); err != nil {
			h.t.Fatal(err)
		}
		defer os.Chdir(wd)
	}
	root := cli.NewRoot("test")
	var out, errb bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errb)
	root.SetArgs(args)
	err := root.ExecuteContext(context.Background())
	return out.String(), errb.String(), err
}

func str(v any) string {
	s, _ := v.(string)
	return s
}

func num(v any) float64 {
	switch n := v.(type) {
	case float64:
		return n
	case string:
		var f float64
		json.Unmarshal([]byte(n), &f)
		return f
	}
	return 0
}

func contains(s string, subs ...string) string {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return "missing " + sub
		}
	}
	return ""
}

var _ = filepath.Join

// decodeTail returns the decoded X-Amz-Log-Result of a response.
func decodeTail(r response) (string, error) {
	b, err := base64.StdEncoding.DecodeString(r.header.Get("X-Amz-Log-Result"))
	return string(b), err
}

// waitLogs waits until the function's stored logs hold every substring:
// logs are written after the response returns.
func (h *harness) waitLogs(name string, subs ...string) {
	h.t.Helper()
	eventually(h.t, 10*time.Second, func() string {
		logs := h.logs(name)
		if msg := contains(logs, subs...); msg != "" {
			return "logs of " + name + ": " + msg + "\n" + logs
		}
		return ""
	})
}

// waitUsage waits until check passes on the function's usage totals
// (function "" for all): records are written after the response returns.
func (h *harness) waitUsage(name string, check func(cli.UsageRow) string) {
	h.t.Helper()
	eventually(h.t, 10*time.Second, func() string {
		u, err := h.client.Usage(context.Background(), name)
		if err != nil {
			return err.Error()
		}
		return check(u.Total)
	})
}
