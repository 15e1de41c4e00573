// Package worker runs invocations on function instances: it keeps a pool of
// instances per function, starts one through the sandbox driver when no warm
// one is idle (a cold start), hands the event over through the instance's
// Runtime API, enforces the timeout, turns crashes into Lambda errors, and
// writes each invocation's log text and usage record to a Sink.
package worker

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"runtime"
	"strconv"
	"sync"
	"time"

	"github.com/aloft-dev/aloft/internal/model"
	"github.com/aloft-dev/aloft/internal/runtimeapi"
	"github.com/aloft-dev/aloft/internal/sandbox"
	"github.com/aloft-dev/aloft/internal/scheduler"
	"github.com/aloft-dev/aloft/runtimes"
)

// Defaults of the Worker's settings.
const (
	DefaultKeepAlive   = 10 * time.Minute
	DefaultInitTimeout = 10 * time.Second // as Lambda's init phase
	DefaultLogLimit    = 256 << 10        // bytes of function output kept per invocation
	logTailBytes       = 4096
)

// Sink receives what invocations produce.
type Sink interface {
	// Log receives one invocation's log text: START, output, END, REPORT.
	Log(function string, text []byte)
	// Usage receives one invocation's metering record.
	Usage(u *model.Usage)
}

// CodeSource gives the host directory holding a function's unpacked code.
type CodeSource interface {
	CodeDir(ctx context.Context, fn *model.Function) (string, error)
}

// Request is one invocation as the gateway hands it over.
type Request struct {
	RequestID       string // generated when empty
	Payload         []byte
	ClientContext   string // JSON
	CognitoIdentity string // JSON
	TraceID         string // generated when empty
	// Attempt numbers the tries of an asynchronous invocation (0: sync).
	Attempt int
	// WantLog asks for Response.Log (X-Amz-Log-Type: Tail). Without it the
	// log text and usage record are written after the response returns.
	WantLog bool
}

// Response is the invocation's outcome as the caller sees it.
type Response struct {
	RequestID     string
	Payload       []byte
	FunctionError string // "Unhandled" when the function failed, else ""
	ErrorType     string
	Log           []byte       // the invocation's whole log text, when Request.WantLog
	Usage         *model.Usage // its usage record, when Request.WantLog
	Version       string
}

// LogTail returns the last 4 KB of the invocation's log, as Lambda's
// X-Amz-Log-Result carries it.
func (r *Response) LogTail() []byte {
	if len(r.Log) > logTailBytes {
		return r.Log[len(r.Log)-logTailBytes:]
	}
	return r.Log
}

// Worker runs invocations. Set the exported fields, then call Start.
type Worker struct {
	Driver     sandbox.Driver
	Code       CodeSource
	Sink       Sink
	RuntimeDir string // host directory of the extracted Node and Python bootstraps
	Logger     *slog.Logger
	// KeepAlive is how long an idle instance stays loaded (DefaultKeepAlive).
	KeepAlive time.Duration
	// InitTimeout bounds a runtime's initialisation (DefaultInitTimeout).
	InitTimeout time.Duration
	// LogLimit caps the function output kept per invocation (DefaultLogLimit).
	LogLimit        int
	Region, Account string
	// PoolSize is how many pre-started Node and Python instances the worker
	// keeps per runtime for cold starts (pool.go); 0 disables the pools.
	PoolSize int
	// PoolDir is a directory the worker owns for the code directories of
	// pooled instances, best on the code cache's filesystem so that code is
	// hard-linked, not copied (default: a new temporary directory).
	PoolDir string
	interp  interpPools
	// MemoryMB is the node's memory budget for instances; each instance
	// reserves its function's memory. 0 means no limit.
	MemoryMB int
	// QueueTimeout bounds how long an invocation waits for capacity before
	// it is throttled (DefaultQueueTimeout).
	QueueTimeout time.Duration
	// KeepAlivePolicy decides how long idle instances stay loaded and when
	// to pre-warm (default: fixed KeepAlive).
	KeepAlivePolicy scheduler.KeepAlivePolicy

	mu       sync.Mutex
	fns      map[string]*fnState
	changed  chan struct{} // closed and replaced when capacity may have freed up
	closing  bool
	inflight sync.WaitGroup
	stop     chan struct{}
	kick     chan struct{} // asks the reaper for an early pass
	reaped   chan struct{}
	records  chan *record  // invocations to account for, in order
	recorded chan struct{} // closed when recordLoop has drained records
}

