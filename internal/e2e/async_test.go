package e2e_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/aloft-dev/aloft/internal/cli"
	"github.com/aloft-dev/aloft/internal/model"
	"github.com/aloft-dev/aloft/internal/node"
	"github.com/aloft-dev/aloft/internal/queue"
)

// asyncConfig is a node config with the async waits shortened for tests.
func asyncConfig() node.Config {
	return node.Config{AsyncRetryBackoff: 100 * time.Millisecond, AsyncThrottleWait: 50 * time.Millisecond, ScheduleMinute: time.Second}
}

// invokeAsync sends an Event invocation and returns its request id,
// failing the test unless it was accepted with 202.
func (h *harness) invokeAsync(name, payload string) string {
	h.t.Helper()
	r := h.invoke(name, payload, "X-Amz-Invocation-Type", "Event")
	if r.status != 202 {
		h.t.Fatalf("async invoke %s: status %d, want 202; body %s", name, r.status, r.body)
	}
	id := r.header.Get("X-Amzn-RequestId")
	if id == "" {
		h.t.Fatalf("async invoke %s: no X-Amzn-RequestId", name)
	}
	return id
}

// subscribe subscribes to a subject of the node's embedded NATS server.
func (h *harness) subscribe(subject string) *nats.Subscription {
	h.t.Helper()
	sub, err := h.node.NATS().SubscribeSync(subject)
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { sub.Unsubscribe() })
	if err := h.node.NATS().Flush(); err != nil {
		h.t.Fatal(err)
	}
	return sub
}

// record waits for the next destination record on sub.
func record(t *testing.T, sub *nats.Subscription) queue.Record {
	t.Helper()
	m, err := sub.NextMsg(60 * time.Second)
	if err != nil {
		t.Fatalf("no destination record on %s: %v", sub.Subject, err)
	}
	var rec queue.Record
	if err := json.Unmarshal(m.Data, &rec); err != nil {
		t.Fatalf("record %s: %v", m.Data, err)
	}
	return rec
}

func ptr[T any](v T) *T { return &v }

// TestAsyncInvoke checks that an Event invocation is accepted with 202
// before the function runs, that it then runs, and that the on_success
// destination receives Lambda's record.
func TestAsyncInvoke(t *testing.T) {
	h := startNode(t, asyncConfig())
	sub := h.subscribe("results.ok")
	h.deployGoecho(model.Config{Name: "slow", OnSuccess: &model.Destination{NATS: "results.ok"}})

	id := h.invokeAsync("slow", `{"action":"sleep","ms":1500,"value":"v1"}`)
	if logs := h.logs("slow"); strings.Contains(logs, "END RequestId: "+id) {
		t.Fatalf("the function finished before the invocation was accepted:\n%s", logs)
	}
	rec := record(t, sub)
	if rec.RequestContext.RequestID != id || rec.RequestContext.Condition != queue.ConditionSuccess ||
		rec.RequestContext.ApproximateInvokeCount != 1 {
		t.Errorf("requestContext = %+v, want request %s, Success, 1 invocation", rec.RequestContext, id)
	}
	if want := model.ARN(model.DefaultRegion, model.DefaultAccountID, "slow") + ":$LATEST"; rec.RequestContext.FunctionARN != want {
		t.Errorf("functionArn = %q, want %q", rec.RequestContext.FunctionARN, want)
	}
	if rec.Version != "1.0" || rec.Timestamp == "" {
		t.Errorf("version %q timestamp %q, want 1.0 and a time", rec.Version, rec.Timestamp)
	}
	var req map[string]any
	json.Unmarshal(rec.RequestPayload, &req)
	if str(req["value"]) != "v1" {
		t.Errorf("requestPayload = %s, want the event", rec.RequestPayload)
	}
	var resp map[string]any
	json.Unmarshal(rec.ResponsePayload, &resp)
	if str(resp["value"]) != "v1" || str(resp["request_id"]) != id {
		t.Errorf("responsePayload = %s, want the function's result for request %s", rec.ResponsePayload, id)
	}
	if rc := rec.ResponseContext; rc == nil || rc.StatusCode != 200 || rc.FunctionError != "" || rc.ExecutedVersion != "$LATEST" {
		t.Errorf("responseContext = %+v, want 200 $LATEST without error", rc)
	}
	eventually(t, 10*time.Second, func() string {
		return contains(h.logs("slow"), "END RequestId: "+id, "ASYNC RequestId: "+id+" Attempt: 1 Outcome: success",
			"ASYNC RequestId: "+id+" Disposition: on_success to nats results.ok")
	})
	// The usage record carries the attempt.
	h.waitUsage("slow", func(u cli.UsageRow) string {
		if u.Invocations != 1 {
			return fmt.Sprintf("usage = %+v; want one invocation", u)
		}
		return ""
	})

	// DryRun validates only; a too large event is refused.
	if r := h.invoke("slow", `{}`, "X-Amz-Invocation-Type", "DryRun"); r.status != 204 {
		t.Errorf("DryRun: status %d, want 204", r.status)
	}
	big := `{"pad":"` + strings.Repeat("x", model.MaxAsyncPayload) + `"}`
	if r := h.invoke("slow", big, "X-Amz-Invocation-Type", "Event"); r.status != 413 || r.header.Get("X-Amzn-ErrorType") != "RequestTooLargeException" {
		t.Errorf("oversized event: status %d %s, want 413 RequestTooLargeException", r.status, r.header.Get("X-Amzn-ErrorType"))
	}
	if r := h.invoke("nope", `{}`, "X-Amz-Invocation-Type", "Event"); r.status != 404 {
		t.Errorf("event for a missing function: status %d, want 404", r.status)
	}

	// The CLI queues too.
	out, _, err := h.runCLI("", "invoke", "slow", "--async", "--data", `{"value":"cli"}`)
	if err != nil || !strings.HasPrefix(out, "queued: request id ") {
		t.Fatalf("aloft invoke --async: %q, %v", out, err)
	}
	cliID := strings.TrimSpace(strings.TrimPrefix(out, "queued: request id "))
	if rec := record(t, sub); rec.RequestContext.RequestID != cliID {
		t.Errorf("record of %s, want of %s", rec.RequestContext.RequestID, cliID)
	}
}

