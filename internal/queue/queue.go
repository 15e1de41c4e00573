// Package queue runs asynchronous invocations: it keeps accepted events in
// a JetStream stream (ALOFT_ASYNC, subjects aloft.async.<function>, work
// queue retention, file storage), polls them with one durable pull consumer
// per function and bounded concurrency, invokes the function through the
// worker like a synchronous call, retries failures with backoff, and hands
// each finished event to its destination or to the dead-letter stream
// (ALOFT_DLQ, subjects aloft.dlq.<function>).
//
// Delivery is at least once: an event is acknowledged only after its
// invocation finished and its outcome was stored (a retry re-published, a
// destination or dead letter written).
package queue

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/aloft-dev/aloft/internal/model"
	"github.com/aloft-dev/aloft/internal/worker"
)

// Names of the JetStream assets and of the event headers.
const (
	Stream        = "ALOFT_ASYNC"
	SubjectPrefix = "aloft.async." // + function name
	DLQStream     = "ALOFT_DLQ"
	DLQPrefix     = "aloft.dlq." // + function name

	HeaderRequestID     = "Aloft-Request-Id"
	HeaderEnqueued      = "Aloft-Enqueued"   // RFC 3339 time of the first enqueue; event age counts from it
	HeaderAttempts      = "Aloft-Attempts"   // attempts already made
	HeaderNotBefore     = "Aloft-Not-Before" // RFC 3339 time before which the event must not run (retry backoff)
	HeaderClientContext = "Aloft-Client-Context"
	HeaderCondition     = "Aloft-Condition" // of a dead letter: RetriesExhausted, EventAgeExceeded
	HeaderReplayOf      = "Aloft-Replay-Of" // request id of the dead letter a replayed event came from
)

// Defaults of the Queue's settings.
const (
	DefaultConcurrency   = 4
	DefaultRetryBackoff  = time.Minute // Lambda waits about 1, then 2 minutes
	DefaultThrottleDelay = time.Second
	DefaultDLQMaxAge     = 14 * 24 * time.Hour // SQS's longest retention
	ackWait              = 10 * time.Second    // renewed while an invocation runs; redelivery delay after a crash
	fetchWait            = time.Second         // length of one poll for events
)

// Invoker runs invocations (the worker).
type Invoker interface {
	Invoke(ctx context.Context, fn *model.Function, req *worker.Request) (*worker.Response, error)
}

// Functions looks functions up (the store's cache).
type Functions interface {
	Function(name string) (*model.Function, error)
}

// Sink receives the log lines of asynchronous invocations: attempts,
// retries and final dispositions.
type Sink interface {
	Log(function string, text []byte)
}

// Queue accepts and runs asynchronous invocations. Set the exported
// fields, call Open, then Sync for every function.
type Queue struct {
	JS        jetstream.JetStream
	Conn      *nats.Conn // publishes to NATS-subject destinations
	Functions Functions
	Invoker   Invoker
	Sink      Sink
	Logger    *slog.Logger
	// MaxPayload bounds an event's size (model.MaxAsyncPayload).
	MaxPayload int
	// Concurrency is how many events of one function one node runs at
	// once (DefaultConcurrency).
	Concurrency int
	// RetryBackoff is the wait before the first retry; the n-th retry
	// waits n times as long (DefaultRetryBackoff).
	RetryBackoff time.Duration
	// ThrottleDelay is the wait before a throttled event is tried again
	// (DefaultThrottleDelay).
	ThrottleDelay   time.Duration
	Region, Account string

	stream  jetstream.Stream
	dlq     jetstream.Stream
	mu      sync.Mutex
	pollers map[string]*poller
	closed  bool
}