// DefaultQueueTimeout is how long an invocation waits for capacity.
const DefaultQueueTimeout = 10 * time.Second

// fnState is the worker's state of one function, under Worker.mu.
type fnState struct {
	name      string
	fn        *model.Function // the latest config seen
	pool      *pool           // instances of the current revision
	instances int             // live instances of every revision, starting ones included
	usedMB    int             // memory they reserve

	// Keep-alive policy state (see scheduler.KeepAlivePolicy).
	hist       scheduler.IdleHistogram
	lastEnd    time.Time
	inFlight   int
	windows    scheduler.Windows
	prewarming bool
	// provStarting counts provisioned instances being started.
	provStarting int
}

// pool holds the instances of one function revision.
type pool struct {
	revision    string
	idle        []*instance // most recently used last
	busy        int
	starting    int
	provisioned int // provisioned instances, idle or busy
}

type instance struct {
	id          string
	st          *fnState
	revision    string
	memoryMB    int
	provisioned bool
	sb          sandbox.Instance
	api         *runtimeapi.Server
	logs        *logBuffer
	started     time.Time
	lastUsed    time.Time
	idleSince   time.Time
	windows     scheduler.Windows // keep-alive windows while idle
	// initDur is set after the first invocation found the runtime ready;
	// sandboxDur is the part of it spent getting the process running (the
	// driver's Start, or specialising a pooled instance).
	initDur    time.Duration
	sandboxDur time.Duration
	dropped    bool // removed from the accounting
	pooled     bool // a pre-started instance, specialised for its function
}

// Start begins the keep-alive reaper.
func (w *Worker) Start() {
	if w.KeepAlive == 0 {
		w.KeepAlive = DefaultKeepAlive
	}
	if w.InitTimeout == 0 {
		w.InitTimeout = DefaultInitTimeout
	}
	if w.LogLimit == 0 {
		w.LogLimit = DefaultLogLimit
	}
	if w.Region == "" {
		w.Region = model.DefaultRegion
	}
	if w.Account == "" {
		w.Account = model.DefaultAccountID
	}
	if w.Logger == nil {
		w.Logger = slog.New(slog.DiscardHandler)
	}
	if w.QueueTimeout == 0 {
		w.QueueTimeout = DefaultQueueTimeout
	}
	if w.KeepAlivePolicy == nil {
		w.KeepAlivePolicy = scheduler.FixedKeepAlive{KeepAlive: w.KeepAlive}
	}
	w.fns = make(map[string]*fnState)
	w.changed = make(chan struct{})
	w.stop = make(chan struct{})
	w.kick = make(chan struct{}, 1)
	w.reaped = make(chan struct{})
	w.records = make(chan *record, 1024)
	w.recorded = make(chan struct{})
	go w.reap()
	go w.recordLoop()
	w.startPools()
}

func revisionOf(fn *model.Function) string {
	return fn.CodeSHA256 + "@" + strconv.FormatInt(fn.LastModified.UnixNano(), 36)
}

