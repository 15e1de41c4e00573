package runtimes

import (
	"encoding/json"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/aloft-dev/aloft/internal/model"
	"github.com/aloft-dev/aloft/internal/runtimeapi"
)

func TestNodeHandlers(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		files   map[string]string
		handler string
		payload string
		want    string
	}{
		{
			name:    "commonjs async",
			files:   map[string]string{"index.js": `exports.handler = async (event) => ({ got: event.x, kind: typeof require });`},
			handler: "index.handler",
			payload: `{"x": 41}`,
			want:    `{"got": 41, "kind": "function"}`,
		},
		{
			name:    "es module .mjs",
			files:   map[string]string{"app.mjs": `export const handler = async (event) => ({ got: event.x, esm: typeof require === "undefined" });`},
			handler: "app.handler",
			payload: `{"x": "y"}`,
			want:    `{"got": "y", "esm": true}`,
		},
		{
			name: ".js under type module",
			files: map[string]string{
				"package.json": `{"type": "module"}`,
				"index.js":     `export async function handler(event) { return { esm: typeof require === "undefined", n: event.n + 1 }; }`,
			},
			handler: "index.handler",
			payload: `{"n": 1}`,
			want:    `{"esm": true, "n": 2}`,
		},
		{
			name: ".js under a package.json without type",
			files: map[string]string{
				"package.json": `{"name": "x"}`,
				"index.js":     `module.exports.handler = async () => typeof require;`,
			},
			handler: "index.handler",
			want:    `"function"`,
		},
		{
			name:    ".cjs",
			files:   map[string]string{"lib.cjs": `exports.handler = async () => "cjs";`},
			handler: "lib.handler",
			want:    `"cjs"`,
		},
		{
			name: "nested directory",
			files: map[string]string{
				"src/app.js":    `const h = require("./helper"); exports.handler = async (e) => h.twice(e.v);`,
				"src/helper.js": `exports.twice = (v) => v * 2;`,
			},
			handler: "src/app.handler",
			payload: `{"v": 21}`,
			want:    `42`,
		},
		{
			name:    "nested export",
			files:   map[string]string{"index.js": `exports.api = { v1: { get: async () => "nested" } };`},
			handler: "index.api.v1.get",
			want:    `"nested"`,
		},
		{
			name: "node_modules package",
			files: map[string]string{
				"index.js":                      `const dep = require("dep"); exports.handler = async () => dep.name;`,
				"node_modules/dep/package.json": `{"name": "dep", "main": "main.js"}`,
				"node_modules/dep/main.js":      `exports.name = "dep-ok";`,
			},
			handler: "index.handler",
			want:    `"dep-ok"`,
		},
		{
			name:    "callback",
			files:   map[string]string{"index.js": `exports.handler = (event, context, callback) => { setTimeout(() => callback(null, { later: event.a }), 5); };`},
			handler: "index.handler",
			payload: `{"a": [1, 2]}`,
			want:    `{"later": [1, 2]}`,
		},
		{
			// The response waits for the event loop to empty, so the timer's
			// change to the result shows.
			name: "callback waits for empty event loop",
			files: map[string]string{"index.js": `exports.handler = (event, context, callback) => {
				const r = { n: 1 };
				callback(null, r);
				setTimeout(() => { r.n = 2; }, 20);
			};`},
			handler: "index.handler",
			want:    `{"n": 2}`,
		},
		{
			name: "callback without waiting for empty event loop",
			files: map[string]string{"index.js": `exports.handler = (event, context, callback) => {
				context.callbackWaitsForEmptyEventLoop = false;
				const r = { n: 1 };
				callback(null, r);
				setTimeout(() => { r.n = 2; }, 20);
			};`},
			handler: "index.handler",
			want:    `{"n": 1}`,
		},
		{
			name:    "plain value",
			files:   map[string]string{"index.js": `exports.handler = (event) => event.x * 3;`},
			handler: "index.handler",
			payload: `{"x": 5}`,
			want:    `15`,
		},
		{
			name:    "no result",
			files:   map[string]string{"index.js": `exports.handler = () => {};`},
			handler: "index.handler",
			want:    `null`,
		},
		{
			name:    "async undefined",
			files:   map[string]string{"index.js": `exports.handler = async () => undefined;`},
			handler: "index.handler",
			want:    `null`,
		},
		{
			name:    "legacy context.succeed",
			files:   map[string]string{"index.js": `exports.handler = (e, context) => { context.succeed({ ok: true }); };`},
			handler: "index.handler",
			want:    `{"ok": true}`,
		},
		{
			name:    "empty payload is an empty object",
			files:   map[string]string{"index.js": `exports.handler = async (e) => e;`},
			handler: "index.handler",
			payload: ``,
			want:    `{}`,
		},
		{
			name:    "unicode",
			files:   map[string]string{"index.js": `exports.handler = async (e) => ({ echo: e.s, extra: "ü€😀" });`},
			handler: "index.handler",
			payload: `{"s": "日本語"}`,
			want:    `{"echo": "日本語", "extra": "ü€😀"}`,
		},
		{
			name:    "top-level await",
			files:   map[string]string{"index.mjs": `const v = await Promise.resolve("tla"); export const handler = async () => v;`},
			handler: "index.handler",
			want:    `"tla"`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			inst := start(t, model.RuntimeNode, tt.handler, tt.files)
			payload := tt.payload
			if payload == "" && tt.name != "empty payload is an empty object" {
				payload = "{}"
			}
			wantPayload(t, inst.invoke(payload), tt.want)
		})
	}
}

