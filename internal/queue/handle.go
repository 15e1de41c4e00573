package queue

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/aloft-dev/aloft/internal/model"
	"github.com/aloft-dev/aloft/internal/worker"
)

// Conditions of a finished asynchronous invocation, as Lambda names them in
// destination records.
const (
	ConditionSuccess          = "Success"
	ConditionRetriesExhausted = "RetriesExhausted"
	ConditionEventAgeExceeded = "EventAgeExceeded"
)

// Record is Lambda's destination record: what an on_success or on_failure
// destination, and the dead-letter stream, receive.
type Record struct {
	Version         string           `json:"version"`
	Timestamp       string           `json:"timestamp"`
	RequestContext  RequestContext   `json:"requestContext"`
	RequestPayload  json.RawMessage  `json:"requestPayload"`
	ResponseContext *ResponseContext `json:"responseContext,omitempty"`
	ResponsePayload json.RawMessage  `json:"responsePayload,omitempty"`
}

// RequestContext is the part of a Record about the event.
type RequestContext struct {
	RequestID              string `json:"requestId"`
	FunctionARN            string `json:"functionArn"`
	Condition              string `json:"condition"`
	ApproximateInvokeCount int    `json:"approximateInvokeCount"`
}

// ResponseContext is the part of a Record about the last attempt.
type ResponseContext struct {
	StatusCode      int    `json:"statusCode"`
	ExecutedVersion string `json:"executedVersion"`
	FunctionError   string `json:"functionError,omitempty"`
}

// event is a delivered message's view.
type event struct {
	msg           jetstream.Msg
	function      string
	requestID     string
	enqueued      time.Time
	attempts      int // already made
	notBefore     time.Time
	clientContext string
}

func parse(m jetstream.Msg) event {
	h := m.Headers()
	ev := event{
		msg:           m,
		function:      m.Subject()[len(SubjectPrefix):],
		requestID:     h.Get(HeaderRequestID),
		attempts:      atoi(h.Get(HeaderAttempts)),
		clientContext: h.Get(HeaderClientContext),
	}
	ev.enqueued, _ = time.Parse(time.RFC3339Nano, h.Get(HeaderEnqueued))
	ev.notBefore, _ = time.Parse(time.RFC3339Nano, h.Get(HeaderNotBefore))
	if ev.enqueued.IsZero() { // not published by Publish: count from its stream time
		if md, err := m.Metadata(); err == nil {
			ev.enqueued = md.Timestamp
		}
	}
	if ev.requestID == "" {
		ev.requestID = worker.NewRequestID()
	}
	return ev
}

// Action is what to do with a delivered event before invoking it.
type Action int

const (
	Run    Action = iota // invoke it now
	Wait                 // too early: deliver it again at its not-before time
	Expire               // older than the function's maximum event age: failure path
)

// Decide tells what to do with an event enqueued at enqueued, not to run
// before notBefore, for a function keeping events maxAge, at time now.
func Decide(enqueued, notBefore time.Time, maxAge time.Duration, now time.Time) Action {
	switch {
	case now.Sub(enqueued) > maxAge:
		return Expire
	case now.Before(notBefore):
		return Wait
	default:
		return Run
	}
}

// Retry tells whether a failed attempt (1-based) is retried given the
// function's retries, and after how long.
func Retry(attempt, retries int, backoff time.Duration) (bool, time.Duration) {
	if attempt > retries {
		return false, 0
	}
	return true, time.Duration(attempt) * backoff
}

