package runtimeapi

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// FuzzRuntimeAPI sends one arbitrary request (a runtime is untrusted code)
// while an invocation is in flight, then the well-behaved runtime's
// /next and /response: the server answers the odd request with a Runtime
// API status and the invocation still completes.
func FuzzRuntimeAPI(f *testing.F) {
	for _, s := range [][3]string{
		{"GET", "/2018-06-01/runtime/invocation/next", ""},
		{"POST", "/2018-06-01/runtime/invocation/req-1/response", `{"ok":1}`},
		{"POST", "/2018-06-01/runtime/invocation/req-1/error", `{"errorType":"X"}`},
		{"POST", "/2018-06-01/runtime/invocation/other/response", `{}`},
		{"POST", "/2018-06-01/runtime/init/error", `{"errorType":"Runtime.X"}`},
		{"GET", "/2018-06-01/runtime/aloft/specialize", ""},
		{"PUT", "/2018-06-01/runtime/invocation/req-1/response/extra", ""},
		{"GET", "/2018-06-01/runtime/invocation/", ""},
		{"DELETE", "/", ""},
	} {
		f.Add(s[0], s[1], []byte(s[2]))
	}
	allowed := map[int]bool{200: true, 202: true, 400: true, 403: true, 404: true, 405: true, 413: true, 500: true}
	f.Fuzz(func(t *testing.T, method, path string, body []byte) {
		req, err := http.NewRequest(method, "http://runtime"+path, bytes.NewReader(body))
		if err != nil || req.URL.Path == "" {
			return // not a request a client could send
		}
		s := New()
		defer s.Close()
		done := make(chan *Result, 1)
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			res, _ := s.Invoke(ctx, &Invocation{RequestID: "req-1", Payload: []byte(`{}`), Deadline: time.Now().Add(time.Minute)})
			done <- res
		}()
		// The odd request: handlers that wait (/next with nothing
		// pending, specialize) give up when the request's context ends.
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		odd := httptest.NewRecorder()
		s.ServeHTTP(odd, req.WithContext(ctx))
		cancel()
		if !allowed[odd.Code] {
			t.Fatalf("%s %q: status %d", method, path, odd.Code)
		}
		if s.InitError() != nil {
			return // the odd request reported an init error: Invoke ends with it
		}
		select {
		case <-done:
			return // the odd request answered the invocation itself
		default:
		}
		if odd.Header().Get("Lambda-Runtime-Aws-Request-Id") == "" { // it did not take the invocation
			next := httptest.NewRecorder()
			nctx, ncancel := context.WithTimeout(context.Background(), 5*time.Second)
			s.ServeHTTP(next, httptest.NewRequest("GET", "/2018-06-01/runtime/invocation/next", nil).WithContext(nctx))
			ncancel()
			if next.Code != 200 {
				t.Fatalf("after %s %q: /next answered %d", method, path, next.Code)
			}
		}
		resp := httptest.NewRecorder()
		s.ServeHTTP(resp, httptest.NewRequest("POST", "/2018-06-01/runtime/invocation/req-1/response", bytes.NewReader([]byte(`"fine"`))))
		if resp.Code != 202 {
			t.Fatalf("after %s %q: /response answered %d %s", method, path, resp.Code, resp.Body)
		}
		select {
		case res := <-done:
			if res == nil || string(res.Payload) != `"fine"` {
				t.Fatalf("after %s %q: the invocation ended with %+v", method, path, res)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("after %s %q: the invocation never completed", method, path)
		}
	})
}

// FuzzHTTPServer writes arbitrary bytes to a connection of the Runtime
// API's HTTP server: it answers or hangs up, never hangs or fails, and the
// next connection is served normally.
func FuzzHTTPServer(f *testing.F) {
	for _, seed := range []string{
		"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabcGET / HTTP/1.1\r\n\r\n",
		"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
		"POST / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n",
		"POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n",
		"GET / HTTP/1.0\r\n\r\n", "\r\n\r\n", "GET /\x00 HTTP/1.1\r\n\r\n",
	} {
		f.Add([]byte(seed))
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		f.Fatal(err)
	}
	hs := NewHTTPServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, io.LimitReader(r.Body, 1<<20))
		w.Write([]byte("ok"))
	}))
	go hs.Serve(ln)
	defer hs.Close()
	addr := ln.Addr().String()
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		c.Write(data)
		c.(*net.TCPConn).CloseWrite()
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.Copy(io.Discard, c); err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatalf("%q: the server neither answered nor hung up", data)
			}
		}
		c.Close()
		resp, err := (&http.Client{Timeout: 5 * time.Second}).Get("http://" + addr + "/")
		if err != nil {
			t.Fatalf("after %q: %v", data, err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("after %q: status %d", data, resp.StatusCode)
		}
	})
}