// startCount counts the function's invocations of request id in its logs.
func startCount(logs, id string) int { return strings.Count(logs, "START RequestId: "+id) }

// TestAsyncRetriesAndDLQ checks that a failing function is retried
// exactly maximum_retry_attempts times, lands in the dead-letter stream
// with Lambda's record, and that the dlq commands list, show, replay and
// purge it.
func TestAsyncRetriesAndDLQ(t *testing.T) {
	h := startNode(t, asyncConfig())
	const code = `import os
def handler(event, context):
    if os.environ.get("APP_FAIL") == "1":
        raise ValueError("failing on purpose: " + str(event.get("value")))
    return {"ok": event.get("value")}
`
	for _, retries := range []int{0, 2} {
		name := fmt.Sprintf("flaky%d", retries)
		cfg := model.Config{Name: name, Runtime: model.RuntimePython, Handler: "main.handler",
			Env: map[string]string{"APP_FAIL": "1"}, MaximumRetryAttempts: ptr(retries)}
		h.deployFiles(cfg, map[string]string{"main.py": code})
		id := h.invokeAsync(name, `{"value":"r1"}`)

		var dls []map[string]any
		eventually(t, 60*time.Second, func() string {
			out := h.do("GET", "/v1/functions/"+name+"/dlq", nil)
			var body struct {
				DeadLetters []map[string]any `json:"dead_letters"`
			}
			json.Unmarshal(out.body, &body)
			dls = body.DeadLetters
			if len(dls) == 0 {
				return name + ": no dead letter yet; logs:\n" + h.logs(name)
			}
			return ""
		})
		if len(dls) != 1 || str(dls[0]["id"]) != id || str(dls[0]["condition"]) != queue.ConditionRetriesExhausted {
			t.Fatalf("%s: dead letters %v, want one RetriesExhausted for %s", name, dls, id)
		}
		// No attempt after the dead letter: exactly 1 + retries.
		time.Sleep(500 * time.Millisecond)
		if got := startCount(h.logs(name), id); got != retries+1 {
			t.Errorf("%s: %d invocations, want %d", name, got, retries+1)
		}
		out, _, err := h.runCLI("", "dlq", "show", name, id)
		if err != nil {
			t.Fatal(err)
		}
		var rec queue.Record
		if err := json.Unmarshal([]byte(out), &rec); err != nil {
			t.Fatalf("dlq show printed %q: %v", out, err)
		}
		if rec.RequestContext.Condition != "RetriesExhausted" || rec.RequestContext.ApproximateInvokeCount != retries+1 ||
			rec.ResponseContext == nil || rec.ResponseContext.FunctionError != "Unhandled" ||
			!strings.Contains(string(rec.ResponsePayload), "failing on purpose: r1") ||
			!strings.Contains(string(rec.RequestPayload), `"r1"`) {
			t.Errorf("%s: record %s, want Lambda's failure record", name, out)
		}
		if out, _, err := h.runCLI("", "dlq", "ls", name); err != nil || !strings.Contains(out, id) || !strings.Contains(out, "failing on purpose") {
			t.Errorf("dlq ls: %q, %v", out, err)
		}
		fv, err := h.client.Get(t.Context(), name)
		if err != nil || fv.Queue == nil || fv.Queue.DeadLetters != 1 || fv.Queue.Depth != 0 {
			t.Errorf("%s: queue %+v, %v; want no depth and 1 dead letter", name, fv.Queue, err)
		}
	}

	// Fix the function and replay: the event runs again and succeeds.
	cfg := model.Config{Name: "flaky2", Runtime: model.RuntimePython, Handler: "main.handler", Env: map[string]string{"APP_FAIL": "0"}}
	h.deployFiles(cfg, map[string]string{"main.py": code})
	out, _, err := h.runCLI("", "dlq", "replay", "flaky2")
	if err != nil || !strings.Contains(out, "replayed 1 event(s)") {
		t.Fatalf("dlq replay: %q, %v", out, err)
	}
	newID := strings.TrimSpace(out[strings.Index(out, "request id ")+len("request id "):])
	eventually(t, 30*time.Second, func() string {
		return contains(h.logs("flaky2"), "ASYNC RequestId: "+newID+" Attempt: 1 Outcome: success")
	})
	if fv, _ := h.client.Get(t.Context(), "flaky2"); fv.Queue == nil || fv.Queue.DeadLetters != 0 {
		t.Errorf("after replay: queue %+v, want no dead letters", fv.Queue)
	}
	if _, _, err := h.runCLI("", "dlq", "replay", "flaky0", "no-such-id"); err == nil || !strings.Contains(err.Error(), "ResourceNotFound") {
		t.Errorf("replay of an unknown id: %v, want ResourceNotFoundException", err)
	}
	if out, _, err := h.runCLI("", "dlq", "purge", "flaky0"); err != nil || !strings.Contains(out, "purged 1 dead letter(s)") {
		t.Errorf("dlq purge: %q, %v", out, err)
	}
	if out, _, _ := h.runCLI("", "dlq", "ls", "flaky0"); strings.Count(strings.TrimSpace(out), "\n") != 0 {
		t.Errorf("dlq ls after purge: %q, want the header only", out)
	}
}

