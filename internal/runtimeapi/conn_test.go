package runtimeapi

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// raw sends text on a new connection to addr and returns the connection
// and a reader of what comes back.
func raw(t *testing.T, url, text string) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", strings.TrimPrefix(url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, text); err != nil {
		t.Fatal(err)
	}
	return c, bufio.NewReader(c)
}

func readResponse(t *testing.T, br *bufio.Reader) (*http.Response, string) {
	t.Helper()
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(b)
}

// echo answers with the method, the path and the body it read.
var echo = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	w.Header().Set("Content-Type", "text/plain")
	fmt.Fprintf(w, "%s %s %s", r.Method, r.URL.Path, b)
})

func TestHTTPServerKeepAliveAndBodies(t *testing.T) {
	url := serve(t, echo)
	_, br := raw(t, url, "GET /a HTTP/1.1\r\nHost: x\r\n\r\n"+
		"POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"+
		"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"+
		"HEAD /d HTTP/1.1\r\nHost: x\r\n\r\n"+ // answered without its body,
		"GET /e HTTP/1.1\r\nHost: x\r\n\r\n") // so this answer parses
	for _, want := range []string{"GET /a ", "POST /b hello", "POST /c abcde"} {
		resp, body := readResponse(t, br)
		if resp.StatusCode != 200 || body != want || resp.Close {
			t.Fatalf("response %d %q (close %v), want 200 %q on a kept connection", resp.StatusCode, body, resp.Close, want)
		}
	}
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodHead})
	if err != nil || resp.StatusCode != 200 || resp.ContentLength != int64(len("HEAD /d ")) {
		t.Fatalf("HEAD: %v, %v; want 200 with the length of the body it does not carry", resp, err)
	}
	if resp, body := readResponse(t, br); resp.StatusCode != 200 || body != "GET /e " {
		t.Fatalf("after HEAD: %d %q, want 200 %q", resp.StatusCode, body, "GET /e ")
	}
}

// curl sends Expect: 100-continue for large bodies and waits for the
// interim response before sending the body.
func TestHTTPServerExpectContinue(t *testing.T) {
	url := serve(t, echo)
	c, br := raw(t, url, "POST /e HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n")
	line, err := br.ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "HTTP/1.1 100 Continue") {
		t.Fatalf("interim response %q, %v; want 100 Continue", line, err)
	}
	br.ReadString('\n') // the empty line
	io.WriteString(c, "xyz")
	if resp, body := readResponse(t, br); resp.StatusCode != 200 || body != "POST /e xyz" {
		t.Fatalf("response %d %q, want 200 %q", resp.StatusCode, body, "POST /e xyz")
	}
}

func TestHTTPServerBadRequests(t *testing.T) {
	url := serve(t, echo)
	cases := []struct {
		name, text string
		status     int
	}{
		{"garbage", "NOT HTTP\r\n\r\n", 400},
		{"bad content length", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -3\r\n\r\n", 400},
		{"head too large", "GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("a", maxHeadBytes) + "\r\n\r\n", 431},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, br := raw(t, url, c.text)
			resp, _ := readResponse(t, br)
			if resp.StatusCode != c.status || !resp.Close {
				t.Fatalf("status %d (close %v), want %d and the connection closed", resp.StatusCode, resp.Close, c.status)
			}
			if _, err := br.ReadByte(); err == nil {
				t.Fatal("the connection stayed open after a bad request")
			}
		})
	}
}

// A body the handler did not read is skipped when small; a large one ends
// the connection after the response. HTTP/1.0 and Connection: close end it
// too.
func TestHTTPServerUnreadBodiesAndClose(t *testing.T) {
	ignore := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusAccepted) })
	url := serve(t, ignore)
	_, br := raw(t, url, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nbody"+"GET /next HTTP/1.1\r\nHost: x\r\n\r\n")
	for range 2 {
		if resp, _ := readResponse(t, br); resp.StatusCode != 202 || resp.Close {
			t.Fatalf("status %d (close %v), want 202 on a kept connection", resp.StatusCode, resp.Close)
		}
	}
	big := strings.Repeat("b", maxDrainBytes+10)
	for _, text := range []string{
		"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: " + fmt.Sprint(len(big)) + "\r\n\r\n" + big,
		"GET / HTTP/1.0\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
	} {
		_, br := raw(t, url, text)
		if resp, _ := readResponse(t, br); resp.StatusCode != 202 || !resp.Close {
			t.Fatalf("%.40q: status %d (close %v), want 202 and Connection: close", text, resp.StatusCode, resp.Close)
		}
		if _, err := br.ReadByte(); err == nil {
			t.Fatalf("%.40q: the connection stayed open", text)
		}
	}
}

