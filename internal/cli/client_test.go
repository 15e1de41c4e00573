package cli

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"syscall"
	"testing"

	"github.com/aloft-dev/aloft/internal/model"
)

func TestClientAPIErrors(t *testing.T) {
	srv := newAPIServer(t)
	ctx := context.Background()
	tests := []struct {
		name       string
		client     *Client
		call       func(c *Client) error
		wantStatus int
		wantType   string
		wantMsg    string
	}{
		{
			name:       "unknown function",
			client:     &Client{BaseURL: srv.URL, Token: testToken},
			call:       func(c *Client) error { _, err := c.Get(ctx, "nope"); return err },
			wantStatus: 404, wantType: "ResourceNotFoundException",
			wantMsg: "Function not found: arn:aws:lambda:us-east-1:000000000000:function:nope",
		},
		{
			name:       "invoke unknown function",
			client:     &Client{BaseURL: srv.URL, Token: testToken},
			call:       func(c *Client) error { _, err := c.Invoke(ctx, "nope", []byte("{}"), InvokeOptions{}); return err },
			wantStatus: 404, wantType: "ResourceNotFoundException",
			wantMsg: "Function not found: arn:aws:lambda:us-east-1:000000000000:function:nope",
		},
		{
			name:       "wrong token",
			client:     &Client{BaseURL: srv.URL, Token: "wrong"},
			call:       func(c *Client) error { _, err := c.List(ctx); return err },
			wantStatus: 401, wantType: "UnauthorizedException", wantMsg: "missing or wrong bearer token",
		},
		{
			name:       "no token",
			client:     &Client{BaseURL: srv.URL},
			call:       func(c *Client) error { _, err := c.Status(ctx); return err },
			wantStatus: 401, wantType: "UnauthorizedException", wantMsg: "missing or wrong bearer token",
		},
		{
			name:   "bad config",
			client: &Client{BaseURL: srv.URL, Token: testToken},
			call: func(c *Client) error {
				_, err := c.Deploy(ctx, "x", model.Config{Name: "x", Runtime: model.RuntimeGo}, strings.NewReader("zip"), 3, nil)
				return err
			},
			wantStatus: 400, wantType: "InvalidParameterValueException", wantMsg: "runtime go is built by the CLI",
		},
		{
			name:       "remove unknown function",
			client:     &Client{BaseURL: srv.URL, Token: testToken},
			call:       func(c *Client) error { return c.Delete(ctx, "nope") },
			wantStatus: 404, wantType: "ResourceNotFoundException",
			wantMsg: "Function not found: arn:aws:lambda:us-east-1:000000000000:function:nope",
		},
		{
			name:       "logs with a wrong token",
			client:     &Client{BaseURL: srv.URL, Token: "wrong"},
			call:       func(c *Client) error { _, err := c.Logs(ctx, "x", "", false); return err },
			wantStatus: 401, wantType: "UnauthorizedException", wantMsg: "missing or wrong bearer token",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call(tt.client)
			var apiErr *APIError
			if !errors.As(err, &apiErr) {
				t.Fatalf("err=%v (%T), want *APIError", err, err)
			}
			if apiErr.Status != tt.wantStatus || apiErr.Type != tt.wantType || apiErr.Message != tt.wantMsg {
				t.Fatalf("got %d %q %q, want %d %q %q", apiErr.Status, apiErr.Type, apiErr.Message, tt.wantStatus, tt.wantType, tt.wantMsg)
			}
		})
	}
}

