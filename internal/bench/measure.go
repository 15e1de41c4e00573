package bench

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"reflect"
	"regexp"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// target is an HTTP endpoint that answers a POST of the payload: the floor,
// or a function's Invoke API.
type target struct {
	url   string
	token string // bearer token; empty for the floor
}

// call sends one POST of payload and returns the response body and the
// X-Amz-Log-Result header. Any answer but a 200 without a function error is
// an error.
func (b *bencher) call(ctx context.Context, t *target, payload []byte, tail bool) ([]byte, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, t.url, bytes.NewReader(payload))
	if err != nil {
		return nil, "", err
	}
	req.Header.Set("Content-Type", "application/json")
	if t.token != "" {
		req.Header.Set("Authorization", "Bearer "+t.token)
	}
	if tail {
		req.Header.Set("X-Amz-Log-Type", "Tail")
	}
	resp, err := b.client.Do(req)
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, "", err
	}
	if resp.StatusCode != http.StatusOK || resp.Header.Get("X-Amz-Function-Error") != "" {
		return nil, "", fmt.Errorf("POST %s: status %d, function error %q: %s",
			t.url, resp.StatusCode, resp.Header.Get("X-Amz-Function-Error"), body)
	}
	return body, resp.Header.Get("X-Amz-Log-Result"), nil
}

// checkEcho fails unless t echoes the payload.
func (b *bencher) checkEcho(ctx context.Context, t *target) error {
	body, _, err := b.call(ctx, t, []byte(Payload), false)
	if err != nil {
		return err
	}
	var got, want any
	json.Unmarshal([]byte(Payload), &want)
	if err := json.Unmarshal(body, &got); err != nil || !reflect.DeepEqual(got, want) {
		return fmt.Errorf("POST %s answered %q, want the payload echoed", t.url, body)
	}
	return nil
}

// warmUpTime is how long a figure's warm-up lasts.
func (b *bencher) warmUpTime() time.Duration { return min(b.opts.Duration/5, time.Second) }

// sequential measures the latency of one request after another, after a
// warm-up, for the run's duration.
func (b *bencher) sequential(ctx context.Context, t *target) (Latency, error) {
	return b.sequentialFor(ctx, t, b.opts.Duration)
}

// sequentialFor is sequential measuring for d.
func (b *bencher) sequentialFor(ctx context.Context, t *target, d time.Duration) (Latency, error) {
	if err := b.checkEcho(ctx, t); err != nil {
		return Latency{}, err
	}
	payload := []byte(Payload)
	for end := time.Now().Add(b.warmUpTime()); time.Now().Before(end); {
		if _, _, err := b.call(ctx, t, payload, false); err != nil {
			return Latency{}, err
		}
	}
	var lat []time.Duration
	for end := time.Now().Add(d); time.Now().Before(end); {
		t0 := time.Now()
		if _, _, err := b.call(ctx, t, payload, false); err != nil {
			return Latency{}, err
		}
		lat = append(lat, time.Since(t0))
	}
	return summarize(lat), nil
}

// throughput runs c clients, each sending one request after another, for
// the run's duration after a warm-up at the same concurrency (which also
// starts the instances the concurrency needs), counts completions, and
// divides the CPU time spent meanwhile among them.
func (b *bencher) throughput(ctx context.Context, t *target, c int) (Throughput, error) {
	if _, err := b.load(ctx, t, c, b.warmUpTime()); err != nil {
		return Throughput{}, err
	}
	before, err := cpuNow()
	if err != nil {
		return Throughput{}, err
	}
	n, err := b.load(ctx, t, c, b.opts.Duration)
	if err != nil {
		return Throughput{}, err
	}
	after, err := cpuNow()
	if err != nil {
		return Throughput{}, err
	}
	used := after.sub(before)
	tp := Throughput{Concurrency: c, N: int(n), RPS: float64(n) / b.opts.Duration.Seconds()}
	if n > 0 {
		tp.CPUSelfUs = float64(used.self) / float64(time.Microsecond) / float64(n)
		tp.CPUInstancesUs = float64(used.instances) / float64(time.Microsecond) / float64(n)
	}
	return tp, nil
}

// load runs c closed-loop clients for d and returns the completed requests.
func (b *bencher) load(ctx context.Context, t *target, c int, d time.Duration) (int64, error) {
	var (
		done     atomic.Int64
		wg       sync.WaitGroup
		errOnce  sync.Once
		firstErr error
	)
	payload := []byte(Payload)
	end := time.Now().Add(d)
	for range c {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(end) {
				if _, _, err := b.call(ctx, t, payload, false); err != nil {
					errOnce.Do(func() { firstErr = err })
					return
				}
				done.Add(1)
			}
		}()
	}
	wg.Wait()
	return done.Load(), firstErr
}

