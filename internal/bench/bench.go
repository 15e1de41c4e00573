// Package bench is `aloft bench`: it starts a fresh in-process node (and, in
// the same run, one with the isolating sandbox driver when the host allows),
// deploys an echo function per runtime, and measures over loopback HTTP what
// users feel: warm invoke latency and throughput against a floor (a plain
// net/http server echoing the same payload, measured in the same run), cold
// starts, the time to scale a function from 0 to N instances, and the
// resident memory of an idle instance.
package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"time"

	"github.com/aloft-dev/aloft/internal/cli"
	"github.com/aloft-dev/aloft/internal/model"
	"github.com/aloft-dev/aloft/internal/node"
	"github.com/aloft-dev/aloft/internal/testfn"
)

// Payload is the event every measured request carries, to the floor and to
// the functions alike.
const Payload = `{"message":"hello from aloft bench","n":42,"items":[1,2,3],"nested":{"ok":true}}`

// Options configure a run. The zero value of each field means its default.
type Options struct {
	Duration    time.Duration // measuring time per latency or throughput figure (3s)
	Runtimes    []string      // "go", "node", "python", "raw" (all four; see buildBundles)
	Isolation   string        // "both", "none" or "auto" (both)
	Cold        int           // cold-start samples per runtime (20)
	Concurrency []int         // throughput levels (1, 16, 64)
	Scale       int           // instances of the 0→N scale test (50)
	ScaleSleep  time.Duration // how long each scale-test invocation runs (300ms)
	Idle        int           // idle instances per runtime for the memory figure (10)
	// ThroughputAll measures throughput for every runtime, not only Go.
	ThroughputAll bool
	// ExternalClient also measures the floor's and each function's warm
	// latency from a client in a process of its own (ClientCommand), as an
	// outside user sees them; the in-process client shares the node's
	// runtime and skips the hand-off between processes.
	ExternalClient []string // the command that runs "bench client"; nil: skip
	// Progress receives one line per step; nil means none.
	Progress io.Writer
	// Logger receives the nodes' logs; nil discards them.
	Logger *slog.Logger
}

