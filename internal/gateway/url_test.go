package gateway

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"

	"github.com/aloft-dev/aloft/internal/model"
	"github.com/aloft-dev/aloft/internal/worker"
)

// functions is a fixed function table.
type functions map[string]*model.Function

func (f functions) Function(name string) (*model.Function, error) {
	if fn := f[name]; fn != nil {
		return fn, nil
	}
	return nil, model.ErrNotFound
}

// recorder stands in for the worker at the Invoker seam (running a real
// function needs a sandbox): it keeps the event it was given and answers
// with the payload set by the test.
type recorder struct {
	mu      sync.Mutex
	events  [][]byte
	answer  []byte
	fnError string
}

func (r *recorder) Invoke(_ context.Context, _ *model.Function, req *worker.Request) (*worker.Response, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, req.Payload)
	return &worker.Response{RequestID: "req-1", Payload: r.answer, FunctionError: r.fnError}, nil
}

func (r *recorder) last(t *testing.T) *events.LambdaFunctionURLRequest {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.events) == 0 {
		t.Fatal("the function was not invoked")
	}
	var ev events.LambdaFunctionURLRequest
	if err := json.Unmarshal(r.events[len(r.events)-1], &ev); err != nil {
		t.Fatal(err)
	}
	return &ev
}

func serve(t *testing.T, rec *recorder) string {
	t.Helper()
	g := &Gateway{
		Functions: functions{
			"echo":    {Config: model.Config{Name: "echo", URLAuth: model.URLAuthNone}},
			"private": {Config: model.Config{Name: "private", URLAuth: model.URLAuthToken}},
		},
		Invoker: rec, Auth: &Auth{Token: "secret"}, Region: "us-east-1", Account: "000000000000",
	}
	mux := http.NewServeMux()
	g.Register(mux)
	hs := httptest.NewServer(mux)
	t.Cleanup(hs.Close)
	return hs.URL
}

