// Package triggers turns schedules and NATS messages into asynchronous
// invocations. Each function's triggers (model.Config.Triggers) run on
// every node; a schedule fires once per period across nodes (a firing
// takes a lock in a JetStream KV bucket keyed by schedule and time), and a
// NATS subscription is a queue group, so each message is taken by one node.
package triggers

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/aloft-dev/aloft/internal/model"
	"github.com/aloft-dev/aloft/internal/queue"
	"github.com/aloft-dev/aloft/internal/worker"
)

// locksBucket holds one key per schedule firing; stateBucket the time of
// each schedule's last firing, for catch_up.
const (
	locksBucket = "aloft_schedule_locks"
	stateBucket = "aloft_schedule_state"
)

// maxCatchUpFirings bounds how many missed firings one start replays.
const maxCatchUpFirings = 1000

// Publisher enqueues asynchronous invocations (the queue).
type Publisher interface {
	Publish(ctx context.Context, function string, ev queue.Event) (string, error)
}

// Manager runs the functions' triggers. Set the fields, call Open, then
// Sync for every function.
type Manager struct {
	Conn      *nats.Conn // the embedded server's connection
	JS        jetstream.JetStream
	Publisher Publisher
	Logger    *slog.Logger
	// Minute is how long a minute lasts in rate() schedules (time.Minute);
	// tests shorten it.
	Minute          time.Duration
	Region, Account string

	locks   jetstream.KeyValue
	state   jetstream.KeyValue
	mu      sync.Mutex
	running map[string]*running // by function
	closed  bool
}

type running struct {
	triggers []model.Trigger
	cancel   context.CancelFunc
	wg       sync.WaitGroup
}

// Validate checks triggers beyond model.Config.Normalize: that schedule
// expressions parse. Its errors wrap model.ErrInvalid.
func Validate(ts []model.Trigger) error {
	for i, t := range ts {
		if t.Type == model.TriggerSchedule {
			if _, err := ParseSchedule(t.Expression, time.Minute); err != nil {
				return fmt.Errorf("triggers[%d]: %w", i, err)
			}
		}
	}
	return nil
}

// Open creates the lock bucket and applies defaults.
func (m *Manager) Open(ctx context.Context) error {
	if m.Minute == 0 {
		m.Minute = time.Minute
	}
	if m.Logger == nil {
		m.Logger = slog.New(slog.DiscardHandler)
	}
	if m.Region == "" {
		m.Region = model.DefaultRegion
	}
	if m.Account == "" {
		m.Account = model.DefaultAccountID
	}
	kv, err := m.JS.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket: locksBucket, Storage: jetstream.FileStorage, TTL: time.Hour,
	})
	if err != nil {
		return fmt.Errorf("cannot open kv bucket %s: %w", locksBucket, err)
	}
	m.locks = kv
	if m.state, err = m.JS.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket: stateBucket, Storage: jetstream.FileStorage,
	}); err != nil {
		return fmt.Errorf("cannot open kv bucket %s: %w", stateBucket, err)
	}
	m.running = make(map[string]*running)
	return nil
}

// Sync starts, restarts or stops function name's triggers to match fn
// (nil: deleted).
func (m *Manager) Sync(name string, fn *model.Function) {
	var ts []model.Trigger
	if fn != nil {
		ts = fn.Triggers
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return
	}
	r := m.running[name]
	if r != nil && reflect.DeepEqual(r.triggers, ts) {
		return
	}
	if r != nil {
		r.cancel()
		r.wg.Wait()
		delete(m.running, name)
	}
	if len(ts) == 0 {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	r = &running{triggers: ts, cancel: cancel}
	m.running[name] = r
	for i, t := range ts {
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			switch t.Type {
			case model.TriggerSchedule:
				m.runSchedule(ctx, name, i, t)
			case model.TriggerNATS:
				m.runNATS(ctx, name, t)
			}
		}()
	}
}

// Close stops every trigger.
func (m *Manager) Close() {
	m.mu.Lock()
	m.closed = true
	rs := m.running
	m.running = nil
	m.mu.Unlock()
	for _, r := range rs {
		r.cancel()
	}
	for _, r := range rs {
		r.wg.Wait()
	}
}