func (o Options) withDefaults() Options {
	if o.Duration <= 0 {
		o.Duration = 3 * time.Second
	}
	if len(o.Runtimes) == 0 {
		o.Runtimes = []string{"go", "node", "python", "raw"}
	}
	if o.Isolation == "" {
		o.Isolation = "both"
	}
	if o.Cold <= 0 {
		o.Cold = 20
	}
	if len(o.Concurrency) == 0 {
		o.Concurrency = []int{1, 16, 64}
	}
	if o.Scale <= 0 {
		o.Scale = 50
	}
	if o.ScaleSleep <= 0 {
		o.ScaleSleep = 300 * time.Millisecond
	}
	if o.Idle <= 0 {
		o.Idle = 10
	}
	if o.Progress == nil {
		o.Progress = io.Discard
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}

// Result is everything one run measured. Times are in milliseconds, memory
// in MB (10^6 bytes).
type Result struct {
	Machine  Machine  `json:"machine"`
	Settings Settings `json:"settings"`
	Floor    Target   `json:"floor"`
	Modes    []Mode   `json:"modes"`
	// IsolationCost is the warm-latency cost of the isolating sandbox per
	// runtime, measured interleaved (see isolationCost).
	IsolationCost []IsolationCost `json:"isolation_cost,omitempty"`
	Checks        []Check         `json:"checks"`
	Started       time.Time       `json:"started"`
	Took          float64         `json:"took_s"`
}

// Machine describes where the run happened.
type Machine struct {
	CPUs      int    `json:"cpus"`
	OS        string `json:"os"`
	Arch      string `json:"arch"`
	GoVersion string `json:"go_version"`
	Kernel    string `json:"kernel,omitempty"`
	CPUModel  string `json:"cpu_model,omitempty"`
}

// Settings echo the options the run used.
type Settings struct {
	DurationMs   float64  `json:"duration_ms"`
	Runtimes     []string `json:"runtimes"`
	Isolation    string   `json:"isolation"`
	Cold         int      `json:"cold_samples"`
	Concurrency  []int    `json:"concurrency"`
	Scale        int      `json:"scale"`
	ScaleSleepMs float64  `json:"scale_sleep_ms"`
	Idle         int      `json:"idle_instances"`
	PayloadBytes int      `json:"payload_bytes"`
}

// Target is the warm figures of one HTTP target (the floor, or a function).
type Target struct {
	Warm Latency `json:"warm"`
	// WarmExternal is Warm measured from a client in its own process.
	WarmExternal *Latency     `json:"warm_external,omitempty"`
	Throughput   []Throughput `json:"throughput,omitempty"`
}

// Latency is a latency distribution.
type Latency struct {
	N    int     `json:"n"`
	P50  float64 `json:"p50_ms"`
	P99  float64 `json:"p99_ms"`
	Mean float64 `json:"mean_ms"`
}

// Throughput is the completed requests per second at one concurrency, and
// the CPU time each cost: in the bench's own process (the node, or the
// floor's server, with the client) and in the function instances' processes.
type Throughput struct {
	Concurrency    int     `json:"concurrency"`
	N              int     `json:"n"`
	RPS            float64 `json:"rps"`
	CPUSelfUs      float64 `json:"cpu_self_us_per_request"`
	CPUInstancesUs float64 `json:"cpu_instances_us_per_request"`
}

// Mode is the figures of one node: one isolation setting.
type Mode struct {
	Isolation string    `json:"isolation"` // the node's --isolation
	Level     string    `json:"level"`     // "isolated" or "none", what the node ran
	Driver    string    `json:"driver"`
	Skipped   string    `json:"skipped,omitempty"` // why nothing was measured
	Runtimes  []Runtime `json:"runtimes,omitempty"`
	Scale     *Scale    `json:"scale,omitempty"`
}

// Runtime is the figures of one runtime's function on one node.
type Runtime struct {
	Runtime string `json:"runtime"`
	Target
	// Inside is the REPORT Duration of warm invokes: from the worker handing
	// the event to the Runtime API to the runtime's answer. Warm latency
	// minus Inside is the gateway's and worker's share and the client hop.
	Inside Latency `json:"inside"`
	// VsFloorExternal is this runtime's warm p50 over the floor's, both from
	// a client in its own process, in alternating rounds (Go only).
	VsFloorExternal *Interleaved `json:"vs_floor_external,omitempty"`
	Cold            Cold         `json:"cold"`
	// ColdPooled is the cold start with pre-started interpreters; nil while
	// the node has no pools.
	ColdPooled *Cold   `json:"cold_pooled,omitempty"`
	Memory     *Memory `json:"memory,omitempty"`
}

// Cold is the cold-start figures: Total is the first invoke after a deploy,
// request to response, at the client; Init is the platform's Init Duration
// (instance start to the runtime's first /next) from the REPORT line.
type Cold struct {
	Total Latency `json:"total"`
	Init  Latency `json:"init"`
	// Where the time went (from the INIT_START and REPORT lines): Sandbox,
	// getting the process running (the driver's Start, or specialising a
	// pooled instance); Runtime, Init minus Sandbox, the runtime's start up
	// to its first /next (interpreter, bootstrap, handler import); Invoke,
	// the first invocation's Duration. Total minus these is the HTTP hops
	// and the platform's own work.
	Sandbox Latency `json:"sandbox"`
	Runtime Latency `json:"runtime"`
	Invoke  Latency `json:"invoke"`
}

// Scale is the 0→N test: N concurrent invocations of a function with no
// instance, each running SleepMs; Ready is the time until the last response
// arrived minus SleepMs, i.e. until the N-th instance had started and taken
// its event (the N responses then travel back in parallel).
type Scale struct {
	N         int     `json:"n"`
	Instances int     `json:"instances"` // distinct instances that answered
	SleepMs   float64 `json:"sleep_ms"`
	Ready     float64 `json:"ready_ms"`
	FirstMs   float64 `json:"first_ms"` // first response minus SleepMs
}

// Memory is the resident memory of K idle warm instances, per instance:
// RSS and PSS summed over the instances' processes, and the growth of the
// node's own process (the platform side: Runtime API server, buffers,
// goroutines) when they were created.
type Memory struct {
	Instances int     `json:"instances"`
	RSS       float64 `json:"rss_mb"`
	PSS       float64 `json:"pss_mb"`
	Platform  float64 `json:"platform_mb"`
}

// Total is RSS plus the platform side, the figure the target is set on.
func (m Memory) Total() float64 { return m.RSS + max(m.Platform, 0) }

// Run runs the benchmark.
func Run(ctx context.Context, opts Options) (*Result, error) {
	opts = opts.withDefaults()
	var modes []string
	switch opts.Isolation {
	case "both":
		modes = []string{"none", "auto"}
	case "none", "auto", "required":
		modes = []string{opts.Isolation}
	default:
		return nil, fmt.Errorf("isolation %q is not one of both, none, auto, required", opts.Isolation)
	}
	for _, rt := range opts.Runtimes {
		if _, ok := runtimeOf[rt]; !ok {
			return nil, fmt.Errorf("runtime %q is not one of go, node, python, raw", rt)
		}
	}
	start := time.Now()
	res := &Result{
		Machine: machine(), Started: start.UTC(),
		Settings: Settings{
			DurationMs: ms(opts.Duration), Runtimes: opts.Runtimes, Isolation: opts.Isolation,
			Cold: opts.Cold, Concurrency: opts.Concurrency, Scale: opts.Scale,
			ScaleSleepMs: ms(opts.ScaleSleep), Idle: opts.Idle, PayloadBytes: len(Payload),
		},
	}
	b := &bencher{opts: opts, client: newClient()}
	defer b.client.CloseIdleConnections()

	fmt.Fprintln(opts.Progress, "building the bench functions")
	bundles, err := buildBundles(opts.Runtimes)
	if err != nil {
		return nil, err
	}
	b.bundles = bundles

	floorURL, stopFloor, err := startFloor()
	if err != nil {
		return nil, err
	}
	defer stopFloor()
	floor := &target{url: floorURL}
	b.floor = floor
	fmt.Fprintln(opts.Progress, "floor: warm latency")
	if res.Floor.Warm, err = b.sequential(ctx, floor); err != nil {
		return nil, fmt.Errorf("floor: %w", err)
	}
	if res.Floor.WarmExternal, err = b.external(ctx, floor, opts.Duration); err != nil {
		return nil, fmt.Errorf("floor: %w", err)
	}
	for _, c := range opts.Concurrency {
		fmt.Fprintf(opts.Progress, "floor: throughput at concurrency %d\n", c)
		tp, err := b.throughput(ctx, floor, c)
		if err != nil {
			return nil, fmt.Errorf("floor: %w", err)
		}
		res.Floor.Throughput = append(res.Floor.Throughput, tp)
	}

	for _, iso := range modes {
		m, err := b.mode(ctx, iso)
		if err != nil {
			return nil, fmt.Errorf("isolation %s: %w", iso, err)
		}
		res.Modes = append(res.Modes, m)
	}
	if len(res.Modes) == 2 && res.Modes[1].Skipped == "" {
		fmt.Fprintln(opts.Progress, "isolation cost: interleaved warm latency")
		if res.IsolationCost, err = b.isolationCost(ctx); err != nil {
			return nil, fmt.Errorf("isolation cost: %w", err)
		}
	}
	res.Checks = Evaluate(res)
	res.Took = time.Since(start).Seconds()
	return res, nil
}

// bencher holds what the measurements of a run share.
type bencher struct {
	opts    Options
	client  *http.Client
	bundles map[string][]byte // runtime → zip
	floor   *target
}

var runtimeOf = map[string]model.Runtime{
	"go": model.RuntimeProvided, "node": model.RuntimeNode, "python": model.RuntimePython,
	"raw": model.RuntimeProvided,
}

// mode starts a node with the isolation setting iso and measures every
// runtime on it.
func (b *bencher) mode(ctx context.Context, iso string) (Mode, error) {
	dir, err := os.MkdirTemp("", "aloft-bench-")
	if err != nil {
		return Mode{}, err
	}
	defer os.RemoveAll(dir)
	// The main node has no interpreter pools, so its cold starts are the
	// unpooled ones; pooledCold measures the pooled ones on a second node.
	n, err := node.Start(ctx, node.Config{
		DataDir: dir, Listen: "127.0.0.1:0", Isolation: iso, Grace: 10 * time.Second,
		Version: "bench", Logger: b.opts.Logger, PoolSize: -1,
	})
	if err != nil {
		return Mode{}, err
	}
	defer n.Close()
	m := Mode{Isolation: iso, Level: n.Isolation().Level, Driver: driverName(n)}
	if m.Level != "isolated" && iso != "none" && b.opts.Isolation == "both" {
		m.Skipped = "this host or build cannot isolate instances (the node fell back to plain processes)"
		if miss := n.Isolation().Missing; len(miss) > 0 {
			m.Skipped += "; missing: " + fmt.Sprint(miss)
		}
		fmt.Fprintln(b.opts.Progress, "isolated: skipped:", m.Skipped)
		return m, nil
	}
	nb := &nodeBench{bencher: b, node: n, label: m.Level,
		client: &cli.Client{BaseURL: n.URL(), Token: n.Token(), HTTP: b.client}}
	for _, rt := range b.opts.Runtimes {
		r, err := nb.runtime(ctx, rt)
		if err != nil {
			return m, fmt.Errorf("%s: %w", rt, err)
		}
		m.Runtimes = append(m.Runtimes, r)
	}
	if err := b.pooledCold(ctx, iso, &m); err != nil {
		return m, err
	}
	if slices.Contains(b.opts.Runtimes, "go") {
		nb.progress("go: 0→%d scale", b.opts.Scale)
		s, err := nb.scale(ctx, "go")
		if err != nil {
			return m, fmt.Errorf("go: scale: %w", err)
		}
		m.Scale = &s
	}
	return m, nil
}

// pooledCold measures the cold starts of the interpreted runtimes on a
// node with pools of pre-started interpreters (the default size), filling
// ColdPooled of m's node and python figures.
func (b *bencher) pooledCold(ctx context.Context, iso string, m *Mode) error {
	var pooled []int
	for i, r := range m.Runtimes {
		if r.Runtime == "node" || r.Runtime == "python" {
			pooled = append(pooled, i)
		}
	}
	if len(pooled) == 0 {
		return nil
	}
	dir, err := os.MkdirTemp("", "aloft-bench-pooled-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	n, err := node.Start(ctx, node.Config{
		DataDir: dir, Listen: "127.0.0.1:0", Isolation: iso, Grace: 10 * time.Second,
		Version: "bench", Logger: b.opts.Logger,
	})
	if err != nil {
		return err
	}
	defer n.Close()
	nb := &nodeBench{bencher: b, node: n, label: m.Level,
		client: &cli.Client{BaseURL: n.URL(), Token: n.Token(), HTTP: b.client}}
	for _, i := range pooled {
		rt := m.Runtimes[i].Runtime
		nb.progress("%s: %d pooled cold starts", rt, b.opts.Cold)
		c, err := nb.cold(ctx, "bench-pooled-"+rt, rt)
		if err != nil {
			return fmt.Errorf("%s: pooled cold start: %w", rt, err)
		}
		m.Runtimes[i].ColdPooled = &c
	}
	return nil
}

