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

func TestPythonHandlers(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		files   map[string]string
		handler string
		payload string
		want    string
	}{
		{
			name:    "module function",
			files:   map[string]string{"main.py": "def handler(event, context):\n    return {'got': event['x']}\n"},
			handler: "main.handler",
			payload: `{"x": 41}`,
			want:    `{"got": 41}`,
		},
		{
			name: "dotted module",
			files: map[string]string{
				"pkg/__init__.py":     "",
				"pkg/sub/__init__.py": "",
				"pkg/sub/mod.py":      "from . import helper\ndef fn(event, context):\n    return helper.twice(event['v'])\n",
				"pkg/sub/helper.py":   "def twice(v):\n    return v * 2\n",
			},
			handler: "pkg.sub.mod.fn",
			payload: `{"v": 21}`,
			want:    `42`,
		},
		{
			name:    "slash module path",
			files:   map[string]string{"pkg/__init__.py": "", "pkg/app.py": "def handler(e, c):\n    return 'slash'\n"},
			handler: "pkg/app.handler",
			want:    `"slash"`,
		},
		{
			name:    "none",
			files:   map[string]string{"main.py": "def handler(event, context):\n    pass\n"},
			handler: "main.handler",
			want:    `null`,
		},
		{
			name:    "decimal and unicode",
			files:   map[string]string{"main.py": "import decimal\ndef handler(e, c):\n    return {'d': decimal.Decimal('1.5'), 'i': decimal.Decimal(3), 's': e['s'] + ' ü€😀'}\n"},
			handler: "main.handler",
			payload: `{"s": "日本語"}`,
			want:    `{"d": 1.5, "i": 3, "s": "日本語 ü€😀"}`,
		},
		{
			name:    "bytes are answered as they are",
			files:   map[string]string{"main.py": "def handler(e, c):\n    return b'{\"raw\": 1}'\n"},
			handler: "main.handler",
			want:    `{"raw": 1}`,
		},
		{
			name:    "empty payload is an empty dict",
			files:   map[string]string{"main.py": "def handler(e, c):\n    return e\n"},
			handler: "main.handler",
			payload: "",
			want:    `{}`,
		},
		{
			name:    "task root is on sys.path and the cwd",
			files:   map[string]string{"main.py": "import os, sys\ndef handler(e, c):\n    return [sys.path[0] == os.getcwd() == os.environ['LAMBDA_TASK_ROOT'], 'bootstrap' in sys.modules]\n"},
			handler: "main.handler",
			want:    `[true, false]`,
		},
		{
			name:    "user module named bootstrap",
			files:   map[string]string{"bootstrap.py": "def handler(e, c):\n    return 'mine'\n"},
			handler: "bootstrap.handler",
			want:    `"mine"`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			inst := start(t, model.RuntimePython, tt.handler, tt.files)
			wantPayload(t, inst.invoke(tt.payload), tt.want)
		})
	}
}