// ScheduledEvent is EventBridge's Scheduled Event, the event a schedule
// trigger invokes its function with.
type ScheduledEvent struct {
	Version    string         `json:"version"`
	ID         string         `json:"id"`
	DetailType string         `json:"detail-type"`
	Source     string         `json:"source"`
	Account    string         `json:"account"`
	Time       string         `json:"time"`
	Region     string         `json:"region"`
	Resources  []string       `json:"resources"`
	Detail     map[string]any `json:"detail"`
}

// runSchedule fires one schedule until ctx ends. Firings missed while no
// node ran are not made up, unless the trigger asks for catch_up: then those
// no older than catch_up are fired first, oldest first, each once.
func (m *Manager) runSchedule(ctx context.Context, name string, index int, t model.Trigger) {
	s, err := ParseSchedule(t.Expression, m.Minute)
	if err != nil {
		m.Logger.Warn("cannot run schedule", "function", name, "expression", t.Expression, "err", err)
		return
	}
	sum := sha256.Sum256([]byte(t.Expression))
	id := name + "." + strconv.Itoa(index) + "-" + hex.EncodeToString(sum[:6])
	rule := fmt.Sprintf("arn:aws:events:%s:%s:rule/aloft-%s-%d", m.Region, m.Account, name, index)
	now := time.Now()
	if t.CatchUp != "" {
		m.catchUp(ctx, name, id, rule, s, t.CatchUp, now)
	}
	for {
		next := s.Next(now)
		if next.IsZero() {
			return
		}
		timer := time.NewTimer(time.Until(next))
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case <-timer.C:
		}
		now = next
		m.fire(ctx, name, id, rule, next)
	}
}

// catchUp fires the periods of s between the schedule's last recorded
// firing (but no earlier than catch_up before now) and now.
func (m *Manager) catchUp(ctx context.Context, name, id, rule string, s Schedule, catchUp string, now time.Time) {
	window, err := time.ParseDuration(catchUp)
	if err != nil {
		return
	}
	e, err := m.state.Get(ctx, id)
	if err != nil {
		return // never fired: nothing was missed
	}
	ms, err := strconv.ParseInt(string(e.Value()), 10, 64)
	if err != nil {
		return
	}
	from := time.UnixMilli(ms)
	if earliest := now.Add(-window); from.Before(earliest) {
		from = earliest
	}
	n := 0
	for at := s.Next(from); !at.IsZero() && !at.After(now) && n < maxCatchUpFirings; at = s.Next(at) {
		m.fire(ctx, name, id, rule, at)
		n++
	}
	if n > 0 {
		m.Logger.Info("replayed missed schedule firings", "function", name, "firings", n)
	}
}

// fire enqueues one firing unless another node already did.
func (m *Manager) fire(ctx context.Context, name, id, rule string, at time.Time) {
	key := id + "." + strconv.FormatInt(at.UnixMilli(), 10)
	if _, err := m.locks.Create(ctx, key, []byte(time.Now().UTC().Format(time.RFC3339Nano))); err != nil {
		if !errors.Is(err, jetstream.ErrKeyExists) {
			m.Logger.Warn("cannot take the schedule lock", "function", name, "err", err)
		}
		return
	}
	ev := ScheduledEvent{
		Version: "0", ID: worker.NewRequestID(), DetailType: "Scheduled Event", Source: "aws.events",
		Account: m.Account, Time: at.UTC().Format(time.RFC3339), Region: m.Region,
		Resources: []string{rule}, Detail: map[string]any{},
	}
	b, _ := json.Marshal(ev)
	if _, err := m.Publisher.Publish(ctx, name, queue.Event{Payload: b}); err != nil {
		m.Logger.Warn("cannot enqueue a scheduled event", "function", name, "err", err)
		m.locks.Delete(context.Background(), key) // let another node try
		return
	}
	m.state.Put(ctx, id, []byte(strconv.FormatInt(at.UnixMilli(), 10)))
}

// MessageEvent is the event a nats trigger invokes its function with.
type MessageEvent struct {
	Source  string `json:"source"` // "aloft.nats"
	Subject string `json:"subject"`
	Reply   string `json:"reply,omitempty"`
	Data    string `json:"data"`
	// IsBase64Encoded tells that Data is base64 because the message was
	// not UTF-8 text.
	IsBase64Encoded bool                `json:"isBase64Encoded"`
	Headers         map[string][]string `json:"headers,omitempty"`
	Time            string              `json:"time"`
}