// driverName reads the node's sandbox driver from GET /v1/status.
func driverName(n *node.Node) string {
	c := &cli.Client{BaseURL: n.URL(), Token: n.Token()}
	st, err := c.Status(context.Background())
	if err != nil {
		return ""
	}
	return st.Driver
}

// nodeBench measures functions on one node.
type nodeBench struct {
	*bencher
	node   *node.Node
	label  string
	client *cli.Client
	revs   int // deploys so far, to make every deploy a new revision
}

func (nb *nodeBench) progress(format string, args ...any) {
	fmt.Fprintf(nb.opts.Progress, "%s: "+format+"\n", append([]any{nb.label}, args...)...)
}

// deploy deploys (or redeploys, as a new revision that must cold start)
// the bench function of runtime rt under name.
func (nb *nodeBench) deploy(ctx context.Context, name, rt string) error {
	nb.revs++
	cfg := model.Config{
		Name: name, Runtime: runtimeOf[rt], Memory: 128, Timeout: 30,
		Env: map[string]string{"BENCH_REVISION": fmt.Sprint(nb.revs)},
	}
	zip := nb.bundles[rt]
	_, err := nb.client.Deploy(ctx, name, cfg, bytes.NewReader(zip), int64(len(zip)), nil)
	return err
}

func (nb *nodeBench) invokeTarget(name string) *target {
	return &target{url: nb.node.URL() + "/2015-03-31/functions/" + name + "/invocations", token: nb.node.Token()}
}

