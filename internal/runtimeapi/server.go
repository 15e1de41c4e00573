// Package runtimeapi implements the server side of the AWS Lambda Runtime API
// (../shared/lambda/runtime-api.yaml) for one function instance.
//
// A Server is an http.Handler that a sandbox driver serves on an address the
// instance can reach. The worker calls Invoke; the runtime inside the
// instance picks the invocation up with GET /runtime/invocation/next and
// answers it with POST …/{id}/response or …/{id}/error. One invocation is in
// flight at a time, as in Lambda.
//
// Aloft adds one endpoint for pre-started (pooled) instances: a runtime
// started in pool mode calls GET /2018-06-01/runtime/aloft/specialize, which
// blocks until the worker assigns the instance a function with Specialize,
// and answers {"env": {...}}, the function's whole environment.
package runtimeapi

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"
)

// MaxResponseBytes is the largest response a runtime may post: 6 MiB plus
// 100 bytes, as AWS's emulator allows.
const MaxResponseBytes = 6*1024*1024 + 100

const prefix = "/2018-06-01/runtime/"

// Errors Invoke returns.
var (
	// ErrInitFailed: the runtime posted to /runtime/init/error; the result
	// holds the error it reported.
	ErrInitFailed = errors.New("runtime init failed")
	// ErrClosed: the server was closed (the instance is going away).
	ErrClosed = errors.New("runtime api closed")
	// ErrBusy: an invocation is already in flight on this instance.
	ErrBusy = errors.New("instance busy")
)

// Invocation is one event handed to the runtime.
type Invocation struct {
	RequestID          string
	Payload            []byte
	Deadline           time.Time
	InvokedFunctionARN string
	TraceID            string
	ClientContext      string // JSON; sent as Lambda-Runtime-Client-Context when set
	CognitoIdentity    string // JSON; sent as Lambda-Runtime-Cognito-Identity when set
}

// Result is what the runtime answered.
type Result struct {
	Payload []byte // the response body, or the error document when Error
	Error   bool   // posted to …/error (or /init/error)
	// ErrorType is the Lambda-Runtime-Function-Error-Type header, or the
	// errorType of the posted document.
	ErrorType string
	// TooLarge: the runtime tried to post a response over MaxResponseBytes.
	TooLarge bool
}

// Server serves the Runtime API for one instance. Create it with New.
type Server struct {
	pending chan *call    // invocation waiting for /next; capacity 1
	ready   chan struct{} // closed on the first /next
	closed  chan struct{}

	readyOnce sync.Once
	closeOnce sync.Once

	mu        sync.Mutex
	active    *call           // the Invoke in progress, from its start until it returns
	current   *call           // invocation handed out by /next, not yet answered
	answered  map[string]bool // request ids already answered (recent ones)
	initError *Result         // posted to /runtime/init/error
	initDone  chan struct{}   // closed when initError is set
	initOnce  sync.Once

	specialize  chan map[string]string // capacity 1; the environment Specialize hands over
	poolReady   chan struct{}          // closed on the first GET aloft/specialize
	poolOnce    sync.Once
	specialized bool // guarded by mu
}

type call struct {
	inv    *Invocation
	result chan *Result // capacity 1
}

// New returns a Server with no invocation pending.
func New() *Server {
	return &Server{
		pending:  make(chan *call, 1),
		ready:    make(chan struct{}),
		closed:   make(chan struct{}),
		answered: make(map[string]bool),
		initDone: make(chan struct{}),

		specialize: make(chan map[string]string, 1),
		poolReady:  make(chan struct{}),
	}
}

// PoolReady is closed when a runtime started in pool mode first asks to be
// specialised: it has initialised everything that does not depend on a
// function and waits for one.
func (s *Server) PoolReady() <-chan struct{} { return s.poolReady }

// ErrSpecialized is returned by Specialize on its second call.
var ErrSpecialized = errors.New("instance already specialised")

// Specialize hands env, the environment of the function the instance now
// runs, to the runtime's GET aloft/specialize: at once when the runtime
// waits there, otherwise when it asks. It may be called once.
func (s *Server) Specialize(env map[string]string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.specialized {
		return ErrSpecialized
	}
	s.specialized = true
	s.specialize <- env // capacity 1, never sent before: does not block
	return nil
}

// Ready is closed when the runtime first asks for an invocation, which ends
// its initialisation.
func (s *Server) Ready() <-chan struct{} { return s.ready }

// InitFailed is closed when the runtime reported an init error.
func (s *Server) InitFailed() <-chan struct{} { return s.initDone }

// InitError returns what the runtime posted to /runtime/init/error, or nil.
func (s *Server) InitError() *Result {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.initError
}

// Close ends pending and future /next calls with 500 and makes Invoke
// return ErrClosed.
func (s *Server) Close() { s.closeOnce.Do(func() { close(s.closed) }) }

