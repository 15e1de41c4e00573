package triggers_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/aloft-dev/aloft/internal/model"
	"github.com/aloft-dev/aloft/internal/queue"
	"github.com/aloft-dev/aloft/internal/store"
	"github.com/aloft-dev/aloft/internal/triggers"
)

// recorder is a Publisher that keeps what it was given.
type recorder struct {
	mu     sync.Mutex
	events []triggers.ScheduledEvent
}

func (r *recorder) Publish(_ context.Context, function string, ev queue.Event) (string, error) {
	var se triggers.ScheduledEvent
	if err := json.Unmarshal(ev.Payload, &se); err != nil {
		return "", fmt.Errorf("cannot decode the event of %s: %w", function, err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, se)
	return se.ID, nil
}

func (r *recorder) times() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]string, len(r.events))
	for i, e := range r.events {
		out[i] = e.Time
	}
	return out
}

// TestScheduleFiresOncePerPeriodAcrossNodes runs two managers, as two
// nodes would, on one JetStream, each with its own connection and
// publisher, both running the same schedule: every period fires once in
// all, whichever node wins its lock.
func TestScheduleFiresOncePerPeriodAcrossNodes(t *testing.T) {
	emb, err := store.StartEmbedded(t.TempDir(), "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(emb.Close)

	fn := &model.Function{Config: model.Config{Name: "tick",
		Triggers: []model.Trigger{{Type: model.TriggerSchedule, Expression: "rate(1 minute)"}}}}
	start := time.Now()
	var recs [2]*recorder
	var mgrs [2]*triggers.Manager
	for i := range mgrs {
		nc, err := nats.Connect("", nats.InProcessServer(emb.Server), nats.Name(fmt.Sprintf("node%d", i)))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		js, err := jetstream.New(nc)
		if err != nil {
			t.Fatal(err)
		}
		recs[i] = &recorder{}
		// A minute lasts a second: rate(1 minute) fires every second, and
		// ScheduledEvent.Time (whole seconds) names the period.
		mgrs[i] = &triggers.Manager{Conn: nc, JS: js, Publisher: recs[i], Minute: time.Second}
		if err := mgrs[i].Open(t.Context()); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(mgrs[i].Close)
	}
	for _, m := range mgrs {
		m.Sync("tick", fn)
	}

	const periods = 6
	deadline := time.Now().Add(20 * time.Second)
	for {
		n := len(recs[0].times()) + len(recs[1].times())
		if n >= periods {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d firings after 20s, want %d", n, periods)
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, m := range mgrs {
		m.Close()
	}
	stop := time.Now()

	count := map[string]int{}
	var fired [2]int
	for i, r := range recs {
		for _, at := range r.times() {
			count[at]++
			fired[i]++
		}
	}
	for at, n := range count {
		if n != 1 {
			t.Errorf("period %s fired %d times across the nodes, want once", at, n)
		}
		tm, err := time.Parse(time.RFC3339, at)
		if err != nil {
			t.Fatalf("time %q: %v", at, err)
		}
		// Firings missed before the managers started are not made up.
		if tm.Before(start.Truncate(time.Second)) || tm.After(stop) {
			t.Errorf("period %s outside the run %s – %s", at, start.Format(time.RFC3339Nano), stop.Format(time.RFC3339Nano))
		}
	}
	// Consecutive periods: none skipped between the first and the last.
	first, last := time.Time{}, time.Time{}
	for at := range count {
		tm, _ := time.Parse(time.RFC3339, at)
		if first.IsZero() || tm.Before(first) {
			first = tm
		}
		if tm.After(last) {
			last = tm
		}
	}
	if want := int(last.Sub(first)/time.Second) + 1; len(count) != want {
		t.Errorf("%d periods fired between %s and %s, want %d (every second): %v",
			len(count), first.Format(time.RFC3339), last.Format(time.RFC3339), want, strings.Join(append(recs[0].times(), recs[1].times()...), " "))
	}
	t.Logf("firings per node: %v", fired)
}

// TestScheduleCatchUp: firings missed while no node ran are replayed at
// the next start only when the trigger asks for catch_up, each once.
func TestScheduleCatchUp(t *testing.T) {
	emb, err := store.StartEmbedded(t.TempDir(), "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(emb.Close)
	nc, err := nats.Connect("", nats.InProcessServer(emb.Server))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	node := func(rec *recorder) *triggers.Manager {
		m := &triggers.Manager{Conn: nc, JS: js, Publisher: rec, Minute: time.Second}
		if err := m.Open(t.Context()); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(m.Close)
		return m
	}
	waitFirings := func(rec *recorder, n int) {
		deadline := time.Now().Add(15 * time.Second)
		for len(rec.times()) < n {
			if time.Now().After(deadline) {
				t.Fatalf("%d firings, want %d", len(rec.times()), n)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	for _, c := range []struct {
		name     string
		catchUp  string
		replayed bool
	}{
		{"without catch_up", "", false},
		{"with catch_up", "1h", true},
	} {
		t.Run(c.name, func(t *testing.T) {
			fn := &model.Function{Config: model.Config{Name: "tick-" + strings.ReplaceAll(c.name, " ", "-"),
				Triggers: []model.Trigger{{Type: model.TriggerSchedule, Expression: "rate(1 minute)", CatchUp: c.catchUp}}}}
			first := &recorder{}
			m := node(first)
			m.Sync(fn.Name, fn)
			waitFirings(first, 1)
			m.Close()
			down := time.Now()
			time.Sleep(3500 * time.Millisecond) // three periods pass with no node
			second := &recorder{}
			m2 := node(second)
			m2.Sync(fn.Name, fn)
			time.Sleep(300 * time.Millisecond) // a replay happens at once; no regular firing is due yet
			m2.Close()
			var missed int
			for _, at := range second.times() {
				ts, err := time.Parse(time.RFC3339, at)
				if err != nil {
					t.Fatal(err)
				}
				if ts.Before(down.Add(-time.Second)) {
					t.Errorf("replayed %s, from before the node went down at %s", at, down.Format(time.RFC3339))
				}
				missed++
			}
			if c.replayed && (missed < 2 || missed > 4) {
				t.Errorf("replayed %d firings %v, want the 3 missed ones (±1 for timing)", missed, second.times())
			}
			if !c.replayed && missed > 1 {
				t.Errorf("replayed %d firings %v without catch_up, want none", missed, second.times())
			}
		})
	}
}