// runtime measures warm latency, throughput, cold starts and idle memory of
// rt's bench function.
func (nb *nodeBench) runtime(ctx context.Context, rt string) (Runtime, error) {
	r := Runtime{Runtime: rt}
	name := "bench-" + rt
	if err := nb.deploy(ctx, name, rt); err != nil {
		return r, err
	}
	t := nb.invokeTarget(name)
	var err error
	nb.progress("%s: warm latency", rt)
	if r.Warm, err = nb.sequential(ctx, t); err != nil {
		return r, err
	}
	if r.WarmExternal, err = nb.external(ctx, t, nb.opts.Duration); err != nil {
		return r, err
	}
	if r.WarmExternal != nil {
		nb.progress("%s: warm latency against the floor, client in its own process, interleaved", rt)
		if r.VsFloorExternal, err = nb.externalVsFloor(ctx, t); err != nil {
			return r, err
		}
	}
	if r.Inside, err = nb.inside(ctx, t); err != nil {
		return r, err
	}
	if rt == "go" || nb.opts.ThroughputAll {
		for _, c := range nb.opts.Concurrency {
			nb.progress("%s: throughput at concurrency %d", rt, c)
			tp, err := nb.throughput(ctx, t, c)
			if err != nil {
				return r, err
			}
			r.Throughput = append(r.Throughput, tp)
		}
	}
	nb.progress("%s: %d cold starts", rt, nb.opts.Cold)
	if r.Cold, err = nb.cold(ctx, "bench-cold-"+rt, rt); err != nil {
		return r, err
	}
	nb.progress("%s: memory of %d idle instances", rt, nb.opts.Idle)
	mem, err := nb.memory(ctx, "bench-idle-"+rt, rt)
	if err != nil {
		return r, err
	}
	r.Memory = &mem
	return r, nil
}