func messageEvent(subject, reply string, data []byte, h nats.Header, at time.Time) []byte {
	ev := MessageEvent{Source: "aloft.nats", Subject: subject, Reply: reply, Time: at.UTC().Format(time.RFC3339Nano)}
	if utf8.Valid(data) {
		ev.Data = string(data)
	} else {
		ev.Data, ev.IsBase64Encoded = base64.StdEncoding.EncodeToString(data), true
	}
	if len(h) > 0 {
		ev.Headers = h
	}
	b, _ := json.Marshal(ev)
	return b
}

// runNATS subscribes to a trigger's subject until ctx ends, retrying
// while the server or the stream is not there.
func (m *Manager) runNATS(ctx context.Context, name string, t model.Trigger) {
	conn := m.Conn
	if t.URL != "" {
		c, err := nats.Connect(t.URL, nats.Name("aloft-trigger-"+name), nats.MaxReconnects(-1),
			nats.RetryOnFailedConnect(true), nats.ReconnectWait(time.Second))
		if err != nil {
			m.Logger.Warn("cannot connect to the trigger's NATS server", "function", name, "url", t.URL, "err", err)
			return
		}
		defer c.Close()
		conn = c
	}
	for {
		var err error
		if t.Durable != "" {
			err = m.consume(ctx, conn, name, t)
		} else {
			err = m.subscribe(ctx, conn, name, t)
		}
		if err == nil || ctx.Err() != nil {
			return
		}
		m.Logger.Warn("nats trigger failed; retrying", "function", name, "subject", t.Subject, "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(5 * time.Second):
		}
	}
}

// subscribe takes core NATS messages in a queue group, so each is taken by
// one node, until ctx ends.
func (m *Manager) subscribe(ctx context.Context, conn *nats.Conn, name string, t model.Trigger) error {
	sub, err := conn.QueueSubscribe(t.Subject, "aloft-trigger-"+name, func(msg *nats.Msg) {
		b := messageEvent(msg.Subject, msg.Reply, msg.Data, msg.Header, time.Now())
		if _, err := m.Publisher.Publish(context.Background(), name, queue.Event{Payload: b}); err != nil {
			m.Logger.Warn("cannot enqueue a NATS message", "function", name, "subject", msg.Subject, "err", err)
		}
	})
	if err != nil {
		return err
	}
	<-ctx.Done()
	return sub.Unsubscribe()
}

// consume takes messages from a durable JetStream consumer on the stream
// holding the subject and acknowledges each once it is enqueued.
func (m *Manager) consume(ctx context.Context, conn *nats.Conn, name string, t model.Trigger) error {
	js, err := jetstream.New(conn)
	if err != nil {
		return err
	}
	stream, err := js.StreamNameBySubject(ctx, t.Subject)
	if err != nil {
		return fmt.Errorf("cannot find a stream holding %s: %w", t.Subject, err)
	}
	cons, err := js.CreateOrUpdateConsumer(ctx, stream, jetstream.ConsumerConfig{
		Durable: t.Durable, FilterSubject: t.Subject, AckPolicy: jetstream.AckExplicitPolicy,
		DeliverPolicy: jetstream.DeliverNewPolicy, MaxDeliver: -1,
	})
	if err != nil {
		return fmt.Errorf("cannot create consumer %s: %w", t.Durable, err)
	}
	cc, err := cons.Consume(func(msg jetstream.Msg) {
		at := time.Now()
		if md, err := msg.Metadata(); err == nil {
			at = md.Timestamp
		}
		b := messageEvent(msg.Subject(), "", msg.Data(), msg.Headers(), at)
		if _, err := m.Publisher.Publish(context.Background(), name, queue.Event{Payload: b}); err != nil {
			m.Logger.Warn("cannot enqueue a NATS message", "function", name, "subject", msg.Subject(), "err", err)
			msg.NakWithDelay(time.Second)
			return
		}
		msg.Ack()
	})
	if err != nil {
		return err
	}
	<-ctx.Done()
	cc.Stop()
	return nil
}
