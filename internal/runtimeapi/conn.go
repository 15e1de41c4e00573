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
// A runtime is untrusted code: request heads are limited to maxHeadBytes
// (net/http's default),
// a body the handler did not read is drained up to maxDrainBytes (beyond
// that the connection is closed), and an instance may hold at most
// maxConns connections.
type HTTPServer struct {
	handler http.Handler

	mu     sync.Mutex
	ln     net.Listener
	conns  map[net.Conn]context.CancelFunc // ends the connection's requests
	closed bool
}

const (
	maxHeadBytes  = 1 << 20
	maxDrainBytes = 256 << 10
	maxConns      = 64
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
		head.N = maxHeadBytes
		req, err := http.ReadRequest(br)
		if err != nil {
			if errors.Is(err, io.EOF) && head.N == maxHeadBytes {
				return // closed between requests
			}
			status := http.StatusBadRequest
			if head.N <= 0 {
				status = http.StatusRequestHeaderFieldsTooLarge
			}
			writeResponse(bw, status, http.Header{"Content-Type": {"text/plain"}}, []byte(http.StatusText(status)), true, false)
			return
		}
		head.N = 1<<63 - 1 // the body is the handler's to limit
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
		// starts where it should; past the bound, close instead.
		n, _ := io.Copy(io.Discard, io.LimitReader(req.Body, maxDrainBytes+1))
		closeAfter := req.Close || n > maxDrainBytes
		req.Body.Close()
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