// Invoke runs one invocation of fn and returns its outcome. A function
// error is a Response with FunctionError set, not an error; errors are the
// platform's (shutting down, cannot prepare code).
func (w *Worker) Invoke(ctx context.Context, fn *model.Function, req *Request) (*Response, error) {
	w.mu.Lock()
	if w.closing {
		w.mu.Unlock()
		return nil, model.ErrShuttingDown
	}
	w.inflight.Add(1)
	w.mu.Unlock()
	defer w.inflight.Done()
	// The invocation runs to its end even when the caller goes away, as in Lambda.
	ctx = context.WithoutCancel(ctx)

	if req.RequestID == "" {
		req.RequestID = NewRequestID()
	}
	if req.TraceID == "" {
		req.TraceID = newTraceID()
	}
	w.begin(fn)
	inst, cold, err := w.acquire(ctx, fn)
	if err != nil {
		w.end(fn.Name, nil, false)
		var throttled *model.ThrottledError
		if errors.As(err, &throttled) && w.Sink != nil {
			w.Sink.Usage(&model.Usage{Time: time.Now().UTC(), Function: fn.Name, RequestID: req.RequestID,
				MemoryMB: fn.Memory, Outcome: model.OutcomeThrottled})
		}
		if errors.Is(err, model.ErrShuttingDown) || throttled != nil {
			return nil, err
		}
		var start *startError
		if errors.As(err, &start) {
			o := outcome{
				errType: model.ErrTypeInvalidEntry, usage: model.OutcomeCrash, begin: time.Now(),
				msg: "RequestId: " + req.RequestID + " Error: " + start.Error(),
			}
			return w.respond(fn, req, nil, o, true), nil
		}
		return nil, err
	}
	res := w.run(ctx, fn, req, inst, cold)
	resp := w.respond(fn, req, inst, res, cold)
	w.end(fn.Name, inst, res.keep)
	return resp, nil
}

// outcome is what running an invocation on an instance produced.
type outcome struct {
	payload  []byte
	errType  string // set when the invocation failed
	msg      string // message of a platform-made error
	usage    string // model.Outcome*
	begin    time.Time
	duration time.Duration
	keep     bool // the instance may serve again
	logExtra string
}

func (w *Worker) run(ctx context.Context, fn *model.Function, req *Request, inst *instance, cold bool) outcome {
	if cold {
		if o, ok := w.awaitInit(inst, req); !ok {
			return o
		}
	}
	timeout := time.Duration(fn.Timeout) * time.Second
	begin := time.Now()
	deadline := begin.Add(timeout)
	ictx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	res, err := inst.api.Invoke(ictx, &runtimeapi.Invocation{
		RequestID:          req.RequestID,
		Payload:            req.Payload,
		Deadline:           deadline,
		InvokedFunctionARN: model.ARN(w.Region, w.Account, fn.Name),
		TraceID:            req.TraceID,
		ClientContext:      req.ClientContext,
		CognitoIdentity:    req.CognitoIdentity,
	})
	o := outcome{begin: begin, duration: time.Since(begin)}
	switch {
	case err == nil:
		inst.sb.FlushOutput()
		o.payload, o.keep = res.Payload, true
		o.usage = model.OutcomeSuccess
		if res.Error {
			o.errType, o.usage = res.ErrorType, model.OutcomeError
			if res.TooLarge {
				o.msg = "Response payload size exceeded maximum allowed payload size (6291556 bytes)."
			}
		}
	case errors.Is(err, context.DeadlineExceeded):
		inst.sb.Stop()
		o.errType, o.usage = model.ErrTypeTimeout, model.OutcomeTimeout
		o.msg = fmt.Sprintf("RequestId: %s Error: Task timed out after %.2f seconds", req.RequestID, timeout.Seconds())
		o.logExtra = fmt.Sprintf("%s %s Task timed out after %.2f seconds\n",
			time.Now().UTC().Format(time.RFC3339Nano), req.RequestID, timeout.Seconds())
	case errors.Is(err, runtimeapi.ErrInitFailed):
		o = w.initFailed(inst, res, o)
	default: // the process exited (ErrClosed)
		o = w.exited(inst, req, o)
	}
	return o
}

