// Package store keeps Aloft's state on NATS JetStream: function metadata in
// a KV bucket (watched into an in-memory cache, so the invoke path never
// waits on the store), code bundles in an object store, and logs and usage
// records in streams.
//
// Logs are kept in one stream per function (ALOFT_LOGS_<name>), each bounded
// in bytes, so a function that floods its logs only loses its own history.
// Usage records, which billing needs, share one stream bounded only by age:
// nothing one tenant does can discard another's records (their volume is
// one small record per invocation, which the invocations pay for).
package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/aloft-dev/aloft/internal/model"
)

// Names of the JetStream assets.
const (
	functionsBucket  = "aloft_functions"
	codeBucket       = "aloft_code"
	logsStreamPrefix = "ALOFT_LOGS_" // + function name
	legacyLogsStream = "ALOFT_LOGS"  // one stream for all functions, before 2026-12
	usageStream      = "ALOFT_USAGE"
	logsSubject      = "aloft.logs."  // + function name
	usageSubject     = "aloft.usage." // + function name
)

// Retention of each function's logs: whichever bound is reached first drops
// the function's oldest records.
const (
	logsMaxAge          = 7 * 24 * time.Hour
	usageMaxAge         = 90 * 24 * time.Hour
	storeRequestTimeout = 5 * time.Second
)

// logsMaxBytesPerFn bounds each function's stored logs (a variable for
// tests).
var logsMaxBytesPerFn int64 = 64 << 20

// Store is the node's view of the JetStream state. Create it with Open.
type Store struct {
	js   jetstream.JetStream
	kv   jetstream.KeyValue
	code jetstream.ObjectStore

	batch *batcher // log texts and usage records on their way to the streams

	logStreams sync.Map // function name → struct{}: its log stream exists

	mu        sync.RWMutex
	functions map[string]*model.Function
	watcher   jetstream.KeyWatcher
	changes   []func(name string, fn *model.Function)
}

// Open creates the buckets and streams if needed and loads the function
// cache. It returns once the cache holds every stored function.
func Open(ctx context.Context, nc *nats.Conn) (*Store, error) {
	var s *Store
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncErrHandler(func(_ jetstream.JetStream, m *nats.Msg, _ error) {
		if fn, ok := strings.CutPrefix(m.Subject, logsSubject); ok && s != nil {
			s.logStreams.Delete(fn) // gone (deleted by another node?): make it again next time
		}
	}))
	if err != nil {
		return nil, err
	}
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket: functionsBucket, History: 5, Storage: jetstream.FileStorage,
	})
	if err != nil {
		return nil, fmt.Errorf("cannot open kv bucket: %w", err)
	}
	code, err := js.CreateOrUpdateObjectStore(ctx, jetstream.ObjectStoreConfig{
		Bucket: codeBucket, Storage: jetstream.FileStorage, Compression: true,
	})
	if err != nil {
		return nil, fmt.Errorf("cannot open object store: %w", err)
	}
	// The single log stream of earlier versions takes every log subject;
	// the per-function streams cannot exist beside it.
	if err := js.DeleteStream(ctx, legacyLogsStream); err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, fmt.Errorf("cannot remove the old log stream: %w", err)
	}
	if _, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name: usageStream, Subjects: []string{usageSubject + ">"}, Storage: jetstream.FileStorage,
		MaxAge: usageMaxAge, Discard: jetstream.DiscardOld,
	}); err != nil {
		return nil, fmt.Errorf("cannot open stream %s: %w", usageStream, err)
	}
	s = &Store{js: js, kv: kv, code: code, functions: make(map[string]*model.Function), batch: newBatcher(js)}
	if err := s.watch(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// logStream makes sure function's log stream exists, once per Store and
// function (and again after a publish to it failed).
func (s *Store) logStream(function string) error {
	if _, ok := s.logStreams.Load(function); ok {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), storeRequestTimeout)
	defer cancel()
	_, err := s.js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name: logsStreamPrefix + function, Subjects: []string{logsSubject + function},
		Storage: jetstream.FileStorage, MaxAge: logsMaxAge, MaxBytes: logsMaxBytesPerFn,
		Discard: jetstream.DiscardOld,
	})
	if err != nil {
		return fmt.Errorf("cannot open the log stream of %s: %w", function, err)
	}
	s.logStreams.Store(function, struct{}{})
	return nil
}

// JetStream returns the JetStream context, for packages that keep their own
// streams (queues).
func (s *Store) JetStream() jetstream.JetStream { return s.js }

