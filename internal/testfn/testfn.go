// Package testfn holds the functions Aloft's end-to-end tests and
// benchmarks deploy: a Go function written with aws-lambda-go (goecho), and
// Node and Python functions in the same spirit, plus helpers to build and
// bundle them.
package testfn

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
)

// Python is a Lambda-style Python function: it echoes its event and
// context, and misbehaves on request.
const Python = `import json, os, sys, time

invocations = 0
instance = os.urandom(8).hex()  # pids are not unique across sandboxes

def handler(event, context):
    global invocations
    invocations += 1
    action = event.get("action") if isinstance(event, dict) else None
    if action == "sleep":
        time.sleep(event["ms"] / 1000)
    elif action == "print":
        print(event["text"])
    elif action == "error":
        raise ValueError(event["text"])
    elif action == "crash":
        print("about to crash", flush=True)
        os._exit(3)
    elif action == "alloc":
        keep = [bytearray(1 << 20) for _ in range(event["mb"])]
        for b in keep:
            for i in range(0, len(b), 4096):
                b[i] = 1
        print("allocated", len(keep), "MB")
    cc = context.client_context
    return {
        "value": event.get("value") if isinstance(event, dict) else event,
        "invocations": invocations,
        "pid": os.getpid(),
        "instance": instance,
        "request_id": context.aws_request_id,
        "function_name": context.function_name,
        "function_version": context.function_version,
        "function_arn": context.invoked_function_arn,
        "memory_mb": context.memory_limit_in_mb,
        "log_group": context.log_group_name,
        "log_stream": context.log_stream_name,
        "remaining_ms": context.get_remaining_time_in_millis(),
        "client_context": cc.custom if cc else None,
        "env": {k: v for k, v in os.environ.items()
                if k.startswith(("AWS_", "LAMBDA_", "APP_")) or k in ("_HANDLER", "TZ")},
    }
`

// NodeCommonJS is an async CommonJS handler (index.js).
const NodeCommonJS = `let invocations = 0;
const instance = require("crypto").randomBytes(8).toString("hex");
exports.handler = async (event, context) => {
  invocations++;
  if (event.action === "error") throw new TypeError(event.text);
  if (event.action === "print") console.log(event.text);
  if (event.action === "sleep") await new Promise(r => setTimeout(r, event.ms));
  return {
    value: event.value, invocations, pid: process.pid, instance, style: "cjs-async",
    request_id: context.awsRequestId, function_name: context.functionName,
    function_version: context.functionVersion, function_arn: context.invokedFunctionArn,
    memory_mb: context.memoryLimitInMB, log_group: context.logGroupName,
    log_stream: context.logStreamName, remaining_ms: context.getRemainingTimeInMillis(),
    client_context: context.clientContext ? context.clientContext.custom : null,
    env: Object.fromEntries(Object.entries(process.env).filter(([k]) =>
      k.startsWith("AWS_") || k.startsWith("LAMBDA_") || k.startsWith("APP_") || k === "_HANDLER" || k === "TZ")),
  };
};
`

// NodeCallback is a callback-style CommonJS handler (cb.js).
const NodeCallback = `exports.handler = (event, context, callback) => {
  if (event.action === "error") return callback(new Error(event.text));
  setTimeout(() => callback(null, { value: event.value, style: "callback", request_id: context.awsRequestId }), 1);
};
`

// NodeESM is an ES module handler (esm.mjs).
const NodeESM = `import { setTimeout as sleep } from "node:timers/promises";
export const handler = async (event, context) => {
  await sleep(1);
  return { value: event.value, style: "esm", request_id: context.awsRequestId };
};
`

// NodeURL is a function-URL handler that echoes the request (url.mjs).
const NodeURL = `export const handler = async (event) => {
  if (event.rawPath === "/bare") return { bare: true, path: event.rawPath };
  const body = event.isBase64Encoded ? Buffer.from(event.body, "base64") : Buffer.from(event.body || "");
  return {
    statusCode: 201,
    headers: { "content-type": "application/octet-stream", "x-method": event.requestContext.http.method,
               "x-path": event.rawPath, "x-query": event.rawQueryString, "x-b64": String(event.isBase64Encoded) },
    cookies: ["a=1", "b=2"],
    body: body.reverse().toString("base64"),
    isBase64Encoded: true,
  };
};
`

// Write creates dir and writes files into it; names may contain slashes.
func Write(dir string, files map[string]string) error {
	for name, body := range files {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		mode := os.FileMode(0o644)
		if strings.HasPrefix(body, "#!") {
			mode = 0o755
		}
		if err := os.WriteFile(p, []byte(body), mode); err != nil {
			return err
		}
	}
	return nil
}

// ModuleRoot is the directory of Aloft's go.mod.
func ModuleRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// BuildGo builds a main package of Aloft's module (such as
// "./internal/testfn/goecho") as dir/bootstrap, the way Lambda Go functions
// are built.
func BuildGo(pkg, dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	cmd := exec.Command("go", "build", "-tags", "lambda.norpc", "-trimpath", "-o", filepath.Join(dir, "bootstrap"), pkg)
	cmd.Dir = ModuleRoot()
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("cannot build %s: %v\n%s", pkg, err, out.String())
	}
	return nil
}
