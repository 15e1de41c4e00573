package e2e_test

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

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

// startExternalNATS starts a second NATS server, with JetStream, listening
// on a random port of 127.0.0.1 — a server outside the node — and returns
// it with its client URL.
func startExternalNATS(t *testing.T) (*server.Server, string) {
	t.Helper()
	ns, err := server.NewServer(&server.Options{
		ServerName: "external", Host: "127.0.0.1", Port: server.RANDOM_PORT,
		JetStream: true, StoreDir: t.TempDir(), NoLog: true, NoSigs: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(30 * time.Second) {
		ns.Shutdown()
		t.Fatal("the external nats server did not become ready")
	}
	t.Cleanup(func() {
		ns.Shutdown()
		ns.WaitForShutdown()
	})
	return ns, ns.ClientURL()
}

// messageEvents returns the MessageEvents a printEvent function logged.
func messageEvents(t *testing.T, logs string) []triggers.MessageEvent {
	t.Helper()
	var out []triggers.MessageEvent
	for _, e := range events(logs) {
		var ev triggers.MessageEvent
		if err := json.Unmarshal([]byte(e), &ev); err != nil {
			t.Fatalf("event %s: %v", e, err)
		}
		out = append(out, ev)
	}
	return out
}

// TestNATSTriggerExternalURL checks a nats trigger with url: it takes the
// messages of the external server, with subject, data and headers, and not
// those of the embedded server on the same subject.
func TestNATSTriggerExternalURL(t *testing.T) {
	_, url := startExternalNATS(t)
	ext, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer ext.Close()

	h := startNode(t, asyncConfig())
	h.deployFiles(model.Config{Name: "extsub", Runtime: model.RuntimePython, Handler: "main.handler",
		Triggers: []model.Trigger{{Type: model.TriggerNATS, Subject: "ext.>", URL: url}}}, printEvent)
	eventually(t, 30*time.Second, func() string {
		ext.Publish("ext.probe", []byte("probe"))
		time.Sleep(200 * time.Millisecond)
		if !strings.Contains(h.logs("extsub"), `"ext.probe"`) {
			return "the trigger takes no messages from the external server"
		}
		return ""
	})

	// On the embedded server first: published before the external message
	// and on the same subject space, it must not be taken.
	if err := h.node.NATS().Publish("ext.embedded", []byte("wrong server")); err != nil {
		t.Fatal(err)
	}
	h.node.NATS().Flush()
	m := nats.NewMsg("ext.orders.new")
	m.Data = []byte(`{"id":7}`)
	m.Header.Set("Trace", "xyz")
	m.Header.Add("Multi", "a")
	m.Header.Add("Multi", "b")
	if err := ext.PublishMsg(m); err != nil {
		t.Fatal(err)
	}
	if err := ext.Publish("ext.bin", []byte{0x80, 0x81}); err != nil {
		t.Fatal(err)
	}
	ext.Flush()

	bySubject := map[string][]triggers.MessageEvent{}
	eventually(t, 30*time.Second, func() string {
		time.Sleep(200 * time.Millisecond) // each logs read costs the node a JetStream consumer
		clear(bySubject)
		for _, ev := range messageEvents(t, h.logs("extsub")) {
			bySubject[ev.Subject] = append(bySubject[ev.Subject], ev)
		}
		if len(bySubject["ext.orders.new"]) == 0 || len(bySubject["ext.bin"]) == 0 {
			return "the external messages were not invoked; logs:\n" + h.logs("extsub")
		}
		return ""
	})
	if evs := bySubject["ext.orders.new"]; len(evs) != 1 {
		t.Errorf("ext.orders.new invoked %d times, want once", len(evs))
	} else if ev := evs[0]; ev.Source != "aloft.nats" || ev.Data != `{"id":7}` || ev.IsBase64Encoded ||
		strings.Join(ev.Headers["Trace"], ",") != "xyz" || strings.Join(ev.Headers["Multi"], ",") != "a,b" {
		t.Errorf("event %+v, want source aloft.nats, data {\"id\":7}, headers Trace: xyz and Multi: a, b", ev)
	}
	if evs := bySubject["ext.bin"]; len(evs) != 1 || !evs[0].IsBase64Encoded ||
		evs[0].Data != base64.StdEncoding.EncodeToString([]byte{0x80, 0x81}) {
		t.Errorf("binary events %+v, want one with base64 data", evs)
	}
	if evs := bySubject["ext.embedded"]; len(evs) != 0 {
		t.Errorf("a message of the embedded server invoked the function: %+v", evs)
	}
}

// TestNATSTriggerDurable checks a nats trigger with durable on an
// external server's stream: messages published while the node is down are
// invoked, each once, when it is back.
func TestNATSTriggerDurable(t *testing.T) {
	_, url := startExternalNATS(t)
	ext, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer ext.Close()
	js, err := jetstream.New(ext)
	if err != nil {
		t.Fatal(err)
	}
	// The stream is the user's: the trigger finds the one holding its subject.
	if _, err := js.CreateStream(t.Context(), jetstream.StreamConfig{Name: "JOBS", Subjects: []string{"jobs.>"}}); err != nil {
		t.Fatal(err)
	}

	h := startNode(t, asyncConfig())
	h.deployFiles(model.Config{Name: "jobs", Runtime: model.RuntimePython, Handler: "main.handler",
		Triggers: []model.Trigger{{Type: model.TriggerNATS, Subject: "jobs.>", URL: url, Durable: "jobs-worker"}}}, printEvent)
	// The consumer starts with the messages published after it exists:
	// probe until one is taken.
	eventually(t, 30*time.Second, func() string {
		if _, err := js.Publish(t.Context(), "jobs.probe", []byte("probe")); err != nil {
			return err.Error()
		}
		time.Sleep(200 * time.Millisecond)
		if !strings.Contains(h.logs("jobs"), `"jobs.probe"`) {
			return "the durable trigger takes no messages"
		}
		return ""
	})
	cons, err := js.Consumer(t.Context(), "JOBS", "jobs-worker")
	if err != nil {
		t.Fatalf("the durable consumer: %v", err)
	}
	// Let the probes settle so none is in flight when the node stops.
	eventually(t, 30*time.Second, func() string {
		ci, err := cons.Info(t.Context())
		if err != nil {
			return err.Error()
		}
		if ci.NumPending != 0 || ci.NumAckPending != 0 {
			return fmt.Sprintf("consumer has %d pending and %d unacknowledged", ci.NumPending, ci.NumAckPending)
		}
		return ""
	})

	h.stop()
	const n = 5
	for i := range n {
		m := nats.NewMsg(fmt.Sprintf("jobs.%d", i))
		m.Data = []byte(fmt.Sprintf(`{"job":%d}`, i))
		m.Header.Set("Job", strconv.Itoa(i))
		if _, err := js.PublishMsg(t.Context(), m); err != nil {
			t.Fatal(err)
		}
	}
	h.start()

	count := map[string]int{}
	eventually(t, 30*time.Second, func() string {
		time.Sleep(200 * time.Millisecond) // each logs read costs the node a JetStream consumer
		clear(count)
		for _, ev := range messageEvents(t, h.logs("jobs")) {
			if ev.Subject != "jobs.probe" {
				count[ev.Subject]++
			}
		}
		if len(count) < n {
			return fmt.Sprintf("%d of %d messages published while the node was down were invoked; logs:\n%s", len(count), n, h.logs("jobs"))
		}
		return ""
	})
	eventually(t, 10*time.Second, func() string {
		ci, err := cons.Info(t.Context())
		if err != nil {
			return err.Error()
		}
		if ci.NumPending != 0 || ci.NumAckPending != 0 {
			return fmt.Sprintf("consumer has %d pending and %d unacknowledged after the node took them", ci.NumPending, ci.NumAckPending)
		}
		return ""
	})
	time.Sleep(time.Second) // a duplicate would show up by now
	clear(count)
	for _, ev := range messageEvents(t, h.logs("jobs")) {
		if ev.Subject == "jobs.probe" {
			continue
		}
		count[ev.Subject]++
		var i int
		fmt.Sscanf(ev.Subject, "jobs.%d", &i)
		if ev.Data != fmt.Sprintf(`{"job":%d}`, i) || strings.Join(ev.Headers["Job"], ",") != strconv.Itoa(i) {
			t.Errorf("event %+v, want the message's data and Job header", ev)
		}
	}
	for i := range n {
		if s := fmt.Sprintf("jobs.%d", i); count[s] != 1 {
			t.Errorf("%s invoked %d times, want once", s, count[s])
		}
	}
}
