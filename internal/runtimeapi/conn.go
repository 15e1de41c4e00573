package runtimeapi

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// HTTPServer serves an instance's Runtime API connections: one goroutine
// per connection reads requests with the standard library's parser
// (http.ReadRequest) and answers them in order.
//
// It replaces net/http's server on this path for speed: net/http starts a
// goroutine per request to notice a client going away, and on a mostly
// idle node each such start wakes another OS thread; an invocation makes
// two Runtime API requests. What that goroutine was for is done here on
// demand: before Server hands an invocation (or a pooled instance's
// environment) to a request that waited, it asks the connection whether the
// runtime is still there (peerAlive), and gives the work back if not.
//
// A runtime is untrusted code, and what the node spends on it is not billed
// to it: request heads are limited to maxHeadBytes (the Runtime API's are a
// few hundred bytes; an error's X-Ray cause header may take a few KB) and
// must arrive within headReadTimeout of their first byte, a body must
// arrive within bodyReadTimeout, a body the handler did not read is
// skipped up to maxDrainBytes and beyond that the connection is abandoned
// unread, and an instance may hold at most maxConns connections. An idle
// connection between requests has no deadline: runtimes keep theirs open.
type HTTPServer struct {
	handler http.Handler

	mu     sync.Mutex
	ln     net.Listener
	conns  map[net.Conn]context.CancelFunc // ends the connection's requests
	closed bool
}

const (
	maxHeadBytes  = 64 << 10
	maxDrainBytes = 64 << 10
	maxConns      = 32
)

// Read deadlines of a request's head (from its first byte) and body
// (variables for tests).
var (
	headReadTimeout = 10 * time.Second
	bodyReadTimeout = 30 * time.Second
)

// NewHTTPServer returns a server of h.
func NewHTTPServer(h http.Handler) *HTTPServer {
	return &HTTPServer{handler: h, conns: make(map[net.Conn]context.CancelFunc)}
}

// Serve accepts connections on ln until Close. It returns
// http.ErrServerClosed after Close.
func (s *HTTPServer) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		ln.Close()
		return http.ErrServerClosed
	}
	s.ln = ln
	s.mu.Unlock()
	var backoff time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			s.mu.Lock()
			closed := s.closed
			s.mu.Unlock()
			if closed {
				return http.ErrServerClosed
			}
			if errors.Is(err, net.ErrClosed) {
				return err
			}
			// Out of file descriptors, say: wait and try again, as
			// net/http does.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		ctx, cancel := context.WithCancel(context.Background())
		s.mu.Lock()
		if s.closed || len(s.conns) >= maxConns {
			s.mu.Unlock()
			cancel()
			c.Close()
			continue
		}
		s.conns[c] = cancel
		s.mu.Unlock()
		go s.serveConn(ctx, c)
	}
}

// Close closes the listener and every connection; handlers waiting for an
// invocation see their request's context end.
func (s *HTTPServer) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	var err error
	if s.ln != nil {
		err = s.ln.Close()
	}
	for c, cancel := range s.conns {
		cancel()
		c.Close()
	}
	return err
}

type aliveKey struct{}

// peerAlive reports whether the client of r is still connected, as far
// as the connection can tell without reading: false only when it has hung
// up. Requests not served by an HTTPServer are always alive.
func peerAlive(r *http.Request) bool {
	if f, ok := r.Context().Value(aliveKey{}).(func() bool); ok {
		return f()
	}
	return true
}