func send(t *testing.T, method, url string, header http.Header, body []byte) *http.Response {
	t.Helper()
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

func TestURLEvent(t *testing.T) {
	rec := &recorder{answer: []byte(`null`)}
	url := serve(t, rec)
	before := time.Now()
	send(t, "POST", url+"/fn/echo/my/path?parameter1=value1&parameter1=value2&parameter2=value", http.Header{
		"X-Header1":     {"value1"},
		"X-Header2":     {"value1", "value2"},
		"User-Agent":    {"agent"},
		"Cookie":        {"cookie1=a; cookie2=b"},
		"Content-Type":  {"text/plain"},
		"Authorization": {"Bearer secret"},
	}, []byte("Hello from client!"))
	ev := rec.last(t)
	host := strings.TrimPrefix(url, "http://")

	if ev.Version != "2.0" || ev.RawPath != "/my/path" || ev.RawQueryString != "parameter1=value1&parameter1=value2&parameter2=value" {
		t.Errorf("version=%q rawPath=%q rawQueryString=%q", ev.Version, ev.RawPath, ev.RawQueryString)
	}
	if want := []string{"cookie1=a", "cookie2=b"}; !slices.Equal(ev.Cookies, want) {
		t.Errorf("cookies=%q, want %q", ev.Cookies, want)
	}
	if want := map[string]string{"parameter1": "value1,value2", "parameter2": "value"}; !reflect.DeepEqual(ev.QueryStringParameters, want) {
		t.Errorf("queryStringParameters=%v, want %v", ev.QueryStringParameters, want)
	}
	for k, want := range map[string]string{
		"x-header1": "value1", "x-header2": "value1,value2", "user-agent": "agent",
		"content-type": "text/plain", "host": host, "content-length": "18",
	} {
		if got := ev.Headers[k]; got != want {
			t.Errorf("headers[%s]=%q, want %q", k, got, want)
		}
	}
	for k := range ev.Headers {
		if k != strings.ToLower(k) {
			t.Errorf("header %q is not lower case", k)
		}
	}
	if v, ok := ev.Headers["cookie"]; ok {
		t.Errorf("headers[cookie]=%q, want it left out (cookies carry it)", v)
	}
	// A public function sees its caller's Authorization, as with Lambda's auth type NONE.
	if got := ev.Headers["authorization"]; got != "Bearer secret" {
		t.Errorf("headers[authorization]=%q, want it passed on to a public function", got)
	}
	if ev.Body != "Hello from client!" || ev.IsBase64Encoded {
		t.Errorf("body=%q base64=%v, want the text as is", ev.Body, ev.IsBase64Encoded)
	}
	rc := ev.RequestContext
	wantHTTP := events.LambdaFunctionURLRequestContextHTTPDescription{
		Method: "POST", Path: "/my/path", Protocol: "HTTP/1.1", SourceIP: "127.0.0.1", UserAgent: "agent"}
	if rc.HTTP != wantHTTP {
		t.Errorf("requestContext.http=%+v, want %+v", rc.HTTP, wantHTTP)
	}
	if rc.APIID != "echo" || rc.DomainPrefix != "echo" || rc.DomainName != host || rc.AccountID != "anonymous" || rc.RequestID == "" {
		t.Errorf("requestContext=%+v", rc)
	}
	ts, err := time.Parse("02/Jan/2006:15:04:05 -0700", rc.Time)
	if err != nil || !strings.HasSuffix(rc.Time, " +0000") {
		t.Errorf("requestContext.time=%q (%v), want dd/Mon/yyyy:hh:mm:ss +0000", rc.Time, err)
	}
	epoch := time.UnixMilli(rc.TimeEpoch)
	if epoch.Before(before.Add(-time.Second)) || epoch.After(time.Now().Add(time.Second)) || ts.Unix() != epoch.Unix() {
		t.Errorf("timeEpoch=%v time=%v, want now and equal", epoch, ts)
	}
}

// TestURLEventShape compares the event's JSON field set with the function
// URL sample in aws-lambda-go's testdata. The sample's authorizer is for
// IAM auth, which Aloft does not have.
func TestURLEventShape(t *testing.T) {
	golden := goldenURLRequest(t)
	rec := &recorder{answer: []byte(`null`)}
	url := serve(t, rec)
	send(t, "POST", url+"/fn/echo/my/path?a=1", http.Header{"Cookie": {"c=1"}}, []byte("hi"))
	var got map[string]any
	rec.mu.Lock()
	err := json.Unmarshal(rec.events[0], &got)
	rec.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	var want map[string]any
	if err := json.Unmarshal(golden, &want); err != nil {
		t.Fatal(err)
	}
	delete(want["requestContext"].(map[string]any), "authorizer")
	gotKeys, wantKeys := keyPaths("", got), keyPaths("", want)
	// headers and queryStringParameters hold the request's own names.
	filter := func(ks []string) []string {
		return slices.DeleteFunc(ks, func(k string) bool {
			return strings.HasPrefix(k, "headers.") || strings.HasPrefix(k, "queryStringParameters.")
		})
	}
	if g, w := filter(gotKeys), filter(wantKeys); !slices.Equal(g, w) {
		t.Errorf("event fields:\n got %v\nwant %v", g, w)
	}
	for _, k := range []string{"rawPath", "rawQueryString", "body"} {
		if _, ok := got[k].(string); !ok {
			t.Errorf("%s is %T, want a string", k, got[k])
		}
	}
	if _, ok := got["cookies"].([]any); !ok {
		t.Errorf("cookies is %T, want an array", got["cookies"])
	}
	if _, ok := got["requestContext"].(map[string]any)["timeEpoch"].(float64); !ok {
		t.Errorf("timeEpoch is not a number")
	}
}

func goldenURLRequest(t *testing.T) []byte {
	t.Helper()
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/aws/aws-lambda-go").Output()
	if err != nil {
		t.Skipf("cannot locate aws-lambda-go: %v", err)
	}
	b, err := os.ReadFile(filepath.Join(strings.TrimSpace(string(out)), "events", "testdata", "lambda-urls-request.json"))
	if err != nil {
		t.Skipf("no golden sample: %v", err)
	}
	return b
}

// keyPaths lists the dotted paths of every object key in v, sorted.
func keyPaths(prefix string, v any) []string {
	m, ok := v.(map[string]any)
	if !ok {
		return nil
	}
	var out []string
	for k, sub := range m {
		p := prefix + k
		out = append(out, p)
		out = append(out, keyPaths(p+".", sub)...)
	}
	sort.Strings(out)
	return out
}

func TestURLEventBody(t *testing.T) {
	png := []byte{0x89, 'P', 'N', 'G', 0, 1, 2}
	tests := []struct {
		name        string
		contentType string
		body        []byte
		wantBase64  bool
	}{
		{"json", "application/json", []byte(`{"a":"é"}`), false},
		{"text without type", "", []byte("plain"), false},
		{"invalid utf-8 text", "text/plain", []byte{0xff, 0xfe}, true},
		{"image", "image/png", png, true},
		{"svg is still image", "image/svg+xml", []byte("<svg/>"), true},
		{"octet stream", "application/octet-stream", []byte("abc"), true},
		{"pdf", "application/pdf", []byte("%PDF"), true},
		{"zip", "application/zip", []byte("PK"), true},
		{"gzip", "application/gzip", []byte{0x1f, 0x8b}, true},
		{"video with params", "video/mp4; codecs=avc1", []byte("x"), true},
		{"form", "application/x-www-form-urlencoded", []byte("a=1&b=2"), false},
	}
	rec := &recorder{answer: []byte(`null`)}
	url := serve(t, rec)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := http.Header{}
			if tt.contentType != "" {
				h.Set("Content-Type", tt.contentType)
			}
			send(t, "PUT", url+"/fn/echo", h, tt.body)
			ev := rec.last(t)
			if ev.IsBase64Encoded != tt.wantBase64 {
				t.Errorf("isBase64Encoded=%v, want %v", ev.IsBase64Encoded, tt.wantBase64)
			}
			got := []byte(ev.Body)
			if ev.IsBase64Encoded {
				var err error
				if got, err = base64.StdEncoding.DecodeString(ev.Body); err != nil {
					t.Fatal(err)
				}
			}
			if !bytes.Equal(got, tt.body) {
				t.Errorf("body=%q, want %q", got, tt.body)
			}
			if ev.RawPath != "/" || ev.RequestContext.HTTP.Path != "/" || ev.RequestContext.HTTP.Method != "PUT" {
				t.Errorf("rawPath=%q http=%+v, want / and PUT", ev.RawPath, ev.RequestContext.HTTP)
			}
		})
	}
	send(t, "GET", url+"/fn/echo/", nil, nil)
	ev := rec.last(t)
	if ev.Body != "" || ev.IsBase64Encoded || ev.Cookies != nil || ev.QueryStringParameters != nil || ev.RawPath != "/" {
		t.Errorf("empty GET: %+v, want no body, cookies or query and rawPath /", ev)
	}
}