// Open creates the streams if needed and applies defaults.
func (q *Queue) Open(ctx context.Context) error {
	if q.MaxPayload == 0 {
		q.MaxPayload = model.MaxAsyncPayload
	}
	if q.Concurrency == 0 {
		q.Concurrency = DefaultConcurrency
	}
	if q.RetryBackoff == 0 {
		q.RetryBackoff = DefaultRetryBackoff
	}
	if q.ThrottleDelay == 0 {
		q.ThrottleDelay = DefaultThrottleDelay
	}
	if q.Region == "" {
		q.Region = model.DefaultRegion
	}
	if q.Account == "" {
		q.Account = model.DefaultAccountID
	}
	if q.Logger == nil {
		q.Logger = slog.New(slog.DiscardHandler)
	}
	var err error
	q.stream, err = q.JS.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name: Stream, Subjects: []string{SubjectPrefix + ">"}, Storage: jetstream.FileStorage,
		Retention: jetstream.WorkQueuePolicy, Discard: jetstream.DiscardNew,
	})
	if err != nil {
		return fmt.Errorf("cannot open stream %s: %w", Stream, err)
	}
	q.dlq, err = q.JS.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name: DLQStream, Subjects: []string{DLQPrefix + ">"}, Storage: jetstream.FileStorage,
		Retention: jetstream.LimitsPolicy, MaxAge: DefaultDLQMaxAge, Discard: jetstream.DiscardOld,
	})
	if err != nil {
		return fmt.Errorf("cannot open stream %s: %w", DLQStream, err)
	}
	q.pollers = make(map[string]*poller)
	return nil
}

// Event is an asynchronous invocation to enqueue.
type Event struct {
	RequestID     string // generated when empty
	Payload       []byte
	ClientContext string    // JSON
	Enqueued      time.Time // time.Now when zero; event age counts from it
	ReplayOf      string
}

// Enqueue stores an Event invocation of fn durably and returns its
// request id once JetStream acknowledged it. It implements the gateway's
// Enqueuer.
func (q *Queue) Enqueue(ctx context.Context, fn *model.Function, req *worker.Request) (string, error) {
	return q.Publish(ctx, fn.Name, Event{RequestID: req.RequestID, Payload: req.Payload, ClientContext: req.ClientContext})
}

// Publish stores ev for function name and returns its request id once
// JetStream acknowledged it. A payload over MaxPayload is an error
// wrapping model.ErrTooLarge.
func (q *Queue) Publish(ctx context.Context, name string, ev Event) (string, error) {
	if len(ev.Payload) > q.MaxPayload {
		return "", fmt.Errorf("%w: Request must be smaller than %d bytes for the asynchronous InvokeFunction operation",
			model.ErrTooLarge, q.MaxPayload)
	}
	if ev.RequestID == "" {
		ev.RequestID = worker.NewRequestID()
	}
	if ev.Enqueued.IsZero() {
		ev.Enqueued = time.Now()
	}
	m := nats.NewMsg(SubjectPrefix + name)
	m.Data = ev.Payload
	m.Header.Set(HeaderRequestID, ev.RequestID)
	m.Header.Set(HeaderEnqueued, ev.Enqueued.UTC().Format(time.RFC3339Nano))
	if ev.ClientContext != "" {
		m.Header.Set(HeaderClientContext, ev.ClientContext)
	}
	if ev.ReplayOf != "" {
		m.Header.Set(HeaderReplayOf, ev.ReplayOf)
	}
	if _, err := q.JS.PublishMsg(ctx, m); err != nil {
		return "", fmt.Errorf("cannot enqueue the event: %w", err)
	}
	return ev.RequestID, nil
}

// Sync starts polling function name's events, or stops it when fn is nil
// (deleted): then, as Lambda does, the events still waiting are discarded,
// so a later function of the same name never runs them. Its dead letters
// stay until purged.
func (q *Queue) Sync(ctx context.Context, name string, fn *model.Function) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return nil
	}
	p := q.pollers[name]
	if fn == nil {
		if p != nil {
			delete(q.pollers, name)
			p.cancel() // events already running finish; their acks find nothing
		}
		if err := q.stream.Purge(ctx, jetstream.WithPurgeSubject(SubjectPrefix+name)); err != nil {
			return fmt.Errorf("cannot discard the events of %s: %w", name, err)
		}
		err := q.JS.DeleteConsumer(ctx, Stream, "aloft-async-"+name)
		if err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
			return fmt.Errorf("cannot delete the consumer of %s: %w", name, err)
		}
		return nil
	}
	if p != nil {
		return nil
	}
	cons, err := q.JS.CreateOrUpdateConsumer(ctx, Stream, jetstream.ConsumerConfig{
		Durable:       "aloft-async-" + name,
		FilterSubject: SubjectPrefix + name,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       ackWait,
		MaxDeliver:    -1,
		// Events waiting for a retry or after a throttle stay pending.
		MaxAckPending: 1 << 20,
	})
	if err != nil {
		return fmt.Errorf("cannot create the consumer of %s: %w", name, err)
	}
	pctx, cancel := context.WithCancel(context.Background())
	p = &poller{q: q, name: name, cons: cons, cancel: cancel, done: make(chan struct{})}
	q.pollers[name] = p
	go p.run(pctx)
	return nil
}

