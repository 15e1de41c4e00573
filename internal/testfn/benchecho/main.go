// Command benchecho is the Go function `aloft bench` deploys: an
// aws-lambda-go handler that returns its event unchanged, so the platform's
// cost is all that is measured. An event with "sleep_ms" sleeps first; one
// with "instance": true answers {"instance": <log stream name>}, which names
// the instance (pids repeat across isolated instances).
package main

import (
	"context"
	"encoding/json"
	"os"
	"time"

	"github.com/aws/aws-lambda-go/lambda"
)

type control struct {
	SleepMs  int  `json:"sleep_ms"`
	Instance bool `json:"instance"`
}

func handler(_ context.Context, event json.RawMessage) (json.RawMessage, error) {
	var c control
	json.Unmarshal(event, &c) // any JSON is echoed; only objects carry controls
	if c.SleepMs > 0 {
		time.Sleep(time.Duration(c.SleepMs) * time.Millisecond)
	}
	if c.Instance {
		return json.Marshal(map[string]string{"instance": os.Getenv("AWS_LAMBDA_LOG_STREAM_NAME")})
	}
	return event, nil
}

func main() { lambda.Start(handler) }