func TestPythonContext(t *testing.T) {
	t.Parallel()
	inst := start(t, model.RuntimePython, "main.handler", map[string]string{"main.py": `
import os

def handler(event, context):
    cc = context.client_context
    return {
        "aws_request_id": context.aws_request_id,
        "function_name": context.function_name,
        "function_version": context.function_version,
        "memory_limit_in_mb": context.memory_limit_in_mb,
        "invoked_function_arn": context.invoked_function_arn,
        "log_group_name": context.log_group_name,
        "log_stream_name": context.log_stream_name,
        "remaining": context.get_remaining_time_in_millis(),
        "client_context": None if cc is None else {
            "custom": cc.custom, "env": cc.env,
            "installation_id": cc.client.installation_id, "app_title": cc.client.app_title,
        },
        "identity": [context.identity.cognito_identity_id, context.identity.cognito_identity_pool_id],
        "trace_id": os.environ.get("_X_AMZN_TRACE_ID"),
        "own": os.environ.get("MY_SETTING"),
    }
`}, "MY_SETTING=on")

	type ctxDoc struct {
		AwsRequestID       string `json:"aws_request_id"`
		FunctionName       string `json:"function_name"`
		FunctionVersion    string `json:"function_version"`
		MemoryLimitInMB    string `json:"memory_limit_in_mb"`
		InvokedFunctionArn string `json:"invoked_function_arn"`
		LogGroupName       string `json:"log_group_name"`
		LogStreamName      string `json:"log_stream_name"`
		Remaining          int64
		ClientContext      any       `json:"client_context"`
		Identity           []*string `json:"identity"`
		TraceID            *string   `json:"trace_id"`
		Own                string
	}
	var inv1 runtimeapi.Invocation
	res := inst.invoke(`{}`, func(inv *runtimeapi.Invocation) {
		inv.Deadline = time.Now().Add(7 * time.Second)
		inv.ClientContext = `{"client":{"installation_id":"inst-1","app_title":"app"},"custom":{"k":"v"},"env":{"platform":"linux"}}`
		inv.CognitoIdentity = `{"cognitoIdentityId":"id-1","cognitoIdentityPoolId":"pool-1"}`
		inv1 = *inv
	})
	if res.Error {
		t.Fatalf("got error %s", res.Payload)
	}
	var got ctxDoc
	if err := json.Unmarshal(res.Payload, &got); err != nil {
		t.Fatalf("payload %s: %v", res.Payload, err)
	}
	checks := []struct{ field, got, want string }{
		{"aws_request_id", got.AwsRequestID, inv1.RequestID},
		{"function_name", got.FunctionName, "fn-under-test"},
		{"function_version", got.FunctionVersion, "$LATEST"},
		{"memory_limit_in_mb", got.MemoryLimitInMB, "256"},
		{"invoked_function_arn", got.InvokedFunctionArn, inv1.InvokedFunctionARN},
		{"log_group_name", got.LogGroupName, "/aws/lambda/fn-under-test"},
		{"log_stream_name", got.LogStreamName, "2024/01/01/[$LATEST]abc"},
		{"own variable", got.Own, "on"},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s: got %q, want %q", c.field, c.got, c.want)
		}
	}
	if got.TraceID == nil || *got.TraceID != inv1.TraceID {
		t.Errorf("_X_AMZN_TRACE_ID: got %v, want %q", got.TraceID, inv1.TraceID)
	}
	if got.Remaining <= 0 || got.Remaining > 7000 {
		t.Errorf("get_remaining_time_in_millis: got %d, want in (0, 7000]", got.Remaining)
	}
	wantCC := `{"app_title":"app","custom":{"k":"v"},"env":{"platform":"linux"},"installation_id":"inst-1"}`
	if b := mustJSON(got.ClientContext); b != wantCC {
		t.Errorf("client_context: got %s, want %s", b, wantCC)
	}
	if b := mustJSON(got.Identity); b != `["id-1","pool-1"]` {
		t.Errorf("identity: got %s, want [\"id-1\",\"pool-1\"]", b)
	}

	// Without client context, identity or trace id: none of the first's, and
	// an identity object with empty fields, as AWS gives.
	res = inst.invoke(`{}`, func(inv *runtimeapi.Invocation) {
		inv.TraceID = ""
		inv.Deadline = time.Now().Add(-time.Second)
	})
	got = ctxDoc{}
	if err := json.Unmarshal(res.Payload, &got); err != nil {
		t.Fatalf("payload %s: %v", res.Payload, err)
	}
	if got.ClientContext != nil || mustJSON(got.Identity) != `[null,null]` || got.TraceID != nil {
		t.Errorf("got client_context %v, identity %s, trace id %v; want null, [null,null], unset",
			got.ClientContext, mustJSON(got.Identity), got.TraceID)
	}
	if got.Remaining != 0 {
		t.Errorf("get_remaining_time_in_millis past the deadline: got %d, want 0", got.Remaining)
	}
}

func TestPythonErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		code      string
		wantType  string
		wantMsg   string
		wantTrace []string
	}{
		{
			name:     "raised error",
			code:     "def handler(event, context):\n    raise ValueError('x')\n",
			wantType: "ValueError",
			wantMsg:  "x",
			wantTrace: []string{
				"  File \"{root}/main.py\", line 2, in handler\n    raise ValueError('x')\n",
			},
		},
		{
			name:     "custom exception through a helper",
			code:     "class BadInput(Exception):\n    pass\n\ndef check(v):\n    raise BadInput('bad ' + v)\n\ndef handler(event, context):\n    check('y')\n",
			wantType: "BadInput",
			wantMsg:  "bad y",
			wantTrace: []string{
				"  File \"{root}/main.py\", line 8, in handler\n    check('y')\n",
				"  File \"{root}/main.py\", line 5, in check\n    raise BadInput('bad ' + v)\n",
			},
		},
		{
			name:      "unserialisable result",
			code:      "def handler(event, context):\n    return {1, 2}\n",
			wantType:  "Runtime.MarshalError",
			wantMsg:   "Unable to marshal response: Object of type set is not JSON serializable",
			wantTrace: []string{},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			inst := start(t, model.RuntimePython, "main.handler", map[string]string{"main.py": tt.code})
			var id string
			d := decodeError(t, inst.invoke(`{}`, func(inv *runtimeapi.Invocation) { id = inv.RequestID }))
			if d.ErrorType != tt.wantType || d.ErrorMessage != tt.wantMsg {
				t.Errorf("got %s: %q, want %s: %q", d.ErrorType, d.ErrorMessage, tt.wantType, tt.wantMsg)
			}
			if d.RequestID == nil || *d.RequestID != id {
				t.Errorf("got requestId %v, want %q", d.RequestID, id)
			}
			root := rootOf(t, inst)
			var want []string
			for _, w := range tt.wantTrace {
				want = append(want, strings.ReplaceAll(w, "{root}", root))
			}
			if len(d.StackTrace)+len(want) > 0 && mustJSON(d.StackTrace) != mustJSON(want) {
				t.Errorf("got stackTrace %q, want %q", d.StackTrace, want)
			}
			// AWS's log record of the error: one line, \r-separated.
			record := regexp.MustCompile(regexp.QuoteMeta("[ERROR] " + tt.wantType + ": " + tt.wantMsg + "\rTraceback (most recent call last):"))
			if !inst.waitOutput(record) {
				t.Errorf("output lacks the error record:\n%q", inst.out.String())
			}
			// The instance stays usable.
			if d := decodeError(t, inst.invoke(`{}`)); d.ErrorType != tt.wantType {
				t.Errorf("second invocation: got %s, want %s", d.ErrorType, tt.wantType)
			}
		})
	}
}

