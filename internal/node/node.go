// Package node is the composition root: it wires one all-in-one Aloft node
// (embedded NATS JetStream, store, worker, gateway, control-plane API) and
// owns the start and stop order.
package node

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/aloft-dev/aloft/internal/api"
	"github.com/aloft-dev/aloft/internal/bundle"
	"github.com/aloft-dev/aloft/internal/gateway"
	"github.com/aloft-dev/aloft/internal/metering"
	"github.com/aloft-dev/aloft/internal/model"
	"github.com/aloft-dev/aloft/internal/queue"
	"github.com/aloft-dev/aloft/internal/sandbox"
	"github.com/aloft-dev/aloft/internal/scheduler"
	"github.com/aloft-dev/aloft/internal/store"
	"github.com/aloft-dev/aloft/internal/triggers"
	"github.com/aloft-dev/aloft/internal/worker"
	"github.com/aloft-dev/aloft/runtimes"
)

// Config is a node's configuration. The zero value of each field means its
// documented default.
type Config struct {
	DataDir   string        // state directory (default ./.aloft)
	Listen    string        // HTTP address (default 127.0.0.1:8080; port 0 picks one)
	Token     string        // admin token (default: read or create DataDir/token)
	KeepAlive time.Duration // idle instance lifetime (default 10m)
	// PoolSize is how many pre-started Node and Python instances the worker
	// keeps per runtime for cold starts (default worker.DefaultPoolSize;
	// negative disables the pools).
	PoolSize int
	// Isolation is "auto" (isolate when the host can, else warn and run
	// plain processes), "required" (refuse to start without isolation) or
	// "none" (plain processes).
	Isolation string
	Grace     time.Duration // drain time for in-flight invocations on shutdown (default 30s)
	Prices    metering.Prices
	// MemoryMB is the memory budget for instances (default 80% of RAM).
	MemoryMB int
	// QueueTimeout bounds the wait for capacity before a 429 (default 10s).
	QueueTimeout time.Duration
	// KeepAlivePolicy is "fixed" (default) or "adaptive".
	KeepAlivePolicy string
	// NATSListen opens a TCP listener on the embedded NATS server ("" = none).
	NATSListen string
	Version    string
	Logger     *slog.Logger

	// Asynchronous invocation and triggers; zero values mean Lambda's
	// behaviour. Tests shorten the waits.
	AsyncConcurrency  int           // events of one function run at once per node (queue.DefaultConcurrency)
	AsyncMaxPayload   int           // bytes of an Event invocation (model.MaxAsyncPayload)
	AsyncRetryBackoff time.Duration // wait before the first retry; doubles for the second (1m)
	AsyncThrottleWait time.Duration // wait before a throttled event is tried again (1s)
	ScheduleMinute    time.Duration // length of a minute in rate() schedules (1m)
}

// Node is a running all-in-one node.
type Node struct {
	cfg      Config
	log      *slog.Logger
	nats     *store.Embedded
	store    *store.Store
	worker   *worker.Worker
	queue    *queue.Queue
	triggers *triggers.Manager
	usage    *metering.Aggregator
	http     *http.Server
	ln       net.Listener
	driver   sandbox.Driver
	tokenMsg string
	served   chan error
	lock     *os.File // the data directory's lock, held while the node runs
}