// TestAsyncOnFailureFunction checks that a failed event goes to an
// on_failure function, invoked asynchronously with Lambda's record.
func TestAsyncOnFailureFunction(t *testing.T) {
	h := startNode(t, asyncConfig())
	h.deployFiles(model.Config{Name: "sink", Runtime: model.RuntimePython, Handler: "main.handler"}, map[string]string{
		"main.py": "import json\ndef handler(event, context):\n    print('RECORD ' + json.dumps(event))\n    return {}\n",
	})
	h.deployGoecho(model.Config{Name: "failing", MaximumRetryAttempts: ptr(1), OnFailure: &model.Destination{Function: "sink"}})
	id := h.invokeAsync("failing", `{"action":"error","text":"boom"}`)
	var rec queue.Record
	eventually(t, 60*time.Second, func() string {
		logs := h.logs("sink")
		i := strings.Index(logs, "RECORD ")
		if i < 0 {
			return "the sink got no record; failing's logs:\n" + h.logs("failing")
		}
		line, _, _ := strings.Cut(logs[i+len("RECORD "):], "\n")
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			return "bad record " + line
		}
		return ""
	})
	if rec.RequestContext.RequestID != id || rec.RequestContext.Condition != "RetriesExhausted" ||
		rec.RequestContext.ApproximateInvokeCount != 2 || rec.ResponseContext == nil ||
		rec.ResponseContext.FunctionError != "Unhandled" || !strings.Contains(string(rec.ResponsePayload), "boom") {
		t.Errorf("record %+v, want RetriesExhausted after 2 attempts with the error", rec)
	}
	if got := startCount(h.logs("failing"), id); got != 2 {
		t.Errorf("%d invocations, want 2", got)
	}
	if fv, _ := h.client.Get(t.Context(), "failing"); fv.Queue == nil || fv.Queue.DeadLetters != 0 {
		t.Errorf("queue %+v, want no dead letter (the destination took it)", fv.Queue)
	}
}

