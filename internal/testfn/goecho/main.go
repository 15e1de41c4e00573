// Command goecho is a test function written with github.com/aws/aws-lambda-go,
// unmodified, as users write Lambda functions in Go. It echoes its event, its
// Lambda context and its environment, and misbehaves on request (sleep,
// crash, allocate, print, fail) so tests can exercise the platform.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-lambda-go/lambdacontext"
)

type event struct {
	Action string `json:"action"`
	Ms     int    `json:"ms"`
	MB     int    `json:"mb"`
	Text   string `json:"text"`
	Value  any    `json:"value"`
}

var invocations int // survives across warm invocations

// instance identifies this process across invocations; pids are not unique
// across sandboxes (each instance may be pid 1 of its own namespace).
var instance = strconv.FormatInt(time.Now().UnixNano(), 36) + strconv.Itoa(os.Getpid())

func handler(ctx context.Context, ev event) (map[string]any, error) {
	invocations++
	lc, _ := lambdacontext.FromContext(ctx)
	deadline, _ := ctx.Deadline()
	switch ev.Action {
	case "sleep":
		time.Sleep(time.Duration(ev.Ms) * time.Millisecond)
	case "crash":
		fmt.Println("about to crash")
		os.Exit(3)
	case "alloc":
		var keep [][]byte
		for i := 0; i < ev.MB; i++ {
			b := make([]byte, 1<<20)
			for j := range b {
				b[j] = byte(j)
			}
			keep = append(keep, b)
		}
		fmt.Println("allocated", len(keep), "MB")
	case "print":
		fmt.Println(ev.Text)
	case "error":
		return nil, errors.New(ev.Text)
	case "spawn":
		cmd := exec.Command("sleep", "1000")
		if err := cmd.Start(); err != nil {
			return nil, err
		}
		return map[string]any{"pid": cmd.Process.Pid}, nil
	}
	env := map[string]string{}
	for _, kv := range os.Environ() {
		k, v, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "AWS_") || strings.HasPrefix(k, "LAMBDA_") || k == "_HANDLER" || k == "TZ" || strings.HasPrefix(k, "APP_") {
			env[k] = v
		}
	}
	out := map[string]any{
		"value":            ev.Value,
		"invocations":      invocations,
		"pid":              os.Getpid(),
		"instance":         instance,
		"remaining_ms":     time.Until(deadline).Milliseconds(),
		"function_name":    lambdacontext.FunctionName,
		"function_version": lambdacontext.FunctionVersion,
		"memory_mb":        lambdacontext.MemoryLimitInMB,
		"log_group":        lambdacontext.LogGroupName,
		"log_stream":       lambdacontext.LogStreamName,
		"env":              env,
	}
	if lc != nil {
		out["request_id"] = lc.AwsRequestID
		out["function_arn"] = lc.InvokedFunctionArn
		out["client_context"] = lc.ClientContext.Custom
	}
	return out, nil
}

func main() { lambda.Start(handler) }