// awaitInit waits for the runtime's first /next. It returns false with the
// failure when the runtime crashed, reported an init error or took too long.
func (w *Worker) awaitInit(inst *instance, req *Request) (outcome, bool) {
	t := time.NewTimer(w.InitTimeout)
	defer t.Stop()
	begin := time.Now()
	select {
	case <-inst.api.Ready():
		inst.initDur = time.Since(inst.started)
		return outcome{}, true
	case <-inst.api.InitFailed():
		inst.initDur = time.Since(inst.started)
		return w.initFailed(inst, inst.api.InitError(), outcome{begin: begin}), false
	case <-inst.sb.Done():
		inst.initDur = time.Since(inst.started)
		return w.exited(inst, req, outcome{begin: begin}), false
	case <-t.C:
		inst.initDur = time.Since(inst.started)
		inst.sb.Stop()
		return outcome{begin: begin, errType: model.ErrTypeTimeout, usage: model.OutcomeTimeout,
			msg: fmt.Sprintf("RequestId: %s Error: Runtime init timed out after %.2f seconds", req.RequestID, w.InitTimeout.Seconds())}, false
	}
}

func (w *Worker) initFailed(inst *instance, res *runtimeapi.Result, o outcome) outcome {
	// The runtime exits after reporting; make sure it is gone.
	inst.sb.Stop()
	o.usage = model.OutcomeCrash
	if res != nil {
		o.payload, o.errType = res.Payload, res.ErrorType
	}
	if o.errType == "" || o.errType == "Unhandled" {
		o.errType = "Runtime.Unknown"
	}
	return o
}

func (w *Worker) exited(inst *instance, req *Request, o outcome) outcome {
	<-inst.sb.Done()
	st := inst.sb.ExitStatus()
	o.usage, o.errType = model.OutcomeCrash, model.ErrTypeExit
	if st.OutOfMemory {
		o.usage, o.errType = model.OutcomeOOM, model.ErrTypeOutOfMemory
	}
	o.msg = "RequestId: " + req.RequestID + " Error: Runtime exited with error: " + st.String()
	if init := inst.api.InitError(); init != nil && !st.OutOfMemory {
		return w.initFailed(inst, init, o)
	}
	return o
}

// respond builds the caller's response and hands the invocation's
// accounting to the recorder. inst is nil when no instance could be
// started. The instance's output is taken here, before the instance can
// serve again; the rest (memory peak, REPORT line, usage record,
// publishing) happens after the response, unless the caller wants the log.
func (w *Worker) respond(fn *model.Function, req *Request, inst *instance, o outcome, cold bool) *Response {
	resp := &Response{RequestID: req.RequestID, Version: model.DefaultVersion, Payload: o.payload}
	if o.errType != "" {
		resp.FunctionError, resp.ErrorType = "Unhandled", o.errType
		if o.msg != "" || len(o.payload) == 0 {
			msg := o.msg
			if msg == "" {
				msg = "RequestId: " + req.RequestID + " Error: " + o.errType
			}
			resp.Payload, _ = json.Marshal(model.FunctionError{ErrorMessage: msg, ErrorType: o.errType})
		}
	}
	r := &record{fn: fn, requestID: req.RequestID, attempt: req.Attempt, o: o, cold: cold}
	if inst != nil {
		r.sb, r.output, r.provisioned, r.pooled = inst.sb, inst.logs.take(), inst.provisioned, cold && inst.pooled
		if cold {
			r.initDur, r.sandboxDur = inst.initDur, inst.sandboxDur
		}
	}
	if req.WantLog {
		resp.Log, resp.Usage = w.account(r)
	} else {
		w.records <- r
	}
	return resp
}

// record is an invocation waiting to be accounted for.
type record struct {
	fn          *model.Function
	requestID   string
	attempt     int
	o           outcome
	cold        bool
	sb          sandbox.Instance // nil when no instance started
	output      []byte
	initDur     time.Duration
	sandboxDur  time.Duration
	provisioned bool
	pooled      bool
}