// rootOf is the task root the instance was started with.
func rootOf(t *testing.T, inst *instance) string {
	t.Helper()
	for _, kv := range inst.cmd.Env {
		if v, ok := strings.CutPrefix(kv, "LAMBDA_TASK_ROOT="); ok {
			return v
		}
	}
	t.Fatal("no LAMBDA_TASK_ROOT")
	return ""
}

func TestPythonInitErrors(t *testing.T) {
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
			files:    map[string]string{"other.py": "def handler(e, c): pass\n"},
			handler:  "main.handler",
			wantType: "Runtime.ImportModuleError",
			wantMsg:  regexp.MustCompile(`^Unable to import module 'main': No module named 'main'$`),
		},
		{
			name:     "missing dependency",
			files:    map[string]string{"main.py": "import not_installed\ndef handler(e, c): pass\n"},
			handler:  "main.handler",
			wantType: "Runtime.ImportModuleError",
			wantMsg:  regexp.MustCompile(`^Unable to import module 'main': No module named 'not_installed'$`),
		},
		{
			name:     "syntax error",
			files:    map[string]string{"main.py": "def handler(e, c):\n    return (1 +\n"},
			handler:  "main.handler",
			wantType: "Runtime.UserCodeSyntaxError",
			wantMsg:  regexp.MustCompile(`^Syntax error in module 'main': .*\(main\.py, line 2\)$`),
		},
		{
			name:     "missing handler",
			files:    map[string]string{"main.py": "def other(e, c): pass\n"},
			handler:  "main.handler",
			wantType: "Runtime.HandlerNotFound",
			wantMsg:  regexp.MustCompile(`^Handler 'handler' missing on module 'main'$`),
		},
		{
			name:     "malformed handler",
			files:    map[string]string{"main.py": "def handler(e, c): pass\n"},
			handler:  "main",
			wantType: "Runtime.MalformedHandlerName",
			wantMsg:  regexp.MustCompile(`^Bad handler 'main': not enough values to unpack`),
		},
		{
			name:     "built-in module",
			files:    map[string]string{"main.py": "def handler(e, c): pass\n"},
			handler:  "sys.handler",
			wantType: "Runtime.BuiltInModuleConflict",
			wantMsg:  regexp.MustCompile(`^Cannot use built-in module sys as a handler module$`),
		},
		{
			name:     "error raised at import",
			files:    map[string]string{"main.py": "raise RuntimeError('no config')\n"},
			handler:  "main.handler",
			wantType: "RuntimeError",
			wantMsg:  regexp.MustCompile(`^no config$`),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			inst := start(t, model.RuntimePython, tt.handler, tt.files)
			d := decodeError(t, inst.initError())
			if d.ErrorType != tt.wantType || !tt.wantMsg.MatchString(d.ErrorMessage) {
				t.Errorf("got %s: %q, want %s matching %s", d.ErrorType, d.ErrorMessage, tt.wantType, tt.wantMsg)
			}
			if code := inst.exited(); code == 0 {
				t.Error("got exit code 0 after an init error, want non-zero")
			}
		})
	}
}

func TestPythonWarmStateAndLogs(t *testing.T) {
	t.Parallel()
	inst := start(t, model.RuntimePython, "main.handler", map[string]string{"main.py": `
import logging
logger = logging.getLogger()
logger.setLevel(logging.INFO)
logger.info("init record")
count = 0

def handler(event, context):
    global count
    count += 1
    print("plain print", event["who"])
    logger.info("hello %s", event["who"])
    logger.warning("multi\nline")
    logging.getLogger("child").error("from child")
    return count
`})
	wantPayload(t, inst.invoke(`{"who": "a"}`), `1`)
	var id2 string
	wantPayload(t, inst.invoke(`{"who": "b"}`, func(inv *runtimeapi.Invocation) { id2 = inv.RequestID }), `2`)

	ts := `\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z`
	rid := regexp.QuoteMeta(id2)
	for _, re := range []string{
		`(?m)^\[INFO\]\t` + ts + `\t\tinit record$`,
		`(?m)^plain print b$`,
		`(?m)^\[INFO\]\t` + ts + `\t` + rid + `\thello b$`,
		`(?m)^\[WARNING\]\t` + ts + `\t` + rid + `\tmulti\rline$`,
		`(?m)^\[ERROR\]\t` + ts + `\t` + rid + `\tfrom child$`,
	} {
		if !inst.waitOutput(regexp.MustCompile(re)) {
			t.Errorf("output lacks a line matching %s:\n%s", re, inst.out.String())
		}
	}
}
