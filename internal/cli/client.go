package cli

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net"
	"net/http"
	"net/textproto"
	"net/url"
	"strings"
	"syscall"
	"time"

	"github.com/aloft-dev/aloft/internal/model"
)

// Client is a typed client of the Aloft HTTP API (docs/api.md). Its zero
// value is not usable: BaseURL is required.
type Client struct {
	// BaseURL is the server's root, e.g. "http://127.0.0.1:8080".
	BaseURL string
	// Token is sent as "Authorization: Bearer <Token>" when not empty.
	Token string
	// HTTP is the client to use; nil means a client with a 10 s connect
	// timeout and no overall timeout (invocations and log follows run long;
	// callers bound requests with their context).
	HTTP *http.Client
}

// APIError is an error answer of the server, in Lambda's error shape.
type APIError struct {
	Status  int    // HTTP status code
	Type    string // X-Amzn-ErrorType, e.g. ResourceNotFoundException
	Message string
}

func (e *APIError) Error() string {
	msg := e.Message
	if e.Type == "UnauthorizedException" {
		msg += " (set ALOFT_TOKEN, or run from the folder where `aloft up` keeps .aloft/token)"
	}
	return e.Type + ": " + msg
}

// UnreachableError means no server answered at the client's BaseURL.
type UnreachableError struct {
	URL string
	Err error
}

func (e *UnreachableError) Error() string {
	if errors.Is(e.Err, syscall.ECONNREFUSED) {
		return fmt.Sprintf("cannot reach the Aloft server at %s (connection refused): start it with `aloft up`, or set ALOFT_URL", e.URL)
	}
	return fmt.Sprintf("cannot reach the Aloft server at %s: %v", e.URL, e.Err)
}

func (e *UnreachableError) Unwrap() error { return e.Err }

// Function is a deployed function as the API returns it.
type Function struct {
	model.Function
	ARN       string    `json:"arn"`
	URL       string    `json:"url"`
	Instances Instances `json:"instances"`
	// Queue is the function's asynchronous queue (nil from servers
	// without one).
	Queue *QueueState `json:"queue,omitempty"`
}

// Instances counts a function's (or the node's) instances.
type Instances struct {
	Warm        int `json:"warm"`
	Busy        int `json:"busy"`
	Provisioned int `json:"provisioned"`
}

// UsageRow is the metered usage of one function, or the total.
type UsageRow struct {
	Function    string  `json:"function,omitempty"`
	Invocations int64   `json:"invocations"`
	Errors      int64   `json:"errors"`
	ColdStarts  int64   `json:"cold_starts"`
	Throttles   int64   `json:"throttles"`
	Provisioned int64   `json:"provisioned_invocations"`
	BilledMs    int64   `json:"billed_ms"`
	GBSeconds   float64 `json:"gb_seconds"`
	CostUSD     float64 `json:"cost_usd"`
}

// Usage is the answer of GET /v1/usage.
type Usage struct {
	PricePerGBSecond        float64    `json:"price_per_gb_second"`
	PricePerMillionRequests float64    `json:"price_per_million_requests"`
	Functions               []UsageRow `json:"functions"`
	Total                   UsageRow   `json:"total"`
}

// Status is the answer of GET /v1/status.
type Status struct {
	Version   string    `json:"version"`
	DataDir   string    `json:"data_dir"`
	Isolation Isolation `json:"isolation"`
	Driver    string    `json:"driver"`
	Functions int       `json:"functions"`
	Instances Instances `json:"instances"`
}

// Isolation reports which sandbox features the node runs with.
type Isolation struct {
	Level   string   `json:"level"` // "isolated" or "none"
	Enabled []string `json:"enabled"`
	Missing []string `json:"missing"`
}

// InvokeOptions are the optional parts of an invocation.
type InvokeOptions struct {
	// InvocationType is X-Amz-Invocation-Type; "" means RequestResponse.
	InvocationType string
	// LogTail asks for the last 4 KB of the log (X-Amz-Log-Type: Tail).
	LogTail bool
}

// InvokeResult is the answer of the Lambda Invoke API.
type InvokeResult struct {
	StatusCode int
	// RequestID is X-Amzn-RequestId; for an Event invocation (202) it is
	// all the answer holds.
	RequestID string
	Payload   []byte
	// FunctionError is X-Amz-Function-Error ("Unhandled"), empty on success.
	FunctionError   string
	ExecutedVersion string
	// LogTail is the decoded X-Amz-Log-Result, when asked for.
	LogTail string
}