// recordLoop accounts for invocations in the order they finished, off the
// response path. Close drains it.
func (w *Worker) recordLoop() {
	defer close(w.recorded)
	for r := range w.records {
		w.account(r)
	}
}

// account writes one invocation's log text (START, output, END, REPORT)
// and usage record to the Sink, and returns them.
func (w *Worker) account(r *record) ([]byte, *model.Usage) {
	fn, o := r.fn, r.o
	billed := int64(math.Ceil(float64(o.duration) / float64(time.Millisecond)))
	if billed < 1 {
		billed = 1
	}
	var maxMem int
	if r.sb != nil {
		// cgroup v1 may count a page over the limit; like Lambda, report
		// at most the function's memory.
		maxMem = min(int((r.sb.Stats().MaxMemoryBytes+(1<<20-1))>>20), fn.Memory)
	}
	u := model.Usage{
		Time: o.begin.UTC(), Function: fn.Name, RequestID: r.requestID,
		DurationMs: float64(o.duration) / float64(time.Millisecond), BilledMs: billed,
		MemoryMB: fn.Memory, MaxMemoryMB: maxMem, GBSeconds: model.GBSeconds(billed, fn.Memory),
		Cold: r.cold, InitDurationMs: float64(r.initDur) / float64(time.Millisecond), Outcome: o.usage,
		Provisioned: r.provisioned, Pooled: r.pooled, Attempt: r.attempt,
	}
	log := make([]byte, 0, len(r.output)+256)
	if r.cold && r.sb != nil {
		// Like Lambda's INIT_START, with where the cold start's time went:
		// getting the process running, then (Init Duration minus this) the
		// runtime's own start up to its first /next.
		log = fmt.Appendf(log, "INIT_START Runtime: %s\tSandbox Duration: %.2f ms\tPooled: %t\n",
			fn.Runtime, float64(r.sandboxDur)/float64(time.Millisecond), r.pooled)
	}
	log = fmt.Appendf(log, "START RequestId: %s Version: %s\n", r.requestID, model.DefaultVersion)
	log = append(log, r.output...)
	log = append(log, o.logExtra...)
	log = fmt.Appendf(log, "END RequestId: %s\n", r.requestID)
	log = fmt.Appendf(log, "REPORT RequestId: %s\tDuration: %.2f ms\tBilled Duration: %d ms\tMemory Size: %d MB\tMax Memory Used: %d MB",
		r.requestID, u.DurationMs, billed, fn.Memory, maxMem)
	if r.cold {
		log = fmt.Appendf(log, "\tInit Duration: %.2f ms", u.InitDurationMs)
	}
	switch o.usage {
	case model.OutcomeTimeout:
		log = append(log, "\tStatus: timeout"...)
	case model.OutcomeCrash, model.OutcomeOOM:
		log = fmt.Appendf(log, "\tStatus: error\tError Type: %s", o.errType)
	}
	log = append(log, '\n')
	if w.Sink != nil {
		w.Sink.Log(fn.Name, log)
		w.Sink.Usage(&u)
	}
	return log, &u
}

// startError is a failure to start an instance's process.
type startError struct{ err error }

func (e *startError) Error() string { return e.err.Error() }
func (e *startError) Unwrap() error { return e.err }