// handle runs one delivered event to its outcome and acknowledges it.
func (q *Queue) handle(m jetstream.Msg, now time.Time) {
	ctx := context.Background()
	ev := parse(m)
	fn, err := q.Functions.Function(ev.function)
	if err != nil {
		// The function was deleted: Lambda drops its queued events.
		q.log(ev.function, "ASYNC RequestId: %s Disposition: dropped (the function was deleted)", ev.requestID)
		m.Ack()
		return
	}
	switch Decide(ev.enqueued, ev.notBefore, fn.EventAge(), now) {
	case Wait:
		m.NakWithDelay(ev.notBefore.Sub(now))
		return
	case Expire:
		q.log(fn.Name, "ASYNC RequestId: %s Attempts: %d Outcome: EventAgeExceeded (older than %s)",
			ev.requestID, ev.attempts, fn.EventAge())
		q.finish(ctx, fn, ev, ConditionEventAgeExceeded, nil)
		return
	}

	attempt := ev.attempts + 1
	stop := keepAlive(m)
	resp, err := q.Invoker.Invoke(ctx, fn, &worker.Request{
		RequestID: ev.requestID, Payload: m.Data(), ClientContext: ev.clientContext, Attempt: attempt,
	})
	stop()
	switch {
	case errors.Is(err, model.ErrTooManyRequests):
		// Throttled: not an attempt; wait and try again.
		m.NakWithDelay(q.ThrottleDelay)
		return
	case errors.Is(err, model.ErrShuttingDown):
		m.NakWithDelay(q.ThrottleDelay)
		return
	case err != nil:
		// A platform failure counts as a failed attempt, as in Lambda.
		body, _ := json.Marshal(model.FunctionError{ErrorMessage: err.Error(), ErrorType: "ServiceException"})
		resp = &worker.Response{RequestID: ev.requestID, Version: model.DefaultVersion, FunctionError: "Unhandled", Payload: body}
	}
	if resp.FunctionError == "" {
		q.log(fn.Name, "ASYNC RequestId: %s Attempt: %d Outcome: success", ev.requestID, attempt)
		ev.attempts = attempt
		q.finish(ctx, fn, ev, ConditionSuccess, resp)
		return
	}
	retry, delay := Retry(attempt, fn.RetryAttempts(), q.RetryBackoff)
	if !retry {
		q.log(fn.Name, "ASYNC RequestId: %s Attempt: %d Outcome: %s (%s)", ev.requestID, attempt, "error", resp.ErrorType)
		ev.attempts = attempt
		q.finish(ctx, fn, ev, ConditionRetriesExhausted, resp)
		return
	}
	// Re-publish with the attempt count and the backoff, then drop this copy.
	r := nats.NewMsg(m.Subject())
	r.Data = m.Data()
	for k, v := range m.Headers() {
		r.Header[k] = v
	}
	r.Header.Set(HeaderRequestID, ev.requestID)
	r.Header.Set(HeaderEnqueued, ev.enqueued.UTC().Format(time.RFC3339Nano))
	r.Header.Set(HeaderAttempts, strconv.Itoa(attempt))
	r.Header.Set(HeaderNotBefore, time.Now().Add(delay).UTC().Format(time.RFC3339Nano))
	if _, err := q.JS.PublishMsg(ctx, r); err != nil {
		q.Logger.Warn("cannot schedule a retry", "function", fn.Name, "request_id", ev.requestID, "err", err)
		m.NakWithDelay(q.ThrottleDelay)
		return
	}
	q.log(fn.Name, "ASYNC RequestId: %s Attempt: %d Outcome: error (%s) Next: retry in %s", ev.requestID, attempt, resp.ErrorType, delay)
	m.Ack()
}

// keepAlive tells JetStream the event is still being worked on until stop
// is called, so a long invocation is not delivered again.
func keepAlive(m jetstream.Msg) (stop func()) {
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(ackWait / 3)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				m.InProgress()
			case <-done:
				return
			}
		}
	}()
	return func() { close(done) }
}