// A runtime that hangs up while waiting on /next does not swallow the
// invocation: it goes to the runtime's next /next, on a new connection.
func TestHangUpWhileWaitingForNext(t *testing.T) {
	s, url := start(t)
	c, _ := raw(t, url, "GET "+nextPath+" HTTP/1.1\r\nHost: x\r\n\r\n")
	time.Sleep(50 * time.Millisecond) // the request waits in /next
	c.Close()
	time.Sleep(50 * time.Millisecond)
	done := make(chan *Result, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		res, err := s.Invoke(ctx, &Invocation{RequestID: "r1", Payload: []byte(`{"n":1}`), Deadline: time.Now().Add(time.Minute)})
		if err != nil {
			t.Error(err)
		}
		done <- res
	}()
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Get(url + nextPath)
	if err != nil {
		t.Fatalf("/next after the hang-up: %v, want the invocation", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != `{"n":1}` {
		t.Fatalf("/next after the hang-up: %d %q, want the invocation", resp.StatusCode, body)
	}
	if ans := do("POST", url+respPath("r1"), nil, []byte(`"ok"`)); ans.status != 202 {
		t.Fatalf("/response: %d %s", ans.status, ans.body)
	}
	select {
	case res := <-done:
		if res == nil || string(res.Payload) != `"ok"` {
			t.Fatalf("Invoke = %+v, want the answer", res)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Invoke did not return")
	}
}

// Likewise a pooled runtime that hangs up while waiting to be specialised
// leaves the environment for its next ask.
func TestHangUpWhileWaitingForSpecialize(t *testing.T) {
	s, url := start(t)
	c, _ := raw(t, url, "GET "+specializePath+" HTTP/1.1\r\nHost: x\r\n\r\n")
	<-s.PoolReady()
	c.Close()
	time.Sleep(50 * time.Millisecond)
	if err := s.Specialize(map[string]string{"A": "1"}); err != nil {
		t.Fatal(err)
	}
	select {
	case ans := <-getSpecialize(url):
		if ans.status != 200 || ans.env["A"] != "1" {
			t.Fatalf("specialize after the hang-up: %d %v %v, want the environment", ans.status, ans.env, ans.err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("specialize after the hang-up did not answer")
	}
}

func TestHTTPServerConnectionLimitAndClose(t *testing.T) {
	var waiting, ended sync.WaitGroup
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer ended.Done()
		waiting.Done()
		<-r.Context().Done()
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := NewHTTPServer(h)
	served := make(chan error, 1)
	go func() { served <- hs.Serve(ln) }()
	url := "http://" + ln.Addr().String()
	waiting.Add(maxConns)
	ended.Add(maxConns)
	for range maxConns {
		raw(t, url, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	}
	waiting.Wait()
	_, br := raw(t, url, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	if _, err := br.ReadByte(); err == nil {
		t.Fatalf("connection %d was served, want it closed", maxConns+1)
	}
	// Close ends the waiting handlers' requests and Serve.
	hs.Close()
	select {
	case err := <-served:
		if !errors.Is(err, http.ErrServerClosed) {
			t.Fatalf("Serve after Close: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after Close")
	}
	handlers := make(chan struct{})
	go func() { ended.Wait(); close(handlers) }()
	select {
	case <-handlers:
	case <-time.After(10 * time.Second):
		t.Fatal("waiting handlers did not end after Close")
	}
}

// flood sends head and then writes body bytes until the connection stops
// taking them, and returns how many it took. It fails the test past limit:
// the server read what it should have refused.
func flood(t *testing.T, url, head string, chunked bool, limit int) int {
	t.Helper()
	c, _ := raw(t, url, head)
	buf := make([]byte, 64<<10)
	for i := range buf {
		buf[i] = 'x'
	}
	if chunked {
		buf = append([]byte(fmt.Sprintf("%x\r\n", len(buf))), append(buf, "\r\n"...)...)
	}
	sent := 0
	for sent <= limit {
		c.SetWriteDeadline(time.Now().Add(5 * time.Second))
		n, err := c.Write(buf)
		sent += n
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatalf("after %d bytes the server neither reads nor closes the connection", sent)
			}
			return sent
		}
	}
	t.Fatalf("the server read more than %d bytes of a body it refused", limit)
	return sent
}

// A runtime posting an endless body to a path that refuses it costs the
// node at most maxDrainBytes (plus what the sockets buffer), not the
// whole body: the connection is abandoned unread.
func TestRefusedBodiesAreNotRead(t *testing.T) {
	_, url := start(t)
	const limit = 64 << 20 // far above the sockets' buffers, far below 1 GiB
	for _, c := range []struct {
		name, head string
		chunked    bool
	}{
		{"content length", "POST " + respPath("nobody") + " HTTP/1.1\r\nHost: x\r\nContent-Length: 1073741824\r\n\r\n", false},
		{"chunked", "POST " + respPath("nobody") + " HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n", true},
		{"unknown path", "POST /2018-06-01/runtime/flood HTTP/1.1\r\nHost: x\r\nContent-Length: 1073741824\r\n\r\n", false},
		{"second init error", "POST " + initPath + " HTTP/1.1\r\nHost: x\r\nContent-Length: 1073741824\r\n\r\n", false},
	} {
		t.Run(c.name, func(t *testing.T) {
			if c.name == "second init error" {
				if ans := do("POST", url+initPath, nil, []byte(`{}`)); ans.status != 202 {
					t.Fatalf("first init error: %d %s", ans.status, ans.body)
				}
			}
			sent := flood(t, url, c.head, c.chunked, limit)
			t.Logf("the connection took %d bytes", sent)
		})
	}
}

// withTimeouts shortens the connection deadlines for one test.
func withTimeouts(t *testing.T, head, body time.Duration) {
	oldHead, oldBody := headReadTimeout, bodyReadTimeout
	headReadTimeout, bodyReadTimeout = head, body
	t.Cleanup(func() { headReadTimeout, bodyReadTimeout = oldHead, oldBody })
}

// A head or body that stops arriving ends its connection; a connection
// idle between requests stays open however long.
func TestSlowRequestsAreCutOff(t *testing.T) {
	withTimeouts(t, 200*time.Millisecond, 200*time.Millisecond)
	url := serve(t, echo)

	_, br := raw(t, url, "GET "+nextPath+" HTTP/1.1\r\nHost: x\r\nX-Half")
	if resp, _ := readResponse(t, br); resp.StatusCode != http.StatusRequestTimeout || !resp.Close {
		t.Fatalf("half a head: %d (close %v), want 408 and the connection closed", resp.StatusCode, resp.Close)
	}
	if _, err := br.ReadByte(); err == nil {
		t.Fatal("half a head: the connection stayed open")
	}

	_, br = raw(t, url, "POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
	resp, _ := readResponse(t, br)
	if !resp.Close {
		t.Fatalf("half a body: %d on a kept connection, want it closed", resp.StatusCode)
	}
	if _, err := br.ReadByte(); err == nil {
		t.Fatal("half a body: the connection stayed open")
	}

	c, br := raw(t, url, "")
	time.Sleep(4 * headReadTimeout)
	io.WriteString(c, "GET /idle HTTP/1.1\r\nHost: x\r\n\r\n")
	if resp, body := readResponse(t, br); resp.StatusCode != 200 || body != "GET /idle " || resp.Close {
		t.Fatalf("after idling: %d %q (close %v), want 200 on a kept connection", resp.StatusCode, body, resp.Close)
	}
	time.Sleep(4 * headReadTimeout) // and again, after a request
	io.WriteString(c, "GET /again HTTP/1.1\r\nHost: x\r\n\r\n")
	if resp, body := readResponse(t, br); resp.StatusCode != 200 || body != "GET /again " {
		t.Fatalf("after idling again: %d %q, want 200", resp.StatusCode, body)
	}
}