func (w *Worker) startInstance(ctx context.Context, fn *model.Function, rev string) (*instance, error) {
	if inst, ok := w.takePooled(ctx, fn, rev); ok {
		return inst, nil
	}
	codeDir, err := w.Code.CodeDir(ctx, fn)
	if err != nil {
		return nil, fmt.Errorf("cannot prepare the code of %s: %w", fn.Name, err)
	}
	id := newInstanceID()
	spec := &sandbox.Spec{
		ID: id, Function: fn.Name, CodeDir: codeDir,
		MemoryMB: fn.Memory, TmpMB: fn.EphemeralStorage, Network: fn.Network,
	}
	if fn.Runtime == model.RuntimeNode || fn.Runtime == model.RuntimePython {
		spec.RuntimeDir = w.RuntimeDir
	}
	taskRoot, runtimeRoot := w.Driver.Paths(spec)
	switch fn.Runtime {
	case model.RuntimeProvided, model.RuntimeGo:
		spec.Args = []string{taskRoot + "/bootstrap"}
	default:
		if spec.Args, err = runtimes.Command(fn.Runtime, runtimeRoot); err != nil {
			return nil, &startError{err}
		}
	}
	spec.Env = w.environment(fn, id, taskRoot, runtimeRoot)
	api := runtimeapi.New()
	logs := &logBuffer{max: w.LogLimit}
	spec.RuntimeAPI, spec.Output = api, logs
	started := time.Now()
	sb, err := w.Driver.Start(ctx, spec)
	if err != nil {
		return nil, &startError{err}
	}
	inst := &instance{id: id, revision: rev, memoryMB: fn.Memory, sb: sb, api: api, logs: logs,
		started: started, sandboxDur: time.Since(started)}
	go func() {
		<-sb.Done()
		api.Close() // ends a pending Invoke with ErrClosed
	}()
	return inst, nil
}

// environment is Lambda's standard environment with the function's own
// variables on top.
func (w *Worker) environment(fn *model.Function, id, taskRoot, runtimeRoot string) []string {
	env := []string{
		"PATH=/usr/local/bin:/usr/bin:/bin",
		"LANG=en_US.UTF-8",
		"TZ=:UTC",
		"GOMAXPROCS=" + strconv.Itoa(vCPUs(fn.Memory)),
		"HOME=/tmp",
		"AWS_REGION=" + w.Region,
		"AWS_DEFAULT_REGION=" + w.Region,
		"AWS_EXECUTION_ENV=AWS_Lambda_" + string(fn.Runtime),
		"AWS_LAMBDA_FUNCTION_NAME=" + fn.Name,
		"AWS_LAMBDA_FUNCTION_VERSION=" + model.DefaultVersion,
		"AWS_LAMBDA_FUNCTION_MEMORY_SIZE=" + strconv.Itoa(fn.Memory),
		"AWS_LAMBDA_LOG_GROUP_NAME=/aws/lambda/" + fn.Name,
		"AWS_LAMBDA_LOG_STREAM_NAME=" + time.Now().UTC().Format("2006/01/02") + "/[$LATEST]" + id,
		"AWS_LAMBDA_INITIALIZATION_TYPE=on-demand",
		"_HANDLER=" + fn.Handler,
		"LAMBDA_TASK_ROOT=" + taskRoot,
	}
	if runtimeRoot != "" {
		env = append(env, "LAMBDA_RUNTIME_DIR="+runtimeRoot)
	}
	for _, k := range fn.EnvKeys() {
		env = append(env, k+"="+fn.Env[k])
	}
	return env
}

// vCPUs is the CPU a function's memory buys, as Lambda sizes it: one vCPU
// at 1769 MB, proportionally more above, at least one, at most the host's.
// Go runtimes get it as GOMAXPROCS (a function may set its own): a small
// function running several Go threads pays for every hand-off between them
// under its low CPU weight.
func vCPUs(memoryMB int) int {
	n := (memoryMB + 1768) / 1769
	return max(1, min(n, runtime.NumCPU()))
}

// NewRequestID returns a random UUID (version 4), Lambda's request id format.
func NewRequestID() string {
	var b [16]byte
	rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// newTraceID returns an X-Ray style trace header.
func newTraceID() string {
	var b [20]byte
	rand.Read(b[:])
	h := hex.EncodeToString(b[:])
	return fmt.Sprintf("Root=1-%08x-%s;Parent=%s;Sampled=0", time.Now().Unix(), h[:24], h[24:40])
}

func newInstanceID() string {
	var b [8]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