// Start brings a node up and returns once it serves HTTP.
func Start(ctx context.Context, cfg Config) (*Node, error) {
	if cfg.DataDir == "" {
		cfg.DataDir = ".aloft"
	}
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:8080"
	}
	if cfg.MemoryMB == 0 {
		cfg.MemoryMB = defaultMemoryMB()
	}
	if cfg.Grace == 0 {
		cfg.Grace = 30 * time.Second
	}
	if cfg.Prices == (metering.Prices{}) {
		cfg.Prices = metering.Prices{PerGBSecond: metering.DefaultPricePerGBSecond, PerMillionRequest: metering.DefaultPricePerMillionRequest}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	dataDir, err := filepath.Abs(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	cfg.DataDir = dataDir
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, fmt.Errorf("cannot create data directory: %w", err)
	}
	n := &Node{cfg: cfg, log: cfg.Logger, usage: &metering.Aggregator{}, served: make(chan error, 1)}
	ok := false
	defer func() {
		if !ok {
			n.closeAll()
		}
	}()
	if n.lock, err = lockDataDir(dataDir); err != nil {
		return nil, err
	}

	if n.cfg.Token, n.tokenMsg, err = loadToken(dataDir, cfg.Token); err != nil {
		return nil, err
	}
	cfg.Token = n.cfg.Token
	if n.driver, err = chooseDriver(cfg, n.log); err != nil {
		return nil, err
	}
	runtimeDir, err := runtimes.Extract(filepath.Join(dataDir, "runtimes"))
	if err != nil {
		return nil, fmt.Errorf("cannot extract runtimes: %w", err)
	}
	if n.nats, err = store.StartEmbedded(dataDir, cfg.NATSListen); err != nil {
		return nil, err
	}
	if n.store, err = store.Open(ctx, n.nats.Conn); err != nil {
		return nil, err
	}
	// Usage totals are derived state: rebuild them from the usage stream.
	if err := n.store.Usage(ctx, "", n.usage.Add); err != nil {
		return nil, fmt.Errorf("cannot replay usage records: %w", err)
	}
	code := &bundle.Cache{Dir: filepath.Join(dataDir, "code"), Fetch: n.store.Code, Prepare: runtimes.Prepare}
	policy, err := keepAlivePolicy(cfg)
	if err != nil {
		return nil, err
	}
	n.worker = &worker.Worker{
		Driver: n.driver, Code: code, Sink: n, RuntimeDir: runtimeDir,
		KeepAlive: cfg.KeepAlive, KeepAlivePolicy: policy, MemoryMB: cfg.MemoryMB,
		QueueTimeout: cfg.QueueTimeout, Logger: n.log.With("component", "worker"),
		PoolSize: max(cfg.PoolSize, 0), PoolDir: filepath.Join(dataDir, "pool"),
	}
	if cfg.PoolSize == 0 {
		n.worker.PoolSize = worker.DefaultPoolSize
	}
	n.worker.Start()
	// A deploy or delete, from this node or another, retires old instances
	// and keeps provisioned concurrency.
	n.store.OnChange(n.worker.Sync)
	for _, fn := range n.store.Functions() {
		n.worker.Sync(fn.Name, fn)
	}
	if err := n.startAsync(ctx); err != nil {
		return nil, err
	}

	if n.ln, err = net.Listen("tcp", cfg.Listen); err != nil {
		return nil, fmt.Errorf("cannot listen on %s: %w", cfg.Listen, err)
	}
	auth := &gateway.Auth{Token: cfg.Token}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"status":"ok"}`))
	})
	(&gateway.Gateway{
		Functions: n.store, Invoker: n.worker, Enqueuer: n.queue, Auth: auth,
		Region: model.DefaultRegion, Account: model.DefaultAccountID,
	}).Register(mux)
	(&api.API{
		Store: n.store, Code: code, Worker: n.worker, Queue: n.queue, Usage: n.usage, Prices: cfg.Prices,
		Isolation: n.driver.Isolation(), Driver: n.driver.Name(), DataDir: dataDir,
		Version: cfg.Version, Region: model.DefaultRegion, Account: model.DefaultAccountID,
		BaseURL: "http://" + n.ln.Addr().String(),
	}).Register(mux, auth.Require)
	n.http = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { n.served <- n.http.Serve(n.ln) }()
	ok = true
	return n, nil
}

// Addr is the HTTP address the node serves on.
func (n *Node) Addr() string { return n.ln.Addr().String() }

// URL is the node's base URL.
func (n *Node) URL() string { return "http://" + n.Addr() }

// Token is the admin token.
func (n *Node) Token() string { return n.cfg.Token }

// TokenMessage tells where the token came from, for the start-up output.
func (n *Node) TokenMessage() string { return n.tokenMsg }

// Isolation is the isolation in force.
func (n *Node) Isolation() sandbox.Isolation { return n.driver.Isolation() }

// PoolCounts reports the worker's pools of pre-started instances by runtime:
// Warm are ready, Busy are starting.
func (n *Node) PoolCounts() map[model.Runtime]worker.Counts { return n.worker.PoolCounts() }

// DataDir is the absolute data directory.
func (n *Node) DataDir() string { return n.cfg.DataDir }

// Log implements worker.Sink.
func (n *Node) Log(function string, text []byte) {
	if err := n.store.AppendLog(function, text); err != nil {
		n.log.Warn("cannot store log", "function", function, "err", err)
	}
}

// Usage implements worker.Sink.
func (n *Node) Usage(u *model.Usage) {
	n.usage.Add(u)
	if err := n.store.AppendUsage(u); err != nil {
		n.log.Warn("cannot store usage", "function", u.Function, "err", err)
	}
}

// Close drains the node: it stops taking requests, lets in-flight
// invocations finish within the grace period, stops every instance and
// closes the store.
func (n *Node) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), n.cfg.Grace)
	defer cancel()
	var errs []error
	// New requests get refused at once; in-flight ones keep their connections.
	go n.http.Shutdown(ctx)
	// Pollers stop taking events and finish the running ones before the
	// worker goes; unfinished events stay in the stream.
	n.triggers.Close()
	if err := n.queue.Close(ctx); err != nil {
		errs = append(errs, err)
	}
	if err := n.worker.Close(ctx); err != nil {
		errs = append(errs, err)
	}
	if err := n.http.Shutdown(ctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		errs = append(errs, err)
	}
	if err := n.store.Flush(ctx); err != nil {
		errs = append(errs, fmt.Errorf("cannot flush logs and usage: %w", err))
	}
	n.closeAll()
	return errors.Join(errs...)
}

// closeAll releases what Start acquired, in reverse order.
func (n *Node) closeAll() {
	if n.triggers != nil {
		n.triggers.Close()
	}
	if n.queue != nil {
		n.queue.Close(context.Background())
	}
	if n.ln != nil && n.http == nil {
		n.ln.Close()
	}
	if n.worker != nil {
		// After a failed Start: stop its pools and instances. After Close
		// it is already closed and this returns at once.
		n.worker.Close(context.Background())
	}
	if n.store != nil {
		n.store.Close()
	}
	if n.nats != nil {
		n.nats.Close()
	}
	if n.driver != nil {
		n.driver.Close()
	}
	if n.lock != nil {
		n.lock.Close() // releases the lock
		n.lock = nil
	}
}

// loadToken returns the configured token, or the one stored in the data
// directory, creating it on first start.
func loadToken(dataDir, token string) (string, string, error) {
	if token != "" {
		return token, "admin token: from ALOFT_TOKEN", nil
	}
	path := filepath.Join(dataDir, "token")
	if b, err := os.ReadFile(path); err == nil {
		if t := strings.TrimSpace(string(b)); t != "" {
			return t, "admin token: " + path, nil
		}
	}
	var b [24]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", "", err
	}
	t := hex.EncodeToString(b[:])
	if err := os.WriteFile(path, []byte(t+"\n"), 0o600); err != nil {
		return "", "", fmt.Errorf("cannot write the admin token: %w", err)
	}
	return t, "admin token created: " + path + " (the CLI reads it from there, or set ALOFT_TOKEN)", nil
}

// startAsync opens the async queue and the triggers, and keeps each
// function's pollers and triggers in step with its config.
func (n *Node) startAsync(ctx context.Context) error {
	n.queue = &queue.Queue{
		JS: n.store.JetStream(), Conn: n.nats.Conn, Functions: n.store, Invoker: n.worker, Sink: n,
		Logger: n.log.With("component", "queue"), MaxPayload: n.cfg.AsyncMaxPayload,
		Concurrency: n.cfg.AsyncConcurrency, RetryBackoff: n.cfg.AsyncRetryBackoff,
		ThrottleDelay: n.cfg.AsyncThrottleWait,
	}
	if err := n.queue.Open(ctx); err != nil {
		return err
	}
	n.triggers = &triggers.Manager{
		Conn: n.nats.Conn, JS: n.store.JetStream(), Publisher: n.queue,
		Logger: n.log.With("component", "triggers"), Minute: n.cfg.ScheduleMinute,
	}
	if err := n.triggers.Open(ctx); err != nil {
		return err
	}
	sync := func(name string, fn *model.Function) {
		if err := n.queue.Sync(context.Background(), name, fn); err != nil {
			n.log.Warn("cannot poll the function's events", "function", name, "err", err)
		}
		n.triggers.Sync(name, fn)
	}
	n.store.OnChange(sync)
	for _, fn := range n.store.Functions() {
		sync(fn.Name, fn)
	}
	return nil
}

// NATS is the connection to the node's embedded NATS server.
func (n *Node) NATS() *nats.Conn { return n.nats.Conn }

// keepAlivePolicy returns the configured keep-alive policy.
func keepAlivePolicy(cfg Config) (scheduler.KeepAlivePolicy, error) {
	switch cfg.KeepAlivePolicy {
	case "", "fixed":
		return scheduler.FixedKeepAlive{KeepAlive: cfg.KeepAlive}, nil
	case "adaptive":
		return scheduler.HybridHistogram{Fallback: scheduler.Windows{KeepAlive: cfg.KeepAlive}}, nil
	default:
		return nil, fmt.Errorf("keep-alive policy %q is not one of fixed, adaptive", cfg.KeepAlivePolicy)
	}
}

// defaultMemoryMB is 80% of the machine's memory, or 4 GB when it cannot
// be read.
func defaultMemoryMB() int {
	b, err := os.ReadFile("/proc/meminfo")
	if err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if f := strings.Fields(line); len(f) >= 2 && f[0] == "MemTotal:" {
				if kb, err := strconv.Atoi(f[1]); err == nil {
					return kb / 1024 * 8 / 10
				}
			}
		}
	}
	return 4096
}
