// Command rawecho is benchecho without aws-lambda-go: a minimal Runtime API
// client on one keep-alive connection, each request written by hand in one
// write, each answer parsed by net/http's ReadResponse. `aloft bench`
// deploys it as runtime "raw" to show how much of a Go function's warm
// latency is the platform and how much is aws-lambda-go's own client (a
// net/http client whose answer POST is chunked, with trailers, in three
// writes). Like benchecho it echoes its event; "sleep_ms" sleeps first and
// "instance": true answers {"instance": <log stream name>}.
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"time"
)

const base = "/2018-06-01/runtime/invocation/"

type control struct {
	SleepMs  int  `json:"sleep_ms"`
	Instance bool `json:"instance"`
}

func main() {
	if err := run(os.Getenv("AWS_LAMBDA_RUNTIME_API")); err != nil {
		fmt.Fprintln(os.Stderr, "rawecho:", err)
		os.Exit(1)
	}
}

func run(api string) error {
	conn, err := net.Dial("tcp", api)
	if err != nil {
		return err
	}
	r := bufio.NewReader(conn)
	var req bytes.Buffer
	for {
		req.Reset()
		fmt.Fprintf(&req, "GET %snext HTTP/1.1\r\nHost: %s\r\n\r\n", base, api)
		id, event, err := exchange(conn, r, req.Bytes(), http.StatusOK)
		if err != nil {
			return err
		}
		answer := handle(event)
		req.Reset()
		fmt.Fprintf(&req, "POST %s%s/response HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n",
			base, id, api, len(answer))
		req.Write(answer)
		if _, _, err := exchange(conn, r, req.Bytes(), http.StatusAccepted); err != nil {
			return err
		}
	}
}

// exchange writes one request and reads its answer, which must have status
// want; it returns the answer's request id header and body.
func exchange(conn net.Conn, r *bufio.Reader, req []byte, want int) (string, []byte, error) {
	if _, err := conn.Write(req); err != nil {
		return "", nil, err
	}
	resp, err := http.ReadResponse(r, nil)
	if err != nil {
		return "", nil, err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return "", nil, err
	}
	if resp.StatusCode != want {
		return "", nil, fmt.Errorf("%s answered %s: %s", bytes.Fields(req)[1], resp.Status, body)
	}
	return resp.Header.Get("Lambda-Runtime-Aws-Request-Id"), body, nil
}

func handle(event []byte) []byte {
	var c control
	json.Unmarshal(event, &c) // any JSON is echoed; only objects carry controls
	if c.SleepMs > 0 {
		time.Sleep(time.Duration(c.SleepMs) * time.Millisecond)
	}
	if c.Instance {
		answer, _ := json.Marshal(map[string]string{"instance": os.Getenv("AWS_LAMBDA_LOG_STREAM_NAME")})
		return answer
	}
	return event
}