func TestURLAuth(t *testing.T) {
	rec := &recorder{answer: []byte(`"ok"`)}
	url := serve(t, rec)
	tests := []struct {
		name       string
		fn         string
		header     http.Header
		wantStatus int
	}{
		{"public", "echo", nil, 200},
		{"token without header", "private", nil, 401},
		{"token with wrong token", "private", http.Header{"Authorization": {"Bearer nope"}}, 401},
		{"token with token", "private", http.Header{"Authorization": {"Bearer secret"}}, 200},
		{"unknown function", "missing", nil, 404},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := send(t, "GET", url+"/fn/"+tt.fn+"/x", tt.header, nil)
			if resp.StatusCode != tt.wantStatus {
				b, _ := io.ReadAll(resp.Body)
				t.Errorf("status=%d %s, want %d", resp.StatusCode, b, tt.wantStatus)
			}
		})
	}
	// The admin token never reaches a url_auth: token function.
	if _, ok := rec.last(t).Headers["authorization"]; ok {
		t.Errorf("the function saw the Authorization header")
	}
}

func TestURLFunctionError(t *testing.T) {
	rec := &recorder{answer: []byte(`{"errorMessage":"boom"}`), fnError: "Unhandled"}
	url := serve(t, rec)
	resp := send(t, "GET", url+"/fn/echo", nil, nil)
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 502 || string(b) != `{"Message":"Internal Server Error"}` ||
		resp.Header.Get("X-Amzn-ErrorType") != "FunctionError" || resp.Header.Get("X-Amzn-RequestId") != "req-1" {
		t.Errorf("got %d %s %v, want 502 Internal Server Error with FunctionError", resp.StatusCode, b, resp.Header)
	}
}