// Deploy creates or updates function name with PUT /v1/functions/{name}.
// code is the zip bundle of size bytes; progress, when not nil, is called
// with the number of body bytes sent so far and the body's total size.
func (c *Client) Deploy(ctx context.Context, name string, cfg model.Config, code io.Reader, size int64, progress func(sent, total int64)) (Function, error) {
	cfgJSON, err := json.Marshal(cfg)
	if err != nil {
		return Function{}, fmt.Errorf("cannot encode config: %w", err)
	}
	// Build the multipart head and tail in memory and stream the zip between
	// them, so the body has a known length and the zip is never copied.
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	h := textproto.MIMEHeader{}
	h.Set("Content-Disposition", `form-data; name="config"`)
	h.Set("Content-Type", "application/json")
	pw, err := mw.CreatePart(h)
	if err != nil {
		return Function{}, fmt.Errorf("cannot build request: %w", err)
	}
	pw.Write(cfgJSON)
	h = textproto.MIMEHeader{}
	h.Set("Content-Disposition", `form-data; name="code"; filename="code.zip"`)
	h.Set("Content-Type", "application/zip")
	if _, err := mw.CreatePart(h); err != nil {
		return Function{}, fmt.Errorf("cannot build request: %w", err)
	}
	head := bytes.Clone(buf.Bytes())
	buf.Reset()
	if err := mw.Close(); err != nil {
		return Function{}, fmt.Errorf("cannot build request: %w", err)
	}
	tail := buf.Bytes()
	total := int64(len(head)) + size + int64(len(tail))
	var body io.Reader = io.MultiReader(bytes.NewReader(head), io.LimitReader(code, size), bytes.NewReader(tail))
	if progress != nil {
		body = &progressReader{r: body, total: total, fn: progress}
	}
	req, err := c.newRequest(ctx, http.MethodPut, "/v1/functions/"+url.PathEscape(name), body)
	if err != nil {
		return Function{}, err
	}
	req.ContentLength = total
	req.Header.Set("Content-Type", mw.FormDataContentType())
	var fn Function
	err = c.doJSON(req, &fn)
	return fn, err
}

// List returns every function, sorted by name.
func (c *Client) List(ctx context.Context) ([]Function, error) {
	var out struct {
		Functions []Function `json:"functions"`
	}
	err := c.getJSON(ctx, "/v1/functions", &out)
	return out.Functions, err
}

// Get returns one function.
func (c *Client) Get(ctx context.Context, name string) (Function, error) {
	var fn Function
	err := c.getJSON(ctx, "/v1/functions/"+url.PathEscape(name), &fn)
	return fn, err
}

// Delete removes a function.
func (c *Client) Delete(ctx context.Context, name string) error {
	req, err := c.newRequest(ctx, http.MethodDelete, "/v1/functions/"+url.PathEscape(name), nil)
	if err != nil {
		return err
	}
	return c.doJSON(req, nil)
}

// Logs opens a function's log stream. since is a Go duration or an RFC 3339
// time ("" means everything); with follow the stream stays open until ctx
// ends. The caller closes the returned body.
func (c *Client) Logs(ctx context.Context, name, since string, follow bool) (io.ReadCloser, error) {
	q := url.Values{}
	if since != "" {
		q.Set("since", since)
	}
	if follow {
		q.Set("follow", "true")
	}
	path := "/v1/functions/" + url.PathEscape(name) + "/logs"
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	req, err := c.newRequest(ctx, http.MethodGet, path, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.do(req)
	if err != nil {
		return nil, err
	}
	return resp.Body, nil
}

// Usage returns metered usage, of one function when function is not empty.
func (c *Client) Usage(ctx context.Context, function string) (Usage, error) {
	path := "/v1/usage"
	if function != "" {
		path += "?function=" + url.QueryEscape(function)
	}
	var u Usage
	err := c.getJSON(ctx, path, &u)
	return u, err
}

// Status returns the node's status.
func (c *Client) Status(ctx context.Context) (Status, error) {
	var s Status
	err := c.getJSON(ctx, "/v1/status", &s)
	return s, err
}

// Invoke calls a function through the Lambda Invoke API. A function that
// failed is not an error here: see InvokeResult.FunctionError.
func (c *Client) Invoke(ctx context.Context, name string, payload []byte, opts InvokeOptions) (InvokeResult, error) {
	req, err := c.newRequest(ctx, http.MethodPost, "/2015-03-31/functions/"+url.PathEscape(name)+"/invocations", bytes.NewReader(payload))
	if err != nil {
		return InvokeResult{}, err
	}
	req.Header.Set("Content-Type", "application/json")
	if opts.InvocationType != "" {
		req.Header.Set("X-Amz-Invocation-Type", opts.InvocationType)
	}
	if opts.LogTail {
		req.Header.Set("X-Amz-Log-Type", "Tail")
	}
	resp, err := c.do(req)
	if err != nil {
		return InvokeResult{}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return InvokeResult{}, fmt.Errorf("cannot read invocation result: %w", err)
	}
	res := InvokeResult{
		StatusCode:      resp.StatusCode,
		RequestID:       resp.Header.Get("X-Amzn-RequestId"),
		Payload:         body,
		FunctionError:   resp.Header.Get("X-Amz-Function-Error"),
		ExecutedVersion: resp.Header.Get("X-Amz-Executed-Version"),
	}
	if lr := resp.Header.Get("X-Amz-Log-Result"); lr != "" {
		tail, err := base64.StdEncoding.DecodeString(lr)
		if err != nil {
			return res, fmt.Errorf("cannot decode X-Amz-Log-Result: %w", err)
		}
		res.LogTail = string(tail)
	}
	return res, nil
}

func (c *Client) newRequest(ctx context.Context, method, path string, body io.Reader) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimRight(c.BaseURL, "/")+path, body)
	if err != nil {
		return nil, fmt.Errorf("cannot build request: %w", err)
	}
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	return req, nil
}