// TestDecodeAPIError covers answers that are not quite Lambda's shape.
func TestDecodeAPIError(t *testing.T) {
	tests := []struct {
		name    string
		handler http.HandlerFunc
		want    string // APIError.Error()
	}{
		{
			name: "lambda shape",
			handler: func(w http.ResponseWriter, r *http.Request) {
				apiError(w, 429, "TooManyRequestsException", "Rate exceeded")
			},
			want: "TooManyRequestsException: Rate exceeded",
		},
		{
			name: "type header with a suffix",
			handler: func(w http.ResponseWriter, r *http.Request) {
				apiError(w, 500, "ServiceException:http://internal.amazon.com/coral/com.amazon.coral.service/", "store failure")
			},
			want: "ServiceException: store failure",
		},
		{
			name: "lower-case message",
			handler: func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("X-Amzn-ErrorType", "ServiceException")
				w.WriteHeader(503)
				io.WriteString(w, `{"message":"node is shutting down"}`)
			},
			want: "ServiceException: node is shutting down",
		},
		{
			name: "plain text from a proxy",
			handler: func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(502)
				io.WriteString(w, "upstream connect error\nmore detail\n")
			},
			want: "BadGateway: upstream connect error",
		},
		{
			name: "empty body",
			handler: func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(418)
			},
			want: "I'mateapot: 418 I'm a teapot",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(tt.handler)
			defer srv.Close()
			_, err := (&Client{BaseURL: srv.URL}).Status(context.Background())
			if err == nil || err.Error() != tt.want {
				t.Fatalf("err=%v, want %q", err, tt.want)
			}
		})
	}
}

// closedURL returns the URL of a port nothing listens on.
func closedURL(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + ln.Addr().String()
	ln.Close()
	return url
}

func TestClientUnreachable(t *testing.T) {
	url := closedURL(t)
	_, err := (&Client{BaseURL: url}).List(context.Background())
	var ue *UnreachableError
	if !errors.As(err, &ue) {
		t.Fatalf("err=%v (%T), want *UnreachableError", err, err)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("err=%v, want ECONNREFUSED", err)
	}
	want := "cannot reach the Aloft server at " + url + " (connection refused): start it with `aloft up`, or set ALOFT_URL"
	if err.Error() != want {
		t.Fatalf("err=%q, want %q", err, want)
	}
}

func TestClientDeployAndInvoke(t *testing.T) {
	srv := newAPIServer(t)
	c := &Client{BaseURL: srv.URL + "/", Token: testToken}
	ctx := context.Background()

	var zipBuf bytes.Buffer
	dir := t.TempDir()
	writeTree(t, dir, map[string]string{"main.py": "def handler(e, c): return e\n"}, nil)
	if err := ZipDir(&zipBuf, dir); err != nil {
		t.Fatal(err)
	}
	var lastSent, lastTotal int64
	cfg := model.Config{Name: "echo", Runtime: model.RuntimePython, Env: map[string]string{"A": "1"}}
	fn, err := c.Deploy(ctx, "echo", cfg, bytes.NewReader(zipBuf.Bytes()), int64(zipBuf.Len()), func(sent, total int64) {
		lastSent, lastTotal = sent, total
	})
	if err != nil {
		t.Fatalf("Deploy: %v", err)
	}
	if lastSent != lastTotal || lastTotal <= int64(zipBuf.Len()) {
		t.Errorf("progress ended at %d of %d, want all of more than the zip's %d bytes", lastSent, lastTotal, zipBuf.Len())
	}
	if fn.Name != "echo" || fn.Handler != "main.handler" || fn.Env["A"] != "1" || fn.CodeSize != int64(zipBuf.Len()) {
		t.Errorf("got function %+v", fn)
	}
	if want := srv.URL + "/fn/echo/"; fn.URL != want {
		t.Errorf("url=%q, want %q", fn.URL, want)
	}
	if got := srv.codeOf("echo"); !bytes.Equal(got, zipBuf.Bytes()) {
		t.Errorf("the server got %d bytes of code, want the %d of the zip", len(got), zipBuf.Len())
	}

	fns, err := c.List(ctx)
	if err != nil || len(fns) != 1 || fns[0].Name != "echo" {
		t.Fatalf("List=%+v, %v; want [echo]", fns, err)
	}

	res, err := c.Invoke(ctx, "echo", []byte(`{"x":1}`), InvokeOptions{LogTail: true})
	if err != nil {
		t.Fatalf("Invoke: %v", err)
	}
	if string(res.Payload) != `{"x":1}` || res.FunctionError != "" || res.ExecutedVersion != "$LATEST" {
		t.Errorf("got %+v, want the echoed event", res)
	}
	if want := "START RequestId: 1\nREPORT RequestId: 1\n"; res.LogTail != want {
		t.Errorf("log tail=%q, want %q", res.LogTail, want)
	}
}
