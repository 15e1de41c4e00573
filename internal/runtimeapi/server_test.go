package runtimeapi

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// wait bounds every blocking step; generous, since the machine may be loaded.
const wait = 10 * time.Second

const (
	nextPath = "/2018-06-01/runtime/invocation/next"
	initPath = "/2018-06-01/runtime/init/error"
)

func respPath(id string) string { return "/2018-06-01/runtime/invocation/" + id + "/response" }
func errPath(id string) string  { return "/2018-06-01/runtime/invocation/" + id + "/error" }

// start serves a new Server over real HTTP, as the drivers do.
func start(t *testing.T) (*Server, string) {
	t.Helper()
	s := New()
	url := serve(t, s)
	t.Cleanup(func() { s.Close() })
	return s, url
}

// serve serves h with an HTTPServer on a loopback port and returns its URL.
func serve(t *testing.T, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := NewHTTPServer(h)
	go hs.Serve(ln)
	t.Cleanup(func() { hs.Close() })
	return "http://" + ln.Addr().String()
}

type answer struct {
	status int
	header http.Header
	body   string
	err    error
}

func do(method, url string, header http.Header, body []byte) answer {
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		return answer{err: err}
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return answer{err: err}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return answer{status: resp.StatusCode, header: resp.Header, body: string(b), err: err}
}

func post(url string, body []byte) answer { return do(http.MethodPost, url, nil, body) }

// next asks for the next invocation in the background.
func next(url string) <-chan answer {
	ch := make(chan answer, 1)
	go func() { ch <- do(http.MethodGet, url+nextPath, nil, nil) }()
	return ch
}

type invoked struct {
	res *Result
	err error
}

func invoke(ctx context.Context, s *Server, inv *Invocation) <-chan invoked {
	ch := make(chan invoked, 1)
	go func() {
		r, err := s.Invoke(ctx, inv)
		ch <- invoked{r, err}
	}()
	return ch
}

func recv[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(wait):
		t.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}

func inv(id string) *Invocation {
	return &Invocation{RequestID: id, Payload: []byte(`{"n":1}`),
		Deadline:           time.UnixMilli(1700000000123),
		InvokedFunctionARN: "arn:aws:lambda:us-east-1:000000000000:function:fn", TraceID: "Root=1-abc"}
}

// pickUp starts an invocation and lets the runtime fetch it.
func pickUp(t *testing.T, s *Server, url string, in *Invocation) (<-chan invoked, answer) {
	t.Helper()
	n := next(url)
	res := invoke(context.Background(), s, in)
	a := recv(t, n, "/next")
	if a.err != nil || a.status != http.StatusOK {
		t.Fatalf("/next: status %d, error %v, body %s", a.status, a.err, a.body)
	}
	return res, a
}

func TestNextBlocksUntilInvoke(t *testing.T) {
	s, url := start(t)
	n := next(url)
	recv(t, s.Ready(), "Ready")
	select {
	case a := <-n:
		t.Fatalf("/next answered %d before any Invoke", a.status)
	case <-time.After(100 * time.Millisecond):
	}
	res := invoke(context.Background(), s, inv("r1"))
	a := recv(t, n, "/next")
	if a.status != http.StatusOK || a.body != `{"n":1}` {
		t.Fatalf("/next: %d %s, want 200 {\"n\":1}", a.status, a.body)
	}
	p := post(url+respPath("r1"), []byte(`"done"`))
	if p.status != http.StatusAccepted || p.body != `{"status":"OK"}` {
		t.Errorf("response: %d %s, want 202 {\"status\":\"OK\"}", p.status, p.body)
	}
	got := recv(t, res, "Invoke")
	if got.err != nil || string(got.res.Payload) != `"done"` || got.res.Error || got.res.TooLarge {
		t.Errorf("Invoke=%+v, %v; want payload \"done\", no error", got.res, got.err)
	}
}

