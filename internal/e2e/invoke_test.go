package e2e_test

import (
	"encoding/base64"
	"fmt"
	"os/exec"
	"strings"
	"testing"

	"github.com/aloft-dev/aloft/internal/model"
	"github.com/aloft-dev/aloft/internal/node"
	"github.com/aloft-dev/aloft/internal/testfn"
)

// checkContext checks the Lambda context fields and environment a function
// echoed back.
func checkContext(t *testing.T, got map[string]any, name string, memory int, requestID string) {
	t.Helper()
	arn := model.ARN(model.DefaultRegion, model.DefaultAccountID, name)
	checks := []struct{ field, got, want string }{
		{"request_id", str(got["request_id"]), requestID},
		{"function_name", str(got["function_name"]), name},
		{"function_version", str(got["function_version"]), "$LATEST"},
		{"function_arn", str(got["function_arn"]), arn},
		{"memory_mb", fmt.Sprint(num(got["memory_mb"])), fmt.Sprint(memory)},
		{"log_group", str(got["log_group"]), "/aws/lambda/" + name},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %q, want %q", c.field, c.got, c.want)
		}
	}
	if !strings.Contains(str(got["log_stream"]), "[$LATEST]") {
		t.Errorf("log_stream = %q, want a Lambda log stream name", got["log_stream"])
	}
	if ms := num(got["remaining_ms"]); ms <= 0 || ms > 3000 {
		t.Errorf("remaining_ms = %v, want in (0, 3000]", ms)
	}
	env, _ := got["env"].(map[string]any)
	for k, want := range map[string]string{
		"AWS_LAMBDA_FUNCTION_NAME":        name,
		"AWS_LAMBDA_FUNCTION_VERSION":     "$LATEST",
		"AWS_LAMBDA_FUNCTION_MEMORY_SIZE": fmt.Sprint(memory),
		"AWS_LAMBDA_LOG_GROUP_NAME":       "/aws/lambda/" + name,
		"AWS_REGION":                      model.DefaultRegion,
		"APP_GREETING":                    "hi",
	} {
		if str(env[k]) != want {
			t.Errorf("env %s = %q, want %q", k, env[k], want)
		}
	}
	for _, k := range []string{"AWS_LAMBDA_RUNTIME_API", "AWS_LAMBDA_LOG_STREAM_NAME", "_HANDLER", "LAMBDA_TASK_ROOT", "TZ"} {
		if str(env[k]) == "" {
			t.Errorf("env %s is not set", k)
		}
	}
}