// buildBundles builds the zip bundle of each runtime's bench function. The
// Go ones are compiled from this module's source, so the bench runs from a
// source tree with the Go toolchain: "go" is internal/testfn/benchecho
// (aws-lambda-go), "raw" internal/testfn/rawecho (the same function on a
// minimal hand-written Runtime API client, the platform's cost alone).
func buildBundles(rts []string) (map[string][]byte, error) {
	out := make(map[string][]byte, len(rts))
	for _, rt := range rts {
		dir, err := os.MkdirTemp("", "aloft-bench-fn-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(dir)
		switch rt {
		case "go", "raw":
			if _, err := os.Stat(filepath.Join(testfn.ModuleRoot(), "go.mod")); err != nil {
				return nil, errors.New("cannot find Aloft's source tree to build the Go bench functions; run the bench from it: go run ./cmd/aloft bench")
			}
			err = testfn.BuildGo(map[string]string{"go": "./internal/testfn/benchecho", "raw": "./internal/testfn/rawecho"}[rt], dir)
		case "node":
			err = testfn.Write(dir, map[string]string{"index.js": testfn.BenchNode})
		case "python":
			err = testfn.Write(dir, map[string]string{"main.py": testfn.BenchPython})
		}
		if err != nil {
			return nil, err
		}
		var zip bytes.Buffer
		if err := cli.ZipDir(&zip, dir); err != nil {
			return nil, fmt.Errorf("cannot bundle the %s bench function: %w", rt, err)
		}
		out[rt] = zip.Bytes()
	}
	return out, nil
}

// startFloor starts the floor: a plain net/http server on loopback that
// echoes the request body.
func startFloor() (string, func(), error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, fmt.Errorf("cannot start the floor server: %w", err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write(body)
	}), ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	return "http://" + ln.Addr().String() + "/echo", func() { srv.Close() }, nil
}

// newClient is the one HTTP client of a run: keep-alive, enough idle
// connections for the highest concurrency and the scale test.
func newClient() *http.Client {
	return &http.Client{Transport: &http.Transport{
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        1024,
		MaxIdleConnsPerHost: 512,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
	}, Timeout: 60 * time.Second}
}

func machine() Machine {
	m := Machine{CPUs: runtime.NumCPU(), OS: runtime.GOOS, Arch: runtime.GOARCH, GoVersion: runtime.Version()}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = string(bytes.TrimSpace(b))
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range bytes.Lines(b) {
			if k, v, ok := bytes.Cut(line, []byte(":")); ok && string(bytes.TrimSpace(k)) == "model name" {
				m.CPUModel = string(bytes.TrimSpace(v))
				break
			}
		}
	}
	return m
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// IsolationCost compares warm latency with and without the isolating
// sandbox for one runtime.
type IsolationCost struct {
	Runtime string `json:"runtime"`
	// Ratios are isolated p50 / unsandboxed p50 of each round; Median is
	// their median.
	Ratios []float64 `json:"ratios"`
	Median float64   `json:"median"`
}

// isolationRounds is how many alternating rounds isolationCost measures.
const isolationRounds = 7

// Interleaved is a ratio of two warm p50s measured in alternating rounds,
// so both see the same machine at nearly the same time.
type Interleaved struct {
	Ratios []float64 `json:"ratios"` // of each round
	Median float64   `json:"median"`
}