var durationRE = regexp.MustCompile(`REPORT RequestId: \S+\tDuration: ([0-9.]+) ms`)

// inside reads the platform's REPORT Duration of sequential warm invokes
// (X-Amz-Log-Type: Tail), for a fifth of the run's duration.
func (nb *nodeBench) inside(ctx context.Context, t *target) (Latency, error) {
	payload := []byte(Payload)
	var lat []time.Duration
	for end := time.Now().Add(nb.opts.Duration / 5); time.Now().Before(end) || len(lat) == 0; {
		_, logTail, err := nb.call(ctx, t, payload, true)
		if err != nil {
			return Latency{}, err
		}
		logText, _ := base64.StdEncoding.DecodeString(logTail)
		m := durationRE.FindSubmatch(logText)
		if m == nil {
			return Latency{}, fmt.Errorf("no REPORT Duration in %q", logText)
		}
		d, _ := strconv.ParseFloat(string(m[1]), 64)
		lat = append(lat, time.Duration(d*float64(time.Millisecond)))
	}
	return summarize(lat), nil
}

var (
	initRE    = regexp.MustCompile(`REPORT RequestId: .*\tInit Duration: ([0-9.]+) ms`)
	sandboxRE = regexp.MustCompile(`INIT_START .*\tSandbox Duration: ([0-9.]+) ms`)
)

// msOf returns the milliseconds re's first group matched in text, or 0.
func msOf(re *regexp.Regexp, text []byte) time.Duration {
	m := re.FindSubmatch(text)
	if m == nil {
		return 0
	}
	v, _ := strconv.ParseFloat(string(m[1]), 64)
	return time.Duration(v * float64(time.Millisecond))
}

// cold measures cold starts: each sample deploys a new revision of the
// function (the code bundle is the same, so its unpacked copy is reused),
// waits for the previous revision's instance to be gone, then times the
// first invoke from request to response. The REPORT line (X-Amz-Log-Type:
// Tail) gives the Init Duration and proves the invoke was cold.
func (nb *nodeBench) cold(ctx context.Context, name, rt string) (Cold, error) {
	t := nb.invokeTarget(name)
	payload := []byte(Payload)
	var total, init, sandbox, runtime, invoke []time.Duration
	for range nb.opts.Cold {
		if err := nb.deploy(ctx, name, rt); err != nil {
			return Cold{}, err
		}
		// Let the retired instance stop, so its teardown does not compete
		// with the cold start.
		time.Sleep(100 * time.Millisecond)
		t0 := time.Now()
		_, logTail, err := nb.call(ctx, t, payload, true)
		took := time.Since(t0)
		if err != nil {
			return Cold{}, err
		}
		logText, _ := base64.StdEncoding.DecodeString(logTail)
		m := initRE.FindSubmatch(logText)
		if m == nil {
			return Cold{}, fmt.Errorf("the first invoke after a deploy was not a cold start (no Init Duration in %q)", logText)
		}
		initMs, _ := strconv.ParseFloat(string(m[1]), 64)
		initDur := time.Duration(initMs * float64(time.Millisecond))
		sb := msOf(sandboxRE, logText)
		total = append(total, took)
		init = append(init, initDur)
		sandbox = append(sandbox, sb)
		runtime = append(runtime, initDur-sb)
		invoke = append(invoke, msOf(durationRE, logText))
	}
	return Cold{Total: summarize(total), Init: summarize(init), Sandbox: summarize(sandbox),
		Runtime: summarize(runtime), Invoke: summarize(invoke)}, nil
}

// burst sends n concurrent invocations that each sleep for sleep and name
// their instance; it returns when every response arrived, with the time
// each took from the common start and the distinct instances.
func (nb *nodeBench) burst(ctx context.Context, name string, n int, sleep time.Duration) ([]time.Duration, int, error) {
	t := nb.invokeTarget(name)
	payload := fmt.Appendf(nil, `{"sleep_ms":%d,"instance":true}`, sleep.Milliseconds())
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
		seen = map[string]bool{}
		took = make([]time.Duration, n)
		go_  = make(chan struct{})
	)
	var t0 time.Time
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-go_
			body, _, err := nb.call(ctx, t, payload, false)
			took[i] = time.Since(t0)
			var got struct{ Instance string }
			if err == nil {
				if err = json.Unmarshal(body, &got); err == nil && got.Instance == "" {
					err = fmt.Errorf("answer %q names no instance", body)
				}
			}
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err)
			}
			seen[got.Instance] = true
		}()
	}
	t0 = time.Now()
	close(go_)
	wg.Wait()
	if len(errs) > 0 {
		return nil, 0, fmt.Errorf("%d of %d invocations failed, first: %w", len(errs), n, errs[0])
	}
	return took, len(seen), nil
}