// TestRuntimes deploys one function per runtime and handler style and checks
// the invocation, the context and warm reuse.
func TestRuntimes(t *testing.T) {
	h := startNode(t, node.Config{})
	env := map[string]string{"APP_GREETING": "hi"}
	cases := []struct {
		name    string
		deploy  func(cfg model.Config)
		context bool // the function echoes its whole context
		style   string
	}{
		{"go-awslambda", func(cfg model.Config) { h.deployGoecho(cfg) }, true, ""},
		{"python", func(cfg model.Config) {
			cfg.Runtime, cfg.Handler = model.RuntimePython, "app.handler"
			h.deployFiles(cfg, map[string]string{"app.py": testfn.Python})
		}, true, ""},
		{"node-cjs-async", func(cfg model.Config) {
			cfg.Runtime, cfg.Handler = model.RuntimeNode, "index.handler"
			h.deployFiles(cfg, map[string]string{"index.js": testfn.NodeCommonJS})
		}, true, "cjs-async"},
		{"node-callback", func(cfg model.Config) {
			cfg.Runtime, cfg.Handler = model.RuntimeNode, "cb.handler"
			h.deployFiles(cfg, map[string]string{"cb.js": testfn.NodeCallback})
		}, false, "callback"},
		{"node-esm", func(cfg model.Config) {
			cfg.Runtime, cfg.Handler = model.RuntimeNode, "esm.handler"
			h.deployFiles(cfg, map[string]string{"esm.mjs": testfn.NodeESM})
		}, false, "esm"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h.t = t
			c.deploy(model.Config{Name: c.name, Memory: 256, Env: env})
			clientCtx := base64.StdEncoding.EncodeToString([]byte(`{"custom":{"k":"v"},"client":{},"env":{}}`))
			r := h.invoke(c.name, `{"value":"v1"}`, "X-Amz-Client-Context", clientCtx)
			if r.status != 200 || r.header.Get("X-Amz-Function-Error") != "" {
				t.Fatalf("status %d, function error %q, body %s", r.status, r.header.Get("X-Amz-Function-Error"), r.body)
			}
			if v := r.header.Get("X-Amz-Executed-Version"); v != "$LATEST" {
				t.Errorf("X-Amz-Executed-Version = %q, want $LATEST", v)
			}
			got := r.json(t)
			if got["value"] != "v1" {
				t.Errorf("value = %v, want v1", got["value"])
			}
			if c.style != "" && got["style"] != c.style {
				t.Errorf("style = %v, want %s", got["style"], c.style)
			}
			if str(got["request_id"]) != r.header.Get("X-Amzn-RequestId") {
				t.Errorf("request_id = %v, want the X-Amzn-RequestId %s", got["request_id"], r.header.Get("X-Amzn-RequestId"))
			}
			if !c.context {
				return
			}
			checkContext(t, got, c.name, 256, r.header.Get("X-Amzn-RequestId"))
			if cc, _ := got["client_context"].(map[string]any); cc["k"] != "v" {
				t.Errorf("client_context custom = %v, want {k: v}", got["client_context"])
			}
			// Warm reuse: the same process serves the next invocation.
			again := h.invokeOK(c.name, `{"value":"v2"}`)
			if again["instance"] != got["instance"] || num(again["invocations"]) != 2 {
				t.Errorf("second invocation: instance %v invocations %v, want instance %v invocations 2",
					again["instance"], again["invocations"], got["instance"])
			}
		})
	}
}

// curlBootstrap is the custom runtime of AWS's own tutorial: a shell loop
// around curl. curl asks for 100-continue before a body over 1 MB.
const curlBootstrap = `#!/bin/bash
set -euo pipefail
API="http://${AWS_LAMBDA_RUNTIME_API}/2018-06-01/runtime"
while true; do
  HEADERS=$(mktemp)
  EVENT=$(curl -sS -D "$HEADERS" "$API/invocation/next")
  ID=$(grep -i Lambda-Runtime-Aws-Request-Id "$HEADERS" | tr -d '[:space:]' | cut -d: -f2)
  rm -f "$HEADERS"
  if [ "$EVENT" = '{"big":true}' ]; then
    { printf '"'; head -c 2000000 /dev/zero | tr '\0' 'a'; printf '"'; } > /tmp/big.json
    curl -sS -X POST --data-binary @/tmp/big.json "$API/invocation/$ID/response" >/dev/null
  else
    curl -sS -X POST -d "{\"echo\":$EVENT}" "$API/invocation/$ID/response" >/dev/null
  fi
done
`

// TestCurlRuntime runs a custom runtime written with bash and curl, as in
// AWS's custom runtime tutorial: small answers, and a 2 MB one.
func TestCurlRuntime(t *testing.T) {
	for _, tool := range []string{"bash", "curl"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("no %s on this machine", tool)
		}
	}
	h := startNode(t, node.Config{})
	h.deployFiles(model.Config{Name: "curlfn", Runtime: model.RuntimeProvided, Timeout: 10},
		map[string]string{"bootstrap": curlBootstrap})
	for i := range 3 {
		got := h.invokeOK("curlfn", fmt.Sprintf(`{"n":%d}`, i))
		if echo, _ := got["echo"].(map[string]any); echo == nil || echo["n"] != float64(i) {
			t.Fatalf("invoke %d: %v, want the event echoed", i, got)
		}
	}
	r := h.invoke("curlfn", `{"big":true}`)
	if r.status != 200 || r.header.Get("X-Amz-Function-Error") != "" || len(r.body) != 2000002 {
		t.Fatalf("big answer: status %d, function error %q, %d bytes; want 2000002 bytes", r.status, r.header.Get("X-Amz-Function-Error"), len(r.body))
	}
}