// Close stops taking events, lets running invocations finish and handles
// their outcome, until ctx ends. Events not finished stay in the stream
// and are delivered again.
func (q *Queue) Close(ctx context.Context) error {
	q.mu.Lock()
	q.closed = true
	ps := q.pollers
	q.pollers = nil
	q.mu.Unlock()
	for _, p := range ps {
		p.cancel()
	}
	for _, p := range ps {
		select {
		case <-p.done:
		case <-ctx.Done():
			return fmt.Errorf("cannot finish running asynchronous invocations: %w", ctx.Err())
		}
	}
	return nil
}

// Depth describes a function's waiting events.
type Depth struct {
	Depth int `json:"depth"` // events waiting or running
	// OldestAgeSeconds is the age of the oldest waiting event.
	OldestAgeSeconds float64 `json:"oldest_age_seconds"`
	DeadLetters      int     `json:"dead_letters"`
}

// Depth returns the state of function name's queue at time now.
func (q *Queue) Depth(ctx context.Context, name string, now time.Time) (Depth, error) {
	var d Depth
	n, err := subjectCount(ctx, q.stream, SubjectPrefix+name)
	if err != nil {
		return d, err
	}
	d.Depth = n
	if n > 0 {
		m, err := q.stream.GetMsg(ctx, 1, jetstream.WithGetMsgSubject(SubjectPrefix+name))
		if err == nil {
			if t, err := time.Parse(time.RFC3339Nano, m.Header.Get(HeaderEnqueued)); err == nil {
				d.OldestAgeSeconds = max(0, now.Sub(t).Seconds())
			}
		} else if !errors.Is(err, jetstream.ErrMsgNotFound) {
			return d, err
		}
	}
	if d.DeadLetters, err = subjectCount(ctx, q.dlq, DLQPrefix+name); err != nil {
		return d, err
	}
	return d, nil
}

func subjectCount(ctx context.Context, s jetstream.Stream, subject string) (int, error) {
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(subject))
	if err != nil {
		return 0, fmt.Errorf("cannot read stream state: %w", err)
	}
	return int(info.State.Subjects[subject]), nil
}

// poller runs one function's events.
type poller struct {
	q      *Queue
	name   string
	cons   jetstream.Consumer
	cancel context.CancelFunc
	done   chan struct{}
}

func (p *poller) run(ctx context.Context) {
	defer close(p.done)
	var running sync.WaitGroup
	defer running.Wait()
	slots := make(chan struct{}, p.q.Concurrency)
	for {
		// Fetch only as many events as there are free slots, so no event
		// waits, delivered and unacknowledged, behind a busy one.
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			return
		}
		n := 1
	more:
		for n < p.q.Concurrency {
			select {
			case slots <- struct{}{}:
				n++
			default:
				break more
			}
		}
		// The fetch ends with ctx, so Close does not wait out a poll.
		fctx, fcancel := context.WithTimeout(ctx, fetchWait)
		batch, err := p.cons.Fetch(n, jetstream.FetchContext(fctx))
		if err != nil {
			fcancel()
			for range n {
				<-slots
			}
			if ctx.Err() != nil {
				return
			}
			p.q.Logger.Warn("cannot fetch events", "function", p.name, "err", err)
			sleep(ctx, time.Second)
			continue
		}
		got := 0
		for m := range batch.Messages() {
			got++
			if ctx.Err() != nil {
				m.Nak() // not started: leave it to the next poller
				<-slots
				continue
			}
			running.Add(1)
			go func() {
				defer running.Done()
				defer func() { <-slots }()
				p.q.handle(m, time.Now())
			}()
		}
		fcancel()
		for range n - got {
			<-slots
		}
		err = batch.Error()
		if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
			err = nil // the poll's own time ran out before the server said so
		}
		if err != nil && !errors.Is(err, nats.ErrTimeout) && !errors.Is(err, jetstream.ErrNoMessages) {
			if ctx.Err() != nil {
				return
			}
			p.q.Logger.Warn("cannot fetch events", "function", p.name, "err", err)
			sleep(ctx, time.Second)
		}
	}
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

func newID() string {
	var b [8]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func atoi(s string) int {
	n, _ := strconv.Atoi(s)
	return n
}