// finish sends a finished event's record where it belongs, then
// acknowledges the event. resp is the last attempt's response, nil when
// none was made.
func (q *Queue) finish(ctx context.Context, fn *model.Function, ev event, condition string, resp *worker.Response) {
	rec := q.record(fn, ev, condition, resp)
	dest := fn.OnFailure
	if condition == ConditionSuccess {
		dest = fn.OnSuccess
	}
	if dest != nil {
		err := q.deliver(ctx, dest, rec)
		if err == nil {
			q.log(fn.Name, "ASYNC RequestId: %s Disposition: %s to %s", ev.requestID, dispositionOf(condition), destName(dest))
			ev.msg.Ack()
			return
		}
		q.Logger.Warn("cannot deliver to a destination", "function", fn.Name, "destination", destName(dest), "err", err)
		q.log(fn.Name, "ASYNC RequestId: %s cannot deliver to %s: %v", ev.requestID, destName(dest), err)
	}
	if condition == ConditionSuccess {
		if dest == nil {
			q.log(fn.Name, "ASYNC RequestId: %s Disposition: done", ev.requestID)
		}
		ev.msg.Ack() // a destination is best effort; the function is not run again
		return
	}
	if err := q.deadLetter(ctx, fn.Name, ev, condition, rec); err != nil {
		q.Logger.Warn("cannot store a dead letter", "function", fn.Name, "request_id", ev.requestID, "err", err)
		ev.msg.NakWithDelay(q.ThrottleDelay)
		return
	}
	q.log(fn.Name, "ASYNC RequestId: %s Disposition: dead-letter (%s)", ev.requestID, condition)
	ev.msg.Ack()
}

func dispositionOf(condition string) string {
	if condition == ConditionSuccess {
		return "on_success"
	}
	return "on_failure (" + condition + ")"
}

func destName(d *model.Destination) string {
	if d.Function != "" {
		return "function " + d.Function
	}
	return "nats " + d.NATS
}

func (q *Queue) record(fn *model.Function, ev event, condition string, resp *worker.Response) Record {
	rec := Record{
		Version:   "1.0",
		Timestamp: time.Now().UTC().Format("2006-01-02T15:04:05.000Z"),
		RequestContext: RequestContext{
			RequestID:              ev.requestID,
			FunctionARN:            model.ARN(q.Region, q.Account, fn.Name) + ":" + model.DefaultVersion,
			Condition:              condition,
			ApproximateInvokeCount: ev.attempts,
		},
		RequestPayload: rawJSON(ev.msg.Data()),
	}
	if resp != nil {
		rec.ResponseContext = &ResponseContext{StatusCode: 200, ExecutedVersion: model.DefaultVersion, FunctionError: resp.FunctionError}
		rec.ResponsePayload = rawJSON(resp.Payload)
	}
	return rec
}

// rawJSON returns b as a JSON value: itself when valid JSON, else a string.
func rawJSON(b []byte) json.RawMessage {
	if len(b) == 0 {
		return json.RawMessage("null")
	}
	if json.Valid(b) {
		return json.RawMessage(b)
	}
	s, _ := json.Marshal(string(b))
	return s
}

// deliver sends a record to a destination.
func (q *Queue) deliver(ctx context.Context, d *model.Destination, rec Record) error {
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	if d.Function != "" {
		if _, err := q.Functions.Function(d.Function); err != nil {
			return fmt.Errorf("cannot invoke destination: %w", err)
		}
		_, err := q.Publish(ctx, d.Function, Event{Payload: b})
		return err
	}
	m := nats.NewMsg(d.NATS)
	m.Data = b
	m.Header.Set(HeaderRequestID, rec.RequestContext.RequestID)
	m.Header.Set(HeaderCondition, rec.RequestContext.Condition)
	if err := q.Conn.PublishMsg(m); err != nil {
		return fmt.Errorf("cannot publish to %s: %w", d.NATS, err)
	}
	return q.Conn.FlushTimeout(5 * time.Second)
}

func (q *Queue) log(function, format string, args ...any) {
	if q.Sink == nil {
		return
	}
	line := time.Now().UTC().Format(time.RFC3339Nano) + " " + fmt.Sprintf(format, args...) + "\n"
	q.Sink.Log(function, []byte(line))
}
