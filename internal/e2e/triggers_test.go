package e2e_test

import (
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/aloft-dev/aloft/internal/model"
	"github.com/aloft-dev/aloft/internal/triggers"
)

// printEvent is a Python function that prints each event on one line.
var printEvent = map[string]string{
	"main.py": "import json\ndef handler(event, context):\n    print('EVENT ' + json.dumps(event))\n    return {}\n",
}

// events returns the events a printEvent function logged.
func events(logs string) []string {
	var out []string
	for _, line := range strings.Split(logs, "\n") {
		if i := strings.Index(line, "EVENT "); i >= 0 {
			out = append(out, line[i+len("EVENT "):])
		}
	}
	return out
}

// TestScheduleTrigger checks that rate(1 minute), with the node's minute
// shortened to a second, fires on time with EventBridge's Scheduled Event,
// waking the function from zero.
func TestScheduleTrigger(t *testing.T) {
	h := startNode(t, asyncConfig())
	h.deployFiles(model.Config{Name: "tick", Runtime: model.RuntimePython, Handler: "main.handler",
		Triggers: []model.Trigger{{Type: model.TriggerSchedule, Expression: "rate(1 minute)"}}}, printEvent)
	if fv, _ := h.client.Get(t.Context(), "tick"); fv.Instances.Warm+fv.Instances.Busy != 0 {
		t.Fatalf("instances %+v before the first firing, want none", fv.Instances)
	}
	var evs []string
	eventually(t, 30*time.Second, func() string {
		evs = events(h.logs("tick"))
		if len(evs) < 3 {
			return "fewer than 3 firings; logs:\n" + h.logs("tick")
		}
		return ""
	})
	logs := h.logs("tick")
	if !strings.Contains(logs, "Init Duration") {
		t.Errorf("no cold start in the logs: the schedule did not wake the function from zero:\n%s", logs)
	}
	var times []time.Time
	for _, e := range evs[:3] {
		var ev triggers.ScheduledEvent
		if err := json.Unmarshal([]byte(e), &ev); err != nil {
			t.Fatalf("event %s: %v", e, err)
		}
		if ev.DetailType != "Scheduled Event" || ev.Source != "aws.events" || ev.Version != "0" || ev.ID == "" ||
			ev.Region != model.DefaultRegion || len(ev.Resources) != 1 || !strings.Contains(ev.Resources[0], ":rule/") {
			t.Errorf("event %s is not EventBridge's Scheduled Event", e)
		}
		at, err := time.Parse(time.RFC3339, ev.Time)
		if err != nil {
			t.Fatalf("time %q: %v", ev.Time, err)
		}
		times = append(times, at)
	}
	// One firing per period (a second here), each on a period boundary.
	for i := 1; i < len(times); i++ {
		if d := times[i].Sub(times[i-1]); d != time.Second {
			t.Errorf("firings %s then %s, want one second apart", times[i-1], times[i])
		}
	}

	// A second node on the same JetStream would fire once per period too:
	// the lock is per schedule and period. Redeploying without the trigger
	// stops it.
	h.deployFiles(model.Config{Name: "tick", Runtime: model.RuntimePython, Handler: "main.handler"}, printEvent)
	time.Sleep(1500 * time.Millisecond) // a firing already queued may still run
	n := len(events(h.logs("tick")))
	time.Sleep(2500 * time.Millisecond)
	if got := len(events(h.logs("tick"))); got != n {
		t.Errorf("%d firings after the trigger was removed, want none", got-n)
	}
}

// TestNATSTrigger checks that a message on a subject of the embedded
// server invokes the function with the subject, the data and the headers.
func TestNATSTrigger(t *testing.T) {
	h := startNode(t, asyncConfig())
	h.deployFiles(model.Config{Name: "orders", Runtime: model.RuntimePython, Handler: "main.handler",
		Triggers: []model.Trigger{{Type: model.TriggerNATS, Subject: "orders.>"}}}, printEvent)
	nc := h.node.NATS()
	// The subscription starts when the node sees the function: probe
	// until it takes messages.
	eventually(t, 30*time.Second, func() string {
		nc.Publish("orders.probe", []byte("probe"))
		time.Sleep(200 * time.Millisecond)
		if !strings.Contains(h.logs("orders"), `"orders.probe"`) {
			return "the trigger takes no messages"
		}
		return ""
	})
	m := nats.NewMsg("orders.new")
	m.Data = []byte(`{"id":42}`)
	m.Header.Set("Trace", "abc")
	if err := nc.PublishMsg(m); err != nil {
		t.Fatal(err)
	}
	if err := nc.Publish("orders.bin", []byte{0xff, 0x00, 0xfe}); err != nil {
		t.Fatal(err)
	}
	nc.Flush()
	var evs []triggers.MessageEvent
	eventually(t, 30*time.Second, func() string {
		evs = evs[:0]
		for _, e := range events(h.logs("orders")) {
			var ev triggers.MessageEvent
			json.Unmarshal([]byte(e), &ev)
			if ev.Subject != "orders.probe" {
				evs = append(evs, ev)
			}
		}
		if len(evs) < 2 {
			return "fewer than 2 events; logs:\n" + h.logs("orders")
		}
		return ""
	})
	bySubject := map[string]triggers.MessageEvent{}
	for _, ev := range evs {
		bySubject[ev.Subject] = ev
	}
	if ev := bySubject["orders.new"]; ev.Data != `{"id":42}` || ev.IsBase64Encoded || len(ev.Headers["Trace"]) != 1 || ev.Headers["Trace"][0] != "abc" {
		t.Errorf("text message event %+v, want the data and the header", ev)
	}
	if ev := bySubject["orders.bin"]; !ev.IsBase64Encoded || ev.Data != base64.StdEncoding.EncodeToString([]byte{0xff, 0x00, 0xfe}) {
		t.Errorf("binary message event %+v, want base64 data", ev)
	}
	if len(evs) != 2 {
		t.Errorf("%d events, want 2", len(evs))
	}
}