// watch fills the cache and keeps it current with every change to the
// bucket, from this node or another.
func (s *Store) watch(ctx context.Context) error {
	w, err := s.kv.WatchAll(context.Background())
	if err != nil {
		return fmt.Errorf("cannot watch functions: %w", err)
	}
	s.watcher = w
	initial := make(chan struct{})
	go func() {
		loaded := false
		for e := range w.Updates() {
			if e == nil { // end of the initial values
				if !loaded {
					loaded = true
					close(initial)
				}
				continue
			}
			s.apply(e)
		}
	}()
	select {
	case <-initial:
		return nil
	case <-ctx.Done():
		w.Stop()
		return fmt.Errorf("cannot load functions: %w", ctx.Err())
	}
}

func (s *Store) apply(e jetstream.KeyValueEntry) {
	name := e.Key()
	var fn *model.Function
	if e.Operation() == jetstream.KeyValuePut {
		fn = new(model.Function)
		if err := json.Unmarshal(e.Value(), fn); err != nil {
			return
		}
	}
	s.mu.Lock()
	if fn == nil {
		delete(s.functions, name)
	} else {
		s.functions[name] = fn
	}
	hooks := s.changes
	s.mu.Unlock()
	for _, h := range hooks {
		h(name, fn)
	}
}

// OnChange registers f to be called after every change of a function (fn
// is nil when it was deleted).
func (s *Store) OnChange(f func(name string, fn *model.Function)) {
	s.mu.Lock()
	s.changes = append(s.changes, f)
	s.mu.Unlock()
}

// Close publishes what is still gathered (without waiting; Flush waits)
// and stops watching.
func (s *Store) Close() {
	s.batch.flush()
	if s.watcher != nil {
		s.watcher.Stop()
	}
}

// Function returns the cached function, or an error wrapping ErrNotFound.
// The returned value must not be modified.
func (s *Store) Function(name string) (*model.Function, error) {
	s.mu.RLock()
	fn := s.functions[name]
	s.mu.RUnlock()
	if fn == nil {
		return nil, fmt.Errorf("function %s: %w", name, model.ErrNotFound)
	}
	return fn, nil
}

// Functions returns every function, sorted by name.
func (s *Store) Functions() []*model.Function {
	s.mu.RLock()
	out := make([]*model.Function, 0, len(s.functions))
	for _, fn := range s.functions {
		out = append(out, fn)
	}
	s.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// PutFunction stores fn and waits until the local cache has it, so a read
// right after a deploy sees the deploy.
func (s *Store) PutFunction(ctx context.Context, fn *model.Function) error {
	b, err := json.Marshal(fn)
	if err != nil {
		return err
	}
	if _, err := s.kv.Put(ctx, fn.Name, b); err != nil {
		return fmt.Errorf("cannot store function %s: %w", fn.Name, err)
	}
	return s.waitCache(ctx, fn.Name, func(got *model.Function) bool {
		return got != nil && got.LastModified.Equal(fn.LastModified) && got.CodeSHA256 == fn.CodeSHA256
	})
}

// DeleteFunction removes the function's metadata and its logs (its usage
// records stay, for billing).
func (s *Store) DeleteFunction(ctx context.Context, name string) error {
	if err := s.kv.Delete(ctx, name); err != nil {
		return fmt.Errorf("cannot delete function %s: %w", name, err)
	}
	if err := s.waitCache(ctx, name, func(got *model.Function) bool { return got == nil }); err != nil {
		return err
	}
	s.logStreams.Delete(name)
	if err := s.js.DeleteStream(ctx, logsStreamPrefix+name); err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
		return fmt.Errorf("cannot delete the logs of %s: %w", name, err)
	}
	return nil
}

func (s *Store) waitCache(ctx context.Context, name string, ok func(*model.Function) bool) error {
	for {
		s.mu.RLock()
		got := s.functions[name]
		s.mu.RUnlock()
		if ok(got) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("cannot see the change of %s: %w", name, ctx.Err())
		case <-time.After(time.Millisecond):
		}
	}
}

// PutCode stores a bundle under its sha256.
func (s *Store) PutCode(ctx context.Context, sha string, data []byte) error {
	if _, err := s.code.PutBytes(ctx, sha, data); err != nil {
		return fmt.Errorf("cannot store code %s: %w", sha, err)
	}
	return nil
}

// Code returns a stored bundle.
func (s *Store) Code(ctx context.Context, sha string) ([]byte, error) {
	b, err := s.code.GetBytes(ctx, sha)
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return nil, fmt.Errorf("code %s: %w", sha, model.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("cannot read code %s: %w", sha, err)
	}
	return b, nil
}