// interleave runs rounds of measure(0) and measure(1), alternating which
// goes first, and returns the ratios measure(1)/measure(0).
func interleave(rounds int, measure func(i int) (float64, error)) (Interleaved, error) {
	var out Interleaved
	for r := range rounds {
		var v [2]float64
		for k := range 2 {
			i := (r + k) % 2
			var err error
			if v[i], err = measure(i); err != nil {
				return out, err
			}
		}
		out.Ratios = append(out.Ratios, v[1]/v[0])
	}
	sorted := slices.Clone(out.Ratios)
	slices.Sort(sorted)
	out.Median = sorted[len(sorted)/2]
	return out, nil
}

// isolationCost runs an unsandboxed and an isolated node side by side and
// measures each runtime's warm latency on them in alternating short rounds,
// so both see the same machine at nearly the same time: a single
// sequential run per mode moved by ±15% on a busy 2-vCPU machine.
func (b *bencher) isolationCost(ctx context.Context) ([]IsolationCost, error) {
	var nbs [2]*nodeBench
	for i, iso := range []string{"none", "auto"} {
		dir, err := os.MkdirTemp("", "aloft-bench-iso-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(dir)
		n, err := node.Start(ctx, node.Config{
			DataDir: dir, Listen: "127.0.0.1:0", Isolation: iso, Grace: 10 * time.Second,
			Version: "bench", Logger: b.opts.Logger, PoolSize: -1,
		})
		if err != nil {
			return nil, err
		}
		defer n.Close()
		nbs[i] = &nodeBench{bencher: b, node: n, label: iso,
			client: &cli.Client{BaseURL: n.URL(), Token: n.Token(), HTTP: b.client}}
	}
	round := max(b.opts.Duration/5, 300*time.Millisecond)
	var out []IsolationCost
	for _, rt := range b.opts.Runtimes {
		name := "bench-iso-" + rt
		var ts [2]*target
		for i, nb := range nbs {
			if err := nb.deploy(ctx, name, rt); err != nil {
				return nil, err
			}
			ts[i] = nb.invokeTarget(name)
			if _, err := b.sequentialFor(ctx, ts[i], round); err != nil { // warm both up
				return nil, err
			}
		}
		in, err := interleave(isolationRounds, func(i int) (float64, error) {
			l, err := b.sequentialFor(ctx, ts[i], round)
			return l.P50, err
		})
		if err != nil {
			return nil, err
		}
		out = append(out, IsolationCost{Runtime: rt, Ratios: in.Ratios, Median: in.Median})
	}
	return out, nil
}

// externalRounds is how many alternating rounds externalVsFloor measures.
const externalRounds = 7

// externalVsFloor compares t's warm p50 with the floor's, each measured by
// a client in its own process, in alternating rounds: the floor's figure
// alone moved by ±25% from one run to the next on a 2-vCPU machine.
func (b *bencher) externalVsFloor(ctx context.Context, t *target) (*Interleaved, error) {
	round := max(b.opts.Duration/3, 500*time.Millisecond)
	in, err := interleave(externalRounds, func(i int) (float64, error) {
		l, err := b.external(ctx, []*target{b.floor, t}[i], round)
		if err != nil {
			return 0, err
		}
		return l.P50, nil
	})
	return &in, err
}

// external measures t's sequential warm latency for d from a client process
// of its own, or returns nil when Options.ExternalClient is not set.
func (b *bencher) external(ctx context.Context, t *target, d time.Duration) (*Latency, error) {
	if len(b.opts.ExternalClient) == 0 {
		return nil, nil
	}
	args := append(slices.Clone(b.opts.ExternalClient[1:]), "--url", t.url, "--duration", d.String())
	cmd := exec.CommandContext(ctx, b.opts.ExternalClient[0], args...)
	cmd.Env = append(os.Environ(), "ALOFT_BENCH_TOKEN="+t.token)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("external client: %v: %s", err, stderr.String())
	}
	var l Latency
	if err := json.Unmarshal(out, &l); err != nil {
		return nil, fmt.Errorf("external client answered %q: %w", out, err)
	}
	return &l, nil
}

// ClientMain is the external client: sequential warm latency of url for d,
// after a warm-up, printed as JSON Latency. The token comes from
// ALOFT_BENCH_TOKEN.
func ClientMain(ctx context.Context, w io.Writer, url string, d time.Duration) error {
	b := &bencher{opts: Options{Duration: d}.withDefaults(), client: newClient()}
	defer b.client.CloseIdleConnections()
	l, err := b.sequential(ctx, &target{url: url, token: os.Getenv("ALOFT_BENCH_TOKEN")})
	if err != nil {
		return err
	}
	return json.NewEncoder(w).Encode(l)
}