func TestNodeContext(t *testing.T) {
	t.Parallel()
	inst := start(t, model.RuntimeNode, "index.handler", map[string]string{"index.js": `
		exports.handler = async (event, context) => ({
			awsRequestId: context.awsRequestId,
			functionName: context.functionName,
			functionVersion: context.functionVersion,
			memoryLimitInMB: context.memoryLimitInMB,
			invokedFunctionArn: context.invokedFunctionArn,
			logGroupName: context.logGroupName,
			logStreamName: context.logStreamName,
			remaining: context.getRemainingTimeInMillis(),
			clientContext: context.clientContext === undefined ? "undefined" : context.clientContext,
			identity: context.identity === undefined ? "undefined" : context.identity,
			callbackWaitsForEmptyEventLoop: context.callbackWaitsForEmptyEventLoop,
			traceId: process.env._X_AMZN_TRACE_ID,
			cwd: process.cwd(),
			taskRoot: process.env.LAMBDA_TASK_ROOT,
			region: process.env.AWS_REGION,
			own: process.env.MY_SETTING,
		});`}, "MY_SETTING=on")

	type ctxDoc struct {
		AwsRequestID, FunctionName, FunctionVersion, MemoryLimitInMB string
		InvokedFunctionArn, LogGroupName, LogStreamName              string
		Remaining                                                    int64
		ClientContext, Identity                                      any
		CallbackWaitsForEmptyEventLoop                               bool
		TraceID, Cwd, TaskRoot, Region, Own                          string
	}
	deadline := time.Now().Add(7 * time.Second)
	var inv1 runtimeapi.Invocation
	res := inst.invoke(`{}`, func(inv *runtimeapi.Invocation) {
		inv.Deadline = deadline
		inv.ClientContext = `{"client":{"installation_id":"inst-1","app_title":"app"},"custom":{"k":"v"},"env":{"platform":"linux"}}`
		inv.CognitoIdentity = `{"cognitoIdentityId":"id-1","cognitoIdentityPoolId":"pool-1"}`
		inv1 = *inv
	})
	var got ctxDoc
	if err := json.Unmarshal(res.Payload, &got); err != nil {
		t.Fatalf("payload %s: %v", res.Payload, err)
	}
	checks := []struct{ field, got, want string }{
		{"awsRequestId", got.AwsRequestID, inv1.RequestID},
		{"functionName", got.FunctionName, "fn-under-test"},
		{"functionVersion", got.FunctionVersion, "$LATEST"},
		{"memoryLimitInMB", got.MemoryLimitInMB, "256"},
		{"invokedFunctionArn", got.InvokedFunctionArn, inv1.InvokedFunctionARN},
		{"logGroupName", got.LogGroupName, "/aws/lambda/fn-under-test"},
		{"logStreamName", got.LogStreamName, "2024/01/01/[$LATEST]abc"},
		{"_X_AMZN_TRACE_ID", got.TraceID, inv1.TraceID},
		{"cwd", got.Cwd, got.TaskRoot},
		{"AWS_REGION", got.Region, "us-east-1"},
		{"own variable", got.Own, "on"},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s: got %q, want %q", c.field, c.got, c.want)
		}
	}
	if !got.CallbackWaitsForEmptyEventLoop {
		t.Error("callbackWaitsForEmptyEventLoop: got false, want true")
	}
	// The handler ran after the invocation was created, so it has less than
	// 7 s left, and (on any sane machine) more than 0.
	if got.Remaining <= 0 || got.Remaining > 7000 {
		t.Errorf("getRemainingTimeInMillis: got %d, want in (0, 7000]", got.Remaining)
	}
	wantCC := map[string]any{"client": map[string]any{"installation_id": "inst-1", "app_title": "app"},
		"custom": map[string]any{"k": "v"}, "env": map[string]any{"platform": "linux"}}
	if b1, b2 := mustJSON(got.ClientContext), mustJSON(wantCC); b1 != b2 {
		t.Errorf("clientContext: got %s, want %s", b1, b2)
	}
	wantID := map[string]any{"cognitoIdentityId": "id-1", "cognitoIdentityPoolId": "pool-1"}
	if b1, b2 := mustJSON(got.Identity), mustJSON(wantID); b1 != b2 {
		t.Errorf("identity: got %s, want %s", b1, b2)
	}

	// A second invocation without client context, identity or trace id sees
	// none of the first one's.
	res = inst.invoke(`{}`, func(inv *runtimeapi.Invocation) { inv.TraceID = "" })
	got = ctxDoc{}
	if err := json.Unmarshal(res.Payload, &got); err != nil {
		t.Fatalf("payload %s: %v", res.Payload, err)
	}
	if got.ClientContext != "undefined" || got.Identity != "undefined" {
		t.Errorf("got clientContext %v, identity %v, want both undefined", got.ClientContext, got.Identity)
	}
	if got.TraceID != "" {
		t.Errorf("got _X_AMZN_TRACE_ID %q, want it unset", got.TraceID)
	}
}

func mustJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return string(b)
}

func TestNodeErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		code      string
		wantType  string
		wantMsg   *regexp.Regexp
		wantTrace string // a substring of some trace line; "" for an empty trace
		wantExit  bool   // the process ends after reporting
	}{
		{
			name:      "thrown error",
			code:      `exports.handler = async () => { throw new Error("boom"); };`,
			wantType:  "Error",
			wantMsg:   regexp.MustCompile(`^boom$`),
			wantTrace: "index.js:1",
		},
		{
			name:      "sync throw",
			code:      `exports.handler = () => { null.x; };`,
			wantType:  "TypeError",
			wantMsg:   regexp.MustCompile(`^Cannot read properties of null \(reading 'x'\)$`),
			wantTrace: "index.js",
		},
		{
			name: "custom error name",
			code: `class ValidationError extends Error { constructor(m) { super(m); this.name = "ValidationError"; } }
				exports.handler = async () => { throw new ValidationError("bad input"); };`,
			wantType:  "ValidationError",
			wantMsg:   regexp.MustCompile(`^bad input$`),
			wantTrace: "ValidationError: bad input",
		},
		{
			name:     "thrown string",
			code:     `exports.handler = async () => { throw "plain"; };`,
			wantType: "string",
			wantMsg:  regexp.MustCompile(`^plain$`),
		},
		{
			name:     "thrown object",
			code:     `exports.handler = async () => { throw { code: 1 }; };`,
			wantType: "object",
			wantMsg:  regexp.MustCompile(`^\[object Object\]$`),
		},
		{
			name:      "callback error",
			code:      `exports.handler = (e, c, cb) => { cb(new RangeError("too far")); };`,
			wantType:  "RangeError",
			wantMsg:   regexp.MustCompile(`^too far$`),
			wantTrace: "RangeError: too far",
		},
		{
			name:     "rejected with nothing",
			code:     `exports.handler = () => Promise.reject();`,
			wantType: "string",
			wantMsg:  regexp.MustCompile(`^handled$`),
		},
		{
			name:     "unserialisable result",
			code:     `exports.handler = async () => { const o = {}; o.self = o; return o; };`,
			wantType: "Runtime.MarshalError",
			wantMsg:  regexp.MustCompile(`^Unable to stringify response body: Converting circular structure to JSON\n`),
		},
		{
			name:      "unhandled rejection",
			code:      `exports.handler = (e, c, cb) => { Promise.reject(new Error("lost")); };`,
			wantType:  "Runtime.UnhandledPromiseRejection",
			wantMsg:   regexp.MustCompile(`^Error: lost$`),
			wantTrace: "Runtime.UnhandledPromiseRejection: Error: lost",
			wantExit:  true,
		},
		{
			name:      "uncaught exception in a timer",
			code:      `exports.handler = (e, c, cb) => { setTimeout(() => { throw new Error("async boom"); }, 1); };`,
			wantType:  "Error",
			wantMsg:   regexp.MustCompile(`^async boom$`),
			wantTrace: "Error: async boom",
			wantExit:  true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			inst := start(t, model.RuntimeNode, "index.handler", map[string]string{"index.js": tt.code})
			d := decodeError(t, inst.invoke(`{}`))
			if d.ErrorType != tt.wantType || !tt.wantMsg.MatchString(d.ErrorMessage) {
				t.Errorf("got %s: %q, want %s: %s", d.ErrorType, d.ErrorMessage, tt.wantType, tt.wantMsg)
			}
			if tt.wantTrace == "" {
				if len(d.Trace) != 0 {
					t.Errorf("got trace %q, want none", d.Trace)
				}
			} else if !strings.Contains(strings.Join(d.Trace, "\n"), tt.wantTrace) {
				t.Errorf("got trace %q, want a line containing %q", d.Trace, tt.wantTrace)
			}
			if strings.Join(d.StackTrace, "\n") != strings.Join(d.Trace, "\n") {
				t.Errorf("got stackTrace %q, want the same lines as trace %q", d.StackTrace, d.Trace)
			}
			if tt.wantExit {
				if code := inst.exited(); code == 0 {
					t.Errorf("got exit code 0, want non-zero")
				}
				return
			}
			// The instance stays usable after a handled error.
			d = decodeError(t, inst.invoke(`{}`))
			if d.ErrorType != tt.wantType {
				t.Errorf("second invocation: got %s, want %s", d.ErrorType, tt.wantType)
			}
			if !inst.waitOutput(regexp.MustCompile(`\tERROR\tInvoke Error \t\{`)) {
				t.Errorf("output lacks AWS's Invoke Error log line:\n%s", inst.out.String())
			}
		})
	}
}

func TestNodeInitErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		files    map[string]string
		handler  string
		wantType string
		wantMsg  *regexp.Regexp
	}{
		{
			name:     "missing module",
			files:    map[string]string{"other.js": `exports.handler = async () => 1;`},
			handler:  "index.handler",
			wantType: "Runtime.ImportModuleError",
			wantMsg:  regexp.MustCompile(`^Error: Cannot find module 'index'`),
		},
		{
			name:     "missing dependency",
			files:    map[string]string{"index.js": `require("not-installed"); exports.handler = async () => 1;`},
			handler:  "index.handler",
			wantType: "Runtime.ImportModuleError",
			wantMsg:  regexp.MustCompile(`^Error: Cannot find module 'not-installed'`),
		},
		{
			name:     "missing dependency in es module",
			files:    map[string]string{"index.mjs": `import x from "not-installed"; export const handler = async () => x;`},
			handler:  "index.handler",
			wantType: "Runtime.ImportModuleError",
			wantMsg:  regexp.MustCompile(`Cannot find package 'not-installed'`),
		},
		{
			name:     "syntax error",
			files:    map[string]string{"index.js": `exports.handler = async () => { return 1;;; ) };`},
			handler:  "index.handler",
			wantType: "Runtime.UserCodeSyntaxError",
			wantMsg:  regexp.MustCompile(`^SyntaxError: Unexpected token '\)'$`),
		},
		{
			name:     "syntax error in es module",
			files:    map[string]string{"index.mjs": `export const handler = async () => { return 1 +; };`},
			handler:  "index.handler",
			wantType: "Runtime.UserCodeSyntaxError",
			wantMsg:  regexp.MustCompile(`^SyntaxError: `),
		},
		{
			name:     "handler not exported",
			files:    map[string]string{"index.js": `exports.other = async () => 1;`},
			handler:  "index.handler",
			wantType: "Runtime.HandlerNotFound",
			wantMsg:  regexp.MustCompile(`^index\.handler is undefined or not exported$`),
		},
		{
			name:     "handler not a function",
			files:    map[string]string{"index.js": `exports.handler = 42;`},
			handler:  "index.handler",
			wantType: "Runtime.HandlerNotFound",
			wantMsg:  regexp.MustCompile(`^index\.handler is not a function$`),
		},
		{
			name:     "no export part",
			files:    map[string]string{"index.js": `exports.handler = async () => 1;`},
			handler:  "index",
			wantType: "Runtime.MalformedHandlerName",
			wantMsg:  regexp.MustCompile(`^Bad handler$`),
		},
		{
			name:     "relative path",
			files:    map[string]string{"index.js": `exports.handler = async () => 1;`},
			handler:  "../index.handler",
			wantType: "Runtime.MalformedHandlerName",
			wantMsg:  regexp.MustCompile(`is not a valid handler name`),
		},
		{
			name:     "error thrown at load",
			files:    map[string]string{"index.js": `throw new TypeError("no config");`},
			handler:  "index.handler",
			wantType: "TypeError",
			wantMsg:  regexp.MustCompile(`^no config$`),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			inst := start(t, model.RuntimeNode, tt.handler, tt.files)
			d := decodeError(t, inst.initError())
			if d.ErrorType != tt.wantType || !tt.wantMsg.MatchString(d.ErrorMessage) {
				t.Errorf("got %s: %q, want %s matching %s", d.ErrorType, d.ErrorMessage, tt.wantType, tt.wantMsg)
			}
			if len(d.Trace) == 0 {
				t.Error("got no trace, want one")
			}
			if code := inst.exited(); code == 0 {
				t.Error("got exit code 0 after an init error, want non-zero")
			}
			// Invoke reports the init error too.
			if _, err := inst.srv.Invoke(t.Context(), &runtimeapi.Invocation{RequestID: "late"}); err != runtimeapi.ErrInitFailed {
				t.Errorf("Invoke after init error: got %v, want %v", err, runtimeapi.ErrInitFailed)
			}
		})
	}
}