func TestWriteURLResult(t *testing.T) {
	tests := []struct {
		name        string
		payload     string
		wantStatus  int
		wantHeaders map[string]string
		wantCookies []string
		wantBody    string
	}{
		{"structured", `{"statusCode":201,"headers":{"content-type":"text/plain","x-a":"1"},"body":"made"}`,
			201, map[string]string{"Content-Type": "text/plain", "X-A": "1", "Content-Length": "4"}, nil, "made"},
		{"default content type", `{"statusCode":404,"body":"{}"}`,
			404, map[string]string{"Content-Type": "application/json"}, nil, "{}"},
		{"cookies", `{"statusCode":200,"cookies":["a=1; Path=/","b=2"],"body":""}`,
			200, map[string]string{"Content-Length": "0"}, []string{"a=1; Path=/", "b=2"}, ""},
		{"base64 body", `{"statusCode":200,"headers":{"Content-Type":"image/png"},"isBase64Encoded":true,"body":"iVBORw=="}`,
			200, map[string]string{"Content-Type": "image/png", "Content-Length": "4"}, nil, "\x89PNG"},
		{"invalid base64", `{"statusCode":200,"isBase64Encoded":true,"body":"!!!"}`,
			502, nil, nil, `{"Message":"the function returned a body that is not valid base64"}`},
		{"bare string", `"hello"`, 200, map[string]string{"Content-Type": "application/json"}, nil, `"hello"`},
		{"bare number", `42`, 200, map[string]string{"Content-Type": "application/json"}, nil, `42`},
		{"null", `null`, 200, map[string]string{"Content-Type": "application/json"}, nil, `null`},
		{"object without statusCode", `{"body":"x"}`, 200, map[string]string{"Content-Type": "application/json"}, nil, `{"body":"x"}`},
		{"statusCode not a number", `{"statusCode":"200","body":"x"}`, 200, nil, nil, `{"statusCode":"200","body":"x"}`},
		{"statusCode out of range", `{"statusCode":1000,"body":"x"}`, 200, nil, nil, `{"statusCode":1000,"body":"x"}`},
		{"informational statusCode", `{"statusCode":103,"body":"x"}`, 200, nil, nil, `{"statusCode":103,"body":"x"}`},
		{"framing headers dropped",
			`{"statusCode":200,"headers":{"transfer-encoding":"0","Connection":"close","content-length":"999","upgrade":"h2c","x-a":"1"},"body":"short"}`,
			200, map[string]string{"Content-Length": "5", "X-A": "1", "Transfer-Encoding": "", "Connection": "", "Upgrade": ""}, nil, "short"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := httptest.NewRecorder()
			writeURLResult(w, []byte(tt.payload))
			if w.Code != tt.wantStatus {
				t.Errorf("status=%d, want %d", w.Code, tt.wantStatus)
			}
			for k, v := range tt.wantHeaders {
				if got := w.Header().Get(k); got != v {
					t.Errorf("%s=%q, want %q", k, got, v)
				}
			}
			if got := w.Header().Values("Set-Cookie"); !slices.Equal(got, tt.wantCookies) {
				t.Errorf("Set-Cookie=%q, want %q", got, tt.wantCookies)
			}
			if got := w.Body.String(); got != tt.wantBody {
				t.Errorf("body=%q, want %q", got, tt.wantBody)
			}
		})
	}
}

func TestURLEventPath(t *testing.T) {
	tests := []struct {
		name, path           string
		wantRaw, wantDecoded string
	}{
		{"root", "/fn/echo", "/", "/"},
		{"root slash", "/fn/echo/", "/", "/"},
		{"plain", "/fn/echo/a/b", "/a/b", "/a/b"},
		{"trailing slash", "/fn/echo/a/", "/a/", "/a/"},
		{"escaped", "/fn/echo/a%20b%2Fc", "/a%20b%2Fc", "/a b/c"},
		{"unicode", "/fn/echo/%C3%A9t%C3%A9", "/%C3%A9t%C3%A9", "/été"},
	}
	rec := &recorder{answer: []byte(`null`)}
	url := serve(t, rec)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			send(t, "GET", url+tt.path, nil, nil)
			ev := rec.last(t)
			if ev.RawPath != tt.wantRaw || ev.RequestContext.HTTP.Path != tt.wantDecoded {
				t.Errorf("rawPath=%q http.path=%q, want %q %q", ev.RawPath, ev.RequestContext.HTTP.Path, tt.wantRaw, tt.wantDecoded)
			}
		})
	}
}