// scale deploys a function with no instance and sends N concurrent
// invocations that each sleep ScaleSleep, so each needs its own instance.
func (nb *nodeBench) scale(ctx context.Context, rt string) (Scale, error) {
	name := "bench-scale-" + rt
	if err := nb.deploy(ctx, name, rt); err != nil {
		return Scale{}, err
	}
	// Open the connections beforehand, with a burst to the function's warm
	// sibling: the scale test measures instances, not TCP handshakes.
	if _, _, err := nb.burst(ctx, "bench-"+rt, nb.opts.Scale, 50*time.Millisecond); err != nil {
		return Scale{}, err
	}
	took, inst, err := nb.burst(ctx, name, nb.opts.Scale, nb.opts.ScaleSleep)
	if err != nil {
		return Scale{}, err
	}
	s := Scale{N: nb.opts.Scale, Instances: inst, SleepMs: ms(nb.opts.ScaleSleep),
		Ready: ms(slices.Max(took) - nb.opts.ScaleSleep), FirstMs: ms(slices.Min(took) - nb.opts.ScaleSleep)}
	if inst != nb.opts.Scale {
		return s, fmt.Errorf("%d concurrent invocations ran on %d instances, want one each", nb.opts.Scale, inst)
	}
	return s, nil
}

// memory starts Idle instances of a new revision of the function, lets them
// go idle, and measures their processes and the growth of this process
// (the node runs in it) per instance.
func (nb *nodeBench) memory(ctx context.Context, name, rt string) (Memory, error) {
	if err := nb.deploy(ctx, name, rt); err != nil {
		return Memory{}, err
	}
	time.Sleep(200 * time.Millisecond)
	before, err := descendants(os.Getpid())
	if err != nil {
		return Memory{}, err
	}
	ranBefore := executables(before)
	selfBefore := settledRSS()
	_, inst, err := nb.burst(ctx, name, nb.opts.Idle, 300*time.Millisecond)
	if err != nil {
		return Memory{}, err
	}
	if inst != nb.opts.Idle {
		return Memory{}, fmt.Errorf("%d concurrent invocations ran on %d instances, want one each", nb.opts.Idle, inst)
	}
	time.Sleep(200 * time.Millisecond) // idle: responses written, buffers released
	selfAfter := settledRSS()
	after, err := descendants(os.Getpid())
	if err != nil {
		return Memory{}, err
	}
	procs := instancesSince(ranBefore, after)
	if len(procs) < nb.opts.Idle {
		return Memory{}, fmt.Errorf("found %d instance processes for %d instances (is /proc/PID/exe readable?)", len(procs), nb.opts.Idle)
	}
	var rss, pss int64
	for pid := range procs {
		r, p, err := procMemory(pid)
		if err != nil {
			continue // gone meanwhile (a retired instance of another revision)
		}
		rss += r
		pss += p
	}
	k := float64(nb.opts.Idle)
	return Memory{Instances: nb.opts.Idle, RSS: mb(rss) / k, PSS: mb(pss) / k,
		Platform: mb(selfAfter-selfBefore) / k}, nil
}

// settledRSS is this process's resident memory after a garbage collection
// that returned freed memory to the OS.
func settledRSS() int64 {
	runtime.GC()
	debug.FreeOSMemory()
	rss, _, _ := procMemory(os.Getpid())
	return rss
}

func mb(b int64) float64 { return float64(b) / 1e6 }

// summarize computes the percentiles of lat (nearest rank).
func summarize(lat []time.Duration) Latency {
	if len(lat) == 0 {
		return Latency{}
	}
	s := slices.Clone(lat)
	slices.Sort(s)
	var sum time.Duration
	for _, d := range s {
		sum += d
	}
	return Latency{N: len(s), P50: ms(percentile(s, 0.50)), P99: ms(percentile(s, 0.99)),
		Mean: ms(sum / time.Duration(len(s)))}
}

// percentile is the nearest-rank percentile of sorted s.
func percentile(s []time.Duration, q float64) time.Duration {
	i := int(math.Ceil(q*float64(len(s)))) - 1
	return s[max(0, min(i, len(s)-1))]
}