func TestNodeWarmStateAndLogs(t *testing.T) {
	t.Parallel()
	inst := start(t, model.RuntimeNode, "index.handler", map[string]string{"index.js": `
		let count = 0;
		console.log("init line");
		exports.handler = async (event, context) => {
			count++;
			console.log("hello %s", event.who, { n: count });
			console.warn("multi\nline");
			console.error("bad");
			return count;
		};`})
	first := inst.invoke(`{"who": "a"}`)
	wantPayload(t, first, `1`)
	var id2 string
	second := inst.invoke(`{"who": "b"}`, func(inv *runtimeapi.Invocation) { id2 = inv.RequestID })
	wantPayload(t, second, `2`)

	ts := `\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z`
	for _, re := range []string{
		`(?m)^` + ts + `\tundefined\tINFO\tinit line$`,
		`(?m)^` + ts + `\t` + regexp.QuoteMeta(id2) + `\tINFO\thello b \{ n: 2 \}$`,
		`(?m)^` + ts + `\t` + regexp.QuoteMeta(id2) + `\tWARN\tmulti\rline$`,
		`(?m)^` + ts + `\t` + regexp.QuoteMeta(id2) + `\tERROR\tbad$`,
	} {
		if !inst.waitOutput(regexp.MustCompile(re)) {
			t.Errorf("output lacks a line matching %s:\n%s", re, inst.out.String())
		}
	}
}