func TestNextHeaders(t *testing.T) {
	tests := []struct {
		name            string
		clientContext   string
		cognitoIdentity string
	}{
		{"minimal", "", ""},
		{"client context", `{"client":{"app_title":"x"}}`, ""},
		{"cognito identity", "", `{"cognitoIdentityId":"id"}`},
		{"both", `{"custom":{"a":"b"}}`, `{"cognitoIdentityPoolId":"p"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, url := start(t)
			in := inv("req-" + strings.ReplaceAll(tt.name, " ", "-"))
			in.ClientContext, in.CognitoIdentity = tt.clientContext, tt.cognitoIdentity
			_, a := pickUp(t, s, url, in)
			want := map[string]string{
				"Lambda-Runtime-Aws-Request-Id":       in.RequestID,
				"Lambda-Runtime-Deadline-Ms":          "1700000000123",
				"Lambda-Runtime-Invoked-Function-Arn": in.InvokedFunctionARN,
				"Lambda-Runtime-Trace-Id":             "Root=1-abc",
				"Content-Type":                        "application/json",
				"Content-Length":                      "7",
			}
			for k, v := range want {
				if got := a.header.Get(k); got != v {
					t.Errorf("%s=%q, want %q", k, got, v)
				}
			}
			if _, err := strconv.ParseInt(a.header.Get("Lambda-Runtime-Deadline-Ms"), 10, 64); err != nil {
				t.Errorf("Deadline-Ms is not an integer: %v", err)
			}
			for k, v := range map[string]string{
				"Lambda-Runtime-Client-Context":   tt.clientContext,
				"Lambda-Runtime-Cognito-Identity": tt.cognitoIdentity,
			} {
				got, present := a.header[k]
				switch {
				case v == "" && present:
					t.Errorf("%s sent as %q, want it absent", k, got)
				case v != "" && (len(got) != 1 || got[0] != v):
					t.Errorf("%s=%q, want %q", k, got, v)
				}
			}
		})
	}
}

func TestAnswers(t *testing.T) {
	big := bytes.Repeat([]byte("x"), MaxResponseBytes+1)
	atLimit := bytes.Repeat([]byte("y"), MaxResponseBytes)
	tests := []struct {
		name       string
		path       func(id string) string
		header     http.Header
		body       []byte
		wantStatus int
		wantBody   string
		want       Result
	}{
		{"response", respPath, nil, []byte(`{"ok":true}`), 202, `{"status":"OK"}`,
			Result{Payload: []byte(`{"ok":true}`)}},
		{"empty response", respPath, nil, nil, 202, `{"status":"OK"}`, Result{Payload: []byte{}}},
		{"response at the limit", respPath, nil, atLimit, 202, `{"status":"OK"}`, Result{Payload: atLimit}},
		{"response too large", respPath, nil, big, 413,
			`{"errorMessage":"Exceeded maximum allowed payload size (6291556 bytes).","errorType":"RequestEntityTooLarge"}`,
			Result{Error: true, TooLarge: true, ErrorType: "Function.ResponseSizeTooLarge",
				Payload: []byte(`{"errorMessage":"Exceeded maximum allowed payload size (6291556 bytes).","errorType":"RequestEntityTooLarge"}`)}},
		{"error with header", errPath, http.Header{"Lambda-Runtime-Function-Error-Type": {"Runtime.HandlerError"}},
			[]byte(`{"errorMessage":"boom","errorType":"Other"}`), 202, `{"status":"OK"}`,
			Result{Error: true, ErrorType: "Runtime.HandlerError", Payload: []byte(`{"errorMessage":"boom","errorType":"Other"}`)}},
		{"error typed by the document", errPath, nil, []byte(`{"errorMessage":"boom","errorType":"ValueError"}`), 202, `{"status":"OK"}`,
			Result{Error: true, ErrorType: "ValueError", Payload: []byte(`{"errorMessage":"boom","errorType":"ValueError"}`)}},
		{"untyped error", errPath, nil, []byte(`not json`), 202, `{"status":"OK"}`,
			Result{Error: true, ErrorType: "Unhandled", Payload: []byte(`not json`)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, url := start(t)
			res, _ := pickUp(t, s, url, inv("r1"))
			a := do(http.MethodPost, url+tt.path("r1"), tt.header, tt.body)
			if a.err != nil {
				t.Fatal(a.err)
			}
			if a.status != tt.wantStatus || a.body != tt.wantBody {
				t.Errorf("post: %d %s, want %d %s", a.status, trim(a.body), tt.wantStatus, tt.wantBody)
			}
			if ct := a.header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type=%q, want application/json", ct)
			}
			got := recv(t, res, "Invoke")
			if got.err != nil {
				t.Fatalf("Invoke: %v", got.err)
			}
			r := got.res
			if r.Error != tt.want.Error || r.TooLarge != tt.want.TooLarge || r.ErrorType != tt.want.ErrorType ||
				!bytes.Equal(r.Payload, tt.want.Payload) {
				t.Errorf("result={Error:%v TooLarge:%v ErrorType:%q Payload:%s}, want {Error:%v TooLarge:%v ErrorType:%q Payload:%s}",
					r.Error, r.TooLarge, r.ErrorType, trim(string(r.Payload)),
					tt.want.Error, tt.want.TooLarge, tt.want.ErrorType, trim(string(tt.want.Payload)))
			}
		})
	}
}

func trim(s string) string {
	if len(s) > 200 {
		return s[:200] + "…"
	}
	return s
}

// TestStateTransitions posts answers the state machine must refuse.
func TestStateTransitions(t *testing.T) {
	tests := []struct {
		name       string
		first      func(id string) string // answer posted first ("" path: none)
		second     func(id string) string
		id         string // of the second post
		wantStatus int
		wantType   string
	}{
		{"unknown id", nil, respPath, "nope", 400, "InvalidRequestID"},
		{"unknown id error", nil, errPath, "nope", 400, "InvalidRequestID"},
		{"second response", respPath, respPath, "r1", 403, "InvalidStateTransition"},
		{"error after response", respPath, errPath, "r1", 403, "InvalidStateTransition"},
		{"response after error", errPath, respPath, "r1", 403, "InvalidStateTransition"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, url := start(t)
			res, _ := pickUp(t, s, url, inv("r1"))
			if tt.first != nil {
				if a := post(url+tt.first("r1"), []byte(`{}`)); a.status != 202 {
					t.Fatalf("first post: %d %s", a.status, a.body)
				}
				recv(t, res, "Invoke")
			}
			a := post(url+tt.second(tt.id), []byte(`{}`))
			if a.status != tt.wantStatus || !strings.Contains(a.body, `"errorType":"`+tt.wantType+`"`) {
				t.Errorf("got %d %s, want %d with errorType %s", a.status, a.body, tt.wantStatus, tt.wantType)
			}
			if tt.first == nil { // the invocation is still open and answerable
				if a := post(url+respPath("r1"), []byte(`1`)); a.status != 202 {
					t.Errorf("answer after a refused post: %d %s, want 202", a.status, a.body)
				}
				if got := recv(t, res, "Invoke"); got.err != nil || string(got.res.Payload) != "1" {
					t.Errorf("Invoke=%+v, %v; want payload 1", got.res, got.err)
				}
			}
		})
	}
}

func TestRouting(t *testing.T) {
	_, url := start(t)
	tests := []struct {
		method, path string
		wantStatus   int
	}{
		{"GET", "/other", 404},
		{"GET", "/2018-06-01/runtime/invocation/r1/other", 404},
		{"GET", "/2018-06-01/runtime/invocation/r1", 404},
		{"POST", nextPath, 405},
		{"GET", respPath("r1"), 405},
		{"GET", initPath, 405},
	}
	for _, tt := range tests {
		if a := do(tt.method, url+tt.path, nil, nil); a.status != tt.wantStatus {
			t.Errorf("%s %s: %d %s, want %d", tt.method, tt.path, a.status, a.body, tt.wantStatus)
		}
	}
}

func TestInitError(t *testing.T) {
	s, url := start(t)
	res := invoke(context.Background(), s, inv("r1"))
	doc := `{"errorMessage":"cannot import","errorType":"Runtime.ImportModuleError"}`
	a := post(url+initPath, []byte(doc))
	if a.status != 202 || a.body != `{"status":"OK"}` {
		t.Fatalf("init error: %d %s, want 202", a.status, a.body)
	}
	recv(t, s.InitFailed(), "InitFailed")
	got := recv(t, res, "Invoke")
	if !errors.Is(got.err, ErrInitFailed) {
		t.Fatalf("Invoke error=%v, want ErrInitFailed", got.err)
	}
	want := Result{Payload: []byte(doc), Error: true, ErrorType: "Runtime.ImportModuleError"}
	for _, r := range []*Result{got.res, s.InitError()} {
		if r == nil || !r.Error || r.ErrorType != want.ErrorType || string(r.Payload) != doc {
			t.Errorf("result=%+v, want %+v", r, want)
		}
	}
	// Reported once only; later invocations fail at once.
	if a := do(http.MethodPost, url+initPath, http.Header{"Lambda-Runtime-Function-Error-Type": {"X"}}, nil); a.status != 403 {
		t.Errorf("second init error: %d %s, want 403", a.status, a.body)
	}
	if got := recv(t, invoke(context.Background(), s, inv("r2")), "Invoke"); !errors.Is(got.err, ErrInitFailed) {
		t.Errorf("Invoke after init failure: %v, want ErrInitFailed", got.err)
	}
}

func TestClose(t *testing.T) {
	s, url := start(t)
	n := next(url)
	recv(t, s.Ready(), "Ready")
	s.Close()
	a := recv(t, n, "/next")
	if a.status != 500 || !strings.Contains(a.body, `"errorType":"ContainerError"`) {
		t.Errorf("blocked /next after Close: %d %s, want 500 ContainerError", a.status, a.body)
	}
	if a := recv(t, next(url), "/next"); a.status != 500 {
		t.Errorf("/next after Close: %d, want 500", a.status)
	}
	if got := recv(t, invoke(context.Background(), s, inv("r1")), "Invoke"); !errors.Is(got.err, ErrClosed) {
		t.Errorf("Invoke after Close: %v, want ErrClosed", got.err)
	}
	s.Close() // idempotent
}

func TestCloseDuringInvoke(t *testing.T) {
	s, url := start(t)
	res, _ := pickUp(t, s, url, inv("r1"))
	s.Close()
	if got := recv(t, res, "Invoke"); !errors.Is(got.err, ErrClosed) {
		t.Errorf("Invoke=%v, want ErrClosed", got.err)
	}
}

// TestDeadline: Invoke gives up at ctx's end; the runtime's late answer is
// refused with 400, as an answer to an invocation that is no longer open
// (the worker discards the instance anyway), and the next invocation runs.
func TestDeadline(t *testing.T) {
	s, url := start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	n := next(url)
	res := invoke(ctx, s, inv("late"))
	if a := recv(t, n, "/next"); a.status != 200 {
		t.Fatalf("/next: %d", a.status)
	}
	got := recv(t, res, "Invoke")
	if !errors.Is(got.err, context.DeadlineExceeded) || got.res != nil {
		t.Fatalf("Invoke=%v, %v; want nil, context.DeadlineExceeded", got.res, got.err)
	}
	for _, path := range []string{respPath("late"), errPath("late")} {
		if a := post(url+path, []byte(`{}`)); a.status != 400 || !strings.Contains(a.body, "InvalidRequestID") {
			t.Errorf("late post to %s: %d %s, want 400 InvalidRequestID", path, a.status, a.body)
		}
	}
	res2, _ := pickUp(t, s, url, inv("r2"))
	if a := post(url+respPath("r2"), []byte(`2`)); a.status != 202 {
		t.Fatalf("response: %d %s", a.status, a.body)
	}
	if got := recv(t, res2, "Invoke"); got.err != nil || string(got.res.Payload) != "2" {
		t.Errorf("Invoke=%+v, %v; want payload 2", got.res, got.err)
	}
}

// TestWithdrawnBeforeNext: an invocation whose ctx ends before the runtime
// asks is never handed out.
func TestWithdrawnBeforeNext(t *testing.T) {
	s, url := start(t)
	ctx, cancel := context.WithCancel(context.Background())
	res := invoke(ctx, s, inv("gone"))
	cancel()
	if got := recv(t, res, "Invoke"); !errors.Is(got.err, context.Canceled) {
		t.Fatalf("Invoke=%v, want context.Canceled", got.err)
	}
	_, a := pickUp(t, s, url, inv("r2"))
	if id := a.header.Get("Lambda-Runtime-Aws-Request-Id"); id != "r2" {
		t.Errorf("/next handed out %q, want r2", id)
	}
}

// TestBusy: one invocation at a time, whether or not the runtime has
// picked the first one up yet.
func TestBusy(t *testing.T) {
	tests := []struct {
		name     string
		pickedUp bool
	}{
		{"pending", false},
		{"in flight", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, url := start(t)
			var res <-chan invoked
			if tt.pickedUp {
				res, _ = pickUp(t, s, url, inv("r1"))
			} else {
				res = invoke(context.Background(), s, inv("r1"))
				// Invoke queues synchronously before it waits; give it the
				// chance, then a second one must be refused.
				deadline := time.Now().Add(wait)
				for len(s.pending) == 0 && time.Now().Before(deadline) {
					time.Sleep(time.Millisecond)
				}
			}
			ctx, cancel := context.WithTimeout(context.Background(), wait)
			defer cancel()
			if _, err := s.Invoke(ctx, inv("r2")); !errors.Is(err, ErrBusy) {
				t.Errorf("second Invoke: %v, want ErrBusy", err)
			}
			if !tt.pickedUp {
				recv(t, next(url), "/next")
			}
			if a := post(url+respPath("r1"), []byte(`1`)); a.status != 202 {
				t.Fatalf("response: %d %s", a.status, a.body)
			}
			if got := recv(t, res, "Invoke"); got.err != nil || string(got.res.Payload) != "1" {
				t.Errorf("first Invoke=%+v, %v; want payload 1", got.res, got.err)
			}
		})
	}
}