// TestAsyncEventAge checks that an event older than maximum_event_age is
// not invoked and goes to the failure path. The event is published
// straight to the queue's stream with an old enqueue time, as another node
// holding it for long would leave it.
func TestAsyncEventAge(t *testing.T) {
	h := startNode(t, asyncConfig())
	sub := h.subscribe("results.failed")
	h.deployGoecho(model.Config{Name: "aged", MaximumEventAge: 60, OnFailure: &model.Destination{NATS: "results.failed"}})
	js, err := jetstream.New(h.node.NATS())
	if err != nil {
		t.Fatal(err)
	}
	m := nats.NewMsg(queue.SubjectPrefix + "aged")
	m.Data = []byte(`{"value":"old"}`)
	m.Header.Set(queue.HeaderRequestID, "old-event-1")
	m.Header.Set(queue.HeaderEnqueued, time.Now().Add(-61*time.Second).UTC().Format(time.RFC3339Nano))
	if _, err := js.PublishMsg(t.Context(), m); err != nil {
		t.Fatal(err)
	}
	fresh := h.invokeAsync("aged", `{"value":"fresh"}`)
	rec := record(t, sub)
	if rec.RequestContext.RequestID != "old-event-1" || rec.RequestContext.Condition != "EventAgeExceeded" ||
		rec.RequestContext.ApproximateInvokeCount != 0 || rec.ResponseContext != nil {
		t.Errorf("record %+v, want EventAgeExceeded without attempts", rec)
	}
	eventually(t, 30*time.Second, func() string { return contains(h.logs("aged"), "END RequestId: "+fresh) })
	logs := h.logs("aged")
	if strings.Contains(logs, "START RequestId: old-event-1") {
		t.Errorf("the expired event was invoked:\n%s", logs)
	}
	if !strings.Contains(logs, "ASYNC RequestId: old-event-1 Attempts: 0 Outcome: EventAgeExceeded") {
		t.Errorf("logs lack the expiry:\n%s", logs)
	}
}

// TestAsyncConfigValidation checks the new keys' validation at the API.
func TestAsyncConfigValidation(t *testing.T) {
	h := startNode(t, asyncConfig())
	for _, c := range []struct {
		name string
		cfg  model.Config
		want string
	}{
		{"retries", model.Config{MaximumRetryAttempts: ptr(3)}, "maximum_retry_attempts 3 is outside 0-2"},
		{"age", model.Config{MaximumEventAge: 30}, "maximum_event_age 30 s is outside 60-21600"},
		{"destination", model.Config{OnFailure: &model.Destination{}}, "on_failure must name exactly one"},
		{"reserved subject", model.Config{OnSuccess: &model.Destination{NATS: "aloft.async.x"}}, "on_success nats"},
		{"schedule", model.Config{Triggers: []model.Trigger{{Type: "schedule", Expression: "rate(5 parsecs)"}}}, "minutes, hours or days"},
		{"trigger type", model.Config{Triggers: []model.Trigger{{Type: "sqs"}}}, "is not one of schedule, nats"},
	} {
		t.Run(c.name, func(t *testing.T) {
			c.cfg.Name, c.cfg.Runtime = "bad", model.RuntimeProvided
			_, err := h.client.Deploy(t.Context(), "bad", c.cfg, strings.NewReader(""), 0, nil)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("deploy: %v, want an error containing %q", err, c.want)
			}
		})
	}
	// The settings round-trip through the API.
	h.deployGoecho(model.Config{Name: "cfg", MaximumRetryAttempts: ptr(0), MaximumEventAge: 120,
		OnFailure: &model.Destination{Function: "other"},
		Triggers:  []model.Trigger{{Type: "nats", Subject: "orders.>"}, {Type: "schedule", Expression: "cron(0 12 * * ? *)"}}})
	fv, err := h.client.Get(t.Context(), "cfg")
	if err != nil {
		t.Fatal(err)
	}
	if fv.MaximumRetryAttempts == nil || *fv.MaximumRetryAttempts != 0 || fv.MaximumEventAge != 120 ||
		fv.OnFailure == nil || fv.OnFailure.Function != "other" || len(fv.Triggers) != 2 || fv.Triggers[0].Subject != "orders.>" {
		t.Errorf("got %+v, want the deployed settings", fv.Config)
	}
}