// Invoke hands inv to the runtime and waits for its answer. It returns
// ErrInitFailed (with the init error as the result) when the runtime failed
// to initialise, ErrClosed when the server closes, and ctx.Err() when ctx
// ends first; in each error case the invocation is withdrawn.
func (s *Server) Invoke(ctx context.Context, inv *Invocation) (*Result, error) {
	c := &call{inv: inv, result: make(chan *Result, 1)}
	s.mu.Lock()
	if s.active != nil {
		s.mu.Unlock()
		return nil, ErrBusy
	}
	s.active = c
	s.mu.Unlock()
	s.pending <- c // does not block: only the active call is ever pending
	defer s.withdraw(c)
	select {
	case r := <-c.result:
		return r, nil
	case <-s.initDone:
		return s.InitError(), ErrInitFailed
	case <-s.closed:
		return nil, ErrClosed
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// withdraw removes c from the server, whether or not it was answered, so a
// late answer gets 400 and the next invocation starts clean.
func (s *Server) withdraw(c *call) {
	select {
	case p := <-s.pending:
		if p != c {
			s.pending <- p
		}
	default:
	}
	s.mu.Lock()
	if s.current == c {
		s.current = nil
	}
	s.active = nil
	s.mu.Unlock()
}

// ServeHTTP routes the Runtime API.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	path, ok := strings.CutPrefix(r.URL.Path, prefix)
	if !ok {
		writeError(w, http.StatusNotFound, "InvalidURL", "unknown path "+r.URL.Path)
		return
	}
	switch {
	case path == "invocation/next":
		if r.Method != http.MethodGet {
			writeError(w, http.StatusMethodNotAllowed, "MethodNotAllowed", "use GET")
			return
		}
		s.next(w, r)
	case path == "aloft/specialize":
		if r.Method != http.MethodGet {
			writeError(w, http.StatusMethodNotAllowed, "MethodNotAllowed", "use GET")
			return
		}
		s.awaitSpecialize(w, r)
	case path == "init/error":
		if r.Method != http.MethodPost {
			writeError(w, http.StatusMethodNotAllowed, "MethodNotAllowed", "use POST")
			return
		}
		s.postInitError(w, r)
	case strings.HasPrefix(path, "invocation/"):
		id, kind, ok := strings.Cut(strings.TrimPrefix(path, "invocation/"), "/")
		if !ok || (kind != "response" && kind != "error") {
			writeError(w, http.StatusNotFound, "InvalidURL", "unknown path "+r.URL.Path)
			return
		}
		if r.Method != http.MethodPost {
			writeError(w, http.StatusMethodNotAllowed, "MethodNotAllowed", "use POST")
			return
		}
		s.postResult(w, r, id, kind == "error")
	default:
		writeError(w, http.StatusNotFound, "InvalidURL", "unknown path "+r.URL.Path)
	}
}

func (s *Server) next(w http.ResponseWriter, r *http.Request) {
	s.readyOnce.Do(func() { close(s.ready) })
	var c *call
	for c == nil {
		select {
		case c = <-s.pending:
		case <-s.closed:
			writeError(w, http.StatusInternalServerError, "ContainerError", "instance is shutting down")
			return
		case <-r.Context().Done():
			return
		}
		s.mu.Lock()
		if s.active != c {
			c = nil // withdrawn while we took it; wait for the next one
		} else if !peerAlive(r) {
			// The runtime hung up while it waited: give the invocation back
			// for its next /next, on a connection that is there.
			s.pending <- c // the only pending call is the one just taken
			s.mu.Unlock()
			return
		} else {
			s.current = c
		}
		s.mu.Unlock()
	}

	inv := c.inv
	h := w.Header()
	h["Lambda-Runtime-Aws-Request-Id"] = []string{inv.RequestID}
	h["Lambda-Runtime-Deadline-Ms"] = []string{strconv.FormatInt(inv.Deadline.UnixMilli(), 10)}
	h["Lambda-Runtime-Invoked-Function-Arn"] = []string{inv.InvokedFunctionARN}
	h["Lambda-Runtime-Trace-Id"] = []string{inv.TraceID}
	if inv.ClientContext != "" {
		h["Lambda-Runtime-Client-Context"] = []string{inv.ClientContext}
	}
	if inv.CognitoIdentity != "" {
		h["Lambda-Runtime-Cognito-Identity"] = []string{inv.CognitoIdentity}
	}
	h["Content-Type"] = []string{"application/json"}
	h["Content-Length"] = []string{strconv.Itoa(len(inv.Payload))}
	w.WriteHeader(http.StatusOK)
	w.Write(inv.Payload)
}

// awaitSpecialize blocks a pooled runtime until Specialize gives it a
// function's environment.
func (s *Server) awaitSpecialize(w http.ResponseWriter, r *http.Request) {
	s.poolOnce.Do(func() { close(s.poolReady) })
	var env map[string]string
	select {
	case env = <-s.specialize:
		if !peerAlive(r) {
			s.specialize <- env // keep it for the runtime's next ask
			return
		}
	case <-s.closed:
		writeError(w, http.StatusInternalServerError, "ContainerError", "instance is shutting down")
		return
	case <-r.Context().Done():
		return
	}
	b, err := json.Marshal(struct {
		Env map[string]string `json:"env"`
	}{env})
	if err != nil { // cannot happen with string maps
		writeError(w, http.StatusInternalServerError, "ServiceException", err.Error())
		return
	}
	writeJSON(w, http.StatusOK, b)
}

func (s *Server) postResult(w http.ResponseWriter, r *http.Request, id string, isError bool) {
	s.mu.Lock()
	c := s.current
	if c == nil || c.inv.RequestID != id {
		done := s.answered[id]
		s.mu.Unlock()
		if done {
			writeError(w, http.StatusForbidden, "InvalidStateTransition",
				"Invalid state transition: the invocation "+id+" was already answered")
			return
		}
		writeError(w, http.StatusBadRequest, "InvalidRequestID", "Invalid request ID: "+id)
		return
	}
	s.mu.Unlock()

	body, err := io.ReadAll(io.LimitReader(r.Body, MaxResponseBytes+1))
	if err != nil {
		writeError(w, http.StatusBadRequest, "InvalidRequest", "cannot read body: "+err.Error())
		return
	}
	res := &Result{Payload: body, Error: isError}
	if len(body) > MaxResponseBytes {
		res = &Result{TooLarge: true, Error: true, ErrorType: "Function.ResponseSizeTooLarge",
			Payload: tooLargeDoc}
	} else if isError {
		res.ErrorType = errorType(r.Header.Get("Lambda-Runtime-Function-Error-Type"), body)
	}

	s.mu.Lock()
	if s.current != c { // answered meanwhile (a racing second post)
		s.mu.Unlock()
		writeError(w, http.StatusForbidden, "InvalidStateTransition",
			"Invalid state transition: the invocation "+id+" was already answered")
		return
	}
	s.current = nil
	s.remember(id)
	s.mu.Unlock()
	c.result <- res
	// Let the waiting invoker answer its caller before this goroutine
	// spends a write on the runtime's 202: the caller waits on that answer,
	// the runtime only on its next invocation.
	runtime.Gosched()

	if res.TooLarge {
		writeJSON(w, http.StatusRequestEntityTooLarge, tooLargeDoc)
		return
	}
	writeJSON(w, http.StatusAccepted, statusOK)
}

// remember records an answered request id so a second answer gets 403.
// It keeps the last few ids only; the caller holds s.mu.
func (s *Server) remember(id string) {
	if len(s.answered) >= 64 {
		clear(s.answered)
	}
	s.answered[id] = true
}

func (s *Server) postInitError(w http.ResponseWriter, r *http.Request) {
	select {
	case <-s.initDone: // refuse before reading: the body is the node's cost
		writeError(w, http.StatusForbidden, "InvalidStateTransition", "init error already reported")
		return
	default:
	}
	body, _ := io.ReadAll(io.LimitReader(r.Body, MaxResponseBytes))
	res := &Result{Payload: body, Error: true,
		ErrorType: errorType(r.Header.Get("Lambda-Runtime-Function-Error-Type"), body)}
	set := false
	s.initOnce.Do(func() {
		s.mu.Lock()
		s.initError = res
		s.mu.Unlock()
		close(s.initDone)
		set = true
	})
	if !set {
		writeError(w, http.StatusForbidden, "InvalidStateTransition", "init error already reported")
		return
	}
	writeJSON(w, http.StatusAccepted, statusOK)
}

// errorType prefers the header, then the document's errorType.
func errorType(header string, body []byte) string {
	if header != "" {
		return header
	}
	var doc struct {
		ErrorType string `json:"errorType"`
	}
	if json.Unmarshal(body, &doc) == nil && doc.ErrorType != "" {
		return doc.ErrorType
	}
	return "Unhandled"
}

var (
	statusOK    = []byte(`{"status":"OK"}`)
	tooLargeDoc = []byte(`{"errorMessage":"Exceeded maximum allowed payload size (6291556 bytes).","errorType":"RequestEntityTooLarge"}`)
)

func writeJSON(w http.ResponseWriter, status int, body []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(body)
}

func writeError(w http.ResponseWriter, status int, typ, msg string) {
	b, _ := json.Marshal(map[string]string{"errorMessage": msg, "errorType": typ})
	writeJSON(w, status, b)
}