// DeleteCode removes a bundle; a missing one is not an error.
func (s *Store) DeleteCode(ctx context.Context, sha string) error {
	err := s.code.Delete(ctx, sha)
	if err != nil && !errors.Is(err, jetstream.ErrObjectNotFound) {
		return fmt.Errorf("cannot delete code %s: %w", sha, err)
	}
	return nil
}

// AppendLog stores one invocation's log text. It is published within a
// few milliseconds, batched with others (batch.go), and does not wait for
// the store's acknowledgement; Flush does. The error is that of an earlier
// publish that failed.
func (s *Store) AppendLog(function string, text []byte) error {
	if err := s.logStream(function); err != nil {
		return err
	}
	return s.batch.add(logsSubject+function, text)
}

// AppendUsage stores a usage record, as AppendLog does.
func (s *Store) AppendUsage(u *model.Usage) error {
	b, err := json.Marshal(u)
	if err != nil {
		return err
	}
	return s.batch.add(usageSubject+u.Function, b)
}

// Flush publishes what AppendLog and AppendUsage gathered and waits until
// every asynchronous publish was acknowledged.
func (s *Store) Flush(ctx context.Context) error {
	s.batch.flush()
	select {
	case <-s.js.PublishAsyncComplete():
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Logs calls emit with each stored log text of the function since the given
// time, in order. With follow it keeps calling emit for new records until
// ctx ends; otherwise it returns after the last stored one.
func (s *Store) Logs(ctx context.Context, function string, since time.Time, follow bool, emit func([]byte) error) error {
	if follow {
		// Following a function that has not logged yet waits for its
		// first record.
		if err := s.logStream(function); err != nil {
			return err
		}
	}
	err := s.read(ctx, logsStreamPrefix+function, logsSubject+function, since, follow, func(m jetstream.Msg) error {
		for _, text := range records(m) {
			if err := emit(text); err != nil {
				return err
			}
		}
		return nil
	})
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil // nothing logged yet
	}
	return err
}

// Usage calls emit with every stored usage record of one function or
// (function "") all, oldest first for each function (records of several
// functions written within one batch window are grouped by function).
func (s *Store) Usage(ctx context.Context, function string, emit func(*model.Usage)) error {
	subject := usageSubject + ">"
	if function != "" {
		subject = usageSubject + function
	}
	return s.read(ctx, usageStream, subject, time.Time{}, false, func(m jetstream.Msg) error {
		for _, rec := range records(m) {
			var u model.Usage
			if json.Unmarshal(rec, &u) == nil {
				emit(&u)
			}
		}
		return nil
	})
}

// read walks a stream's messages on subject with an ordered consumer.
func (s *Store) read(ctx context.Context, stream, subject string, since time.Time, follow bool, emit func(jetstream.Msg) error) error {
	info, err := s.js.Stream(ctx, stream)
	if err != nil {
		return err
	}
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: []string{subject}, DeliverPolicy: jetstream.DeliverAllPolicy}
	if !since.IsZero() {
		cfg.DeliverPolicy, cfg.OptStartTime = jetstream.DeliverByStartTimePolicy, &since
	}
	// Without follow, stop at the subject's last message as of now.
	var last uint64
	if !follow {
		m, err := info.GetLastMsgForSubject(ctx, subject)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		if !since.IsZero() && m.Time.Before(since) {
			return nil
		}
		last = m.Sequence
	}
	// A read leaves no consumer behind: it is deleted on return, and the
	// server drops it after a short inactivity if this process dies first.
	// The ordered consumer is read through Messages, which keeps one
	// server-side consumer (each Fetch would replace it with a new one).
	cfg.InactiveThreshold = 30 * time.Second
	cons, err := s.js.OrderedConsumer(ctx, stream, cfg)
	if err != nil {
		return err
	}
	it, err := cons.Messages()
	if err != nil {
		return err
	}
	defer func() {
		it.Stop()
		if info := cons.CachedInfo(); info != nil {
			dctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			s.js.DeleteConsumer(dctx, stream, info.Name)
		}
	}()
	if info := cons.CachedInfo(); !follow && info != nil && info.NumPending == 0 {
		return nil // the messages before last went away since it was looked up
	}
	for {
		m, err := it.Next(jetstream.NextContext(ctx))
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		if err := emit(m); err != nil {
			return err
		}
		md, err := m.Metadata()
		if err == nil && !follow && (md.Sequence.Stream >= last || md.NumPending == 0) {
			return nil
		}
	}
}

func splitHostPort(hp string) (string, int, error) {
	host, port, err := net.SplitHostPort(hp)
	if err != nil {
		return "", 0, err
	}
	p, err := strconv.Atoi(port)
	return host, p, err
}