func (c *Client) getJSON(ctx context.Context, path string, out any) error {
	req, err := c.newRequest(ctx, http.MethodGet, path, nil)
	if err != nil {
		return err
	}
	return c.doJSON(req, out)
}

// doJSON sends req and decodes a successful answer into out (nil: discard).
func (c *Client) doJSON(req *http.Request, out any) error {
	resp, err := c.do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		io.Copy(io.Discard, resp.Body)
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("cannot decode the answer of %s %s: %w", req.Method, req.URL.Path, err)
	}
	return nil
}

// do sends req and turns transport failures into *UnreachableError and
// answers of 400 and above into *APIError. On success the caller closes
// the body.
func (c *Client) do(req *http.Request) (*http.Response, error) {
	hc := c.HTTP
	if hc == nil {
		hc = defaultHTTP
	}
	resp, err := hc.Do(req)
	if err != nil {
		if ctxErr := req.Context().Err(); ctxErr != nil {
			return nil, ctxErr
		}
		return nil, &UnreachableError{URL: c.BaseURL, Err: err}
	}
	if resp.StatusCode >= 400 {
		defer resp.Body.Close()
		return nil, decodeAPIError(resp)
	}
	return resp, nil
}

// decodeAPIError reads Lambda's error shape, falling back on the status
// line and the body's first line for answers that are not in it (e.g. from
// a proxy in front of the server).
func decodeAPIError(resp *http.Response) *APIError {
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	e := &APIError{Status: resp.StatusCode, Type: resp.Header.Get("X-Amzn-ErrorType")}
	var body struct {
		Type     string `json:"Type"`
		Message  string `json:"Message"`
		LowerMsg string `json:"message"`
	}
	if json.Unmarshal(data, &body) == nil {
		e.Message = body.Message
		if e.Message == "" {
			e.Message = body.LowerMsg
		}
	}
	// Lambda's header may carry ":" suffixes (e.g. "Type:http://...").
	e.Type, _, _ = strings.Cut(e.Type, ":")
	if e.Type == "" {
		e.Type = strings.ReplaceAll(http.StatusText(resp.StatusCode), " ", "")
		if e.Type == "" {
			e.Type = fmt.Sprintf("HTTP%d", resp.StatusCode)
		}
	}
	if e.Message == "" {
		line, _, _ := strings.Cut(strings.TrimSpace(string(data)), "\n")
		e.Message = line
	}
	if e.Message == "" {
		e.Message = resp.Status
	}
	return e
}

var defaultHTTP = &http.Client{
	Transport: &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSHandshakeTimeout:   10 * time.Second,
		MaxIdleConnsPerHost:   4,
		IdleConnTimeout:       90 * time.Second,
		ExpectContinueTimeout: time.Second,
	},
}

type progressReader struct {
	r     io.Reader
	sent  int64
	total int64
	fn    func(sent, total int64)
}

func (p *progressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	if n > 0 {
		p.sent += int64(n)
		p.fn(p.sent, p.total)
	}
	return n, err
}