// TestAsyncThrottled checks that events of a function held to one
// concurrent instance wait while it is busy and all succeed later: a
// throttle is not a failed attempt, even with no retries allowed.
func TestAsyncThrottled(t *testing.T) {
	cfg := asyncConfig()
	cfg.QueueTimeout = 100 * time.Millisecond // throttle rather than wait in the worker
	h := startNode(t, cfg)
	sub := h.subscribe("results.throttled")
	h.deployGoecho(model.Config{Name: "narrow", ReservedConcurrency: ptr(1), MaximumRetryAttempts: ptr(0),
		OnSuccess: &model.Destination{NATS: "results.throttled"}, OnFailure: &model.Destination{NATS: "results.throttled"}})
	const events = 6
	ids := map[string]bool{}
	for i := range events {
		ids[h.invokeAsync("narrow", fmt.Sprintf(`{"action":"sleep","ms":300,"value":%d}`, i))] = true
	}
	for range events {
		rec := record(t, sub)
		if !ids[rec.RequestContext.RequestID] || rec.RequestContext.Condition != queue.ConditionSuccess ||
			rec.RequestContext.ApproximateInvokeCount != 1 {
			t.Errorf("record %+v, want Success at the first attempt of one of our events", rec.RequestContext)
		}
		delete(ids, rec.RequestContext.RequestID)
	}
	if len(ids) != 0 {
		t.Errorf("events %v got no record", ids)
	}
	// The pollers run up to 4 events at once, so some were throttled.
	if u, err := h.client.Usage(t.Context(), "narrow"); err != nil || u.Total.Throttles == 0 {
		t.Errorf("usage %+v, %v; want throttles recorded", u.Total, err)
	}
	if fv, _ := h.client.Get(t.Context(), "narrow"); fv.Instances.Warm+fv.Instances.Busy > 1 {
		t.Errorf("instances %+v, want at most 1", fv.Instances)
	}
}

// TestAsyncDeleteDiscardsEvents: deleting a function discards its waiting
// events, as Lambda does; a new function of the same name never runs them.
func TestAsyncDeleteDiscardsEvents(t *testing.T) {
	cfg := asyncConfig()
	cfg.QueueTimeout = 50 * time.Millisecond
	h := startNode(t, cfg)
	// Disabled (reserved 0): its events wait in the queue, throttled.
	h.deployGoecho(model.Config{Name: "gone", ReservedConcurrency: ptr(0)})
	for i := range 5 {
		h.invokeAsync("gone", fmt.Sprintf(`{"action":"print","text":"old event %d"}`, i))
	}
	eventually(t, 5*time.Second, func() string {
		fn, err := h.client.Get(t.Context(), "gone")
		if err != nil || fn.Queue == nil || fn.Queue.Depth != 5 {
			return fmt.Sprintf("queue of gone: %+v, %v; want 5 waiting events", fn.Queue, err)
		}
		return ""
	})
	if err := h.client.Delete(t.Context(), "gone"); err != nil {
		t.Fatal(err)
	}
	h.deployGoecho(model.Config{Name: "gone"})
	h.invokeAsync("gone", `{"action":"print","text":"new event"}`)
	h.waitLogs("gone", "new event")
	time.Sleep(500 * time.Millisecond)
	if logs := h.logs("gone"); strings.Contains(logs, "old event") {
		t.Errorf("the deleted function's events ran on the new one:\n%s", logs)
	}
	fn, err := h.client.Get(t.Context(), "gone")
	if err != nil || fn.Queue == nil || fn.Queue.Depth != 0 {
		t.Errorf("queue after the new event: %+v, %v; want empty", fn.Queue, err)
	}
}