func (s *HTTPServer) serveConn(ctx context.Context, c net.Conn) {
	defer func() {
		c.Close()
		s.mu.Lock()
		if cancel, ok := s.conns[c]; ok {
			cancel()
			delete(s.conns, c)
		}
		s.mu.Unlock()
	}()
	ctx = context.WithValue(ctx, aliveKey{}, func() bool { return connAlive(c) })
	head := &io.LimitedReader{R: c}
	br := bufio.NewReaderSize(head, 4096)
	bw := bufio.NewWriterSize(c, 4096)
	for {
		// Wait for the next request without a deadline, then give its
		// head a bounded time to arrive.
		head.N = maxHeadBytes
		if _, err := br.Peek(1); err != nil {
			return // closed between requests
		}
		deadline := time.Now().Add(headReadTimeout)
		c.SetReadDeadline(deadline)
		req, err := http.ReadRequest(br)
		if err != nil {
			// (A head cut short by the deadline may also read as
			// malformed: its last line is partial.)
			status := http.StatusBadRequest
			switch {
			case head.N <= 0:
				status = http.StatusRequestHeaderFieldsTooLarge
			case !time.Now().Before(deadline):
				status = http.StatusRequestTimeout
			}
			writeResponse(bw, status, http.Header{"Content-Type": {"text/plain"}}, []byte(http.StatusText(status)), true, false)
			return
		}
		head.N = 1<<63 - 1 // the body is the handler's to limit
		if req.ContentLength == 0 {
			c.SetReadDeadline(time.Time{}) // nothing more to read
		} else {
			c.SetReadDeadline(time.Now().Add(bodyReadTimeout))
		}
		req.RemoteAddr = c.RemoteAddr().String()
		req = req.WithContext(ctx)
		if req.Header.Get("Expect") == "100-continue" && req.ContentLength != 0 {
			bw.WriteString("HTTP/1.1 100 Continue\r\n\r\n")
			if bw.Flush() != nil {
				return
			}
		}
		w := &responseWriter{header: make(http.Header)}
		s.handler.ServeHTTP(w, req)
		// Skip what the handler left of the body, so the next request
		// starts where it should. Past the bound, answer and abandon the
		// connection without reading on: the body's Close would read it to
		// its end, however long, on the node's CPU.
		n, err := io.Copy(io.Discard, io.LimitReader(req.Body, maxDrainBytes+1))
		closeAfter := req.Close || n > maxDrainBytes || err != nil
		if !closeAfter {
			req.Body.Close() // at its end already
		}
		c.SetReadDeadline(time.Time{})
		if w.status == 0 {
			w.status = http.StatusOK
		}
		if writeResponse(bw, w.status, w.header, w.body.Bytes(), closeAfter, req.Method == http.MethodHead) != nil || closeAfter {
			return
		}
	}
}

// writeResponse writes one HTTP/1.1 response with its Content-Length (and
// without its body when answering HEAD).
func writeResponse(bw *bufio.Writer, status int, h http.Header, body []byte, closeAfter, head bool) error {
	bw.WriteString("HTTP/1.1 ")
	bw.WriteString(strconv.Itoa(status))
	bw.WriteByte(' ')
	bw.WriteString(http.StatusText(status))
	bw.WriteString("\r\n")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	if closeAfter {
		h.Set("Connection", "close")
	}
	h.Write(bw) // drops CR and LF from values
	bw.WriteString("\r\n")
	if !head {
		bw.Write(body)
	}
	return bw.Flush()
}

// responseWriter gathers a handler's response; serveConn writes it whole.
type responseWriter struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (w *responseWriter) Header() http.Header { return w.header }

func (w *responseWriter) WriteHeader(status int) {
	if w.status == 0 {
		w.status = status
	}
}

func (w *responseWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.body.Write(b)
}

// connAlive peeks at c without blocking: a peer that hung up reads as end
// of file (or a reset); one that is waiting for its answer has nothing to
// read.
func connAlive(c net.Conn) bool {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return true
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return true
	}
	alive := true
	var buf [1]byte
	rc.Read(func(fd uintptr) bool {
		n, _, err := syscall.Recvfrom(int(fd), buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		switch {
		case errors.Is(err, syscall.EAGAIN), errors.Is(err, syscall.EINTR):
		case err != nil:
			alive = false // reset
		case n == 0:
			alive = false // end of file
		}
		return true // never wait
	})
	return alive
}
