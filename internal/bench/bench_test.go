package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aloft-dev/aloft/internal/sandbox/process"
	"github.com/aloft-dev/aloft/runtimes"
)

// TestMain lets the isolating driver re-execute the test binary as the
// sandbox init, for runs with ALOFT_TEST_ISOLATION=auto, and
// TestInstancesSince run it as a helper process that only waits.
func TestMain(m *testing.M) {
	process.MaybeRunInit()
	if os.Getenv("ALOFT_BENCH_TEST_WAIT") != "" {
		time.Sleep(time.Minute)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func isolation() string {
	if v := os.Getenv("ALOFT_TEST_ISOLATION"); v != "" {
		return v
	}
	return "none"
}

// TestCommand runs the whole program with tiny settings and checks that
// every figure was measured; it asserts no speed.
func TestCommand(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a node and builds a Go function")
	}
	tests := []struct {
		name     string
		runtimes string
		need     []string // interpreters
	}{
		{name: "go and raw", runtimes: "go,raw"},
		{name: "node and python", runtimes: "node,python", need: []string{"node", "python"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for _, rt := range tc.need {
				if _, ok := runtimes.Interpreters()[runtimeOf[rt]]; !ok {
					t.Skipf("no %s interpreter on this host", rt)
				}
			}
			cmd := NewCommand()
			var out, progress bytes.Buffer
			cmd.SetOut(&out)
			cmd.SetErr(&progress)
			// The test binary cannot serve as the external client process.
			cmd.SetArgs([]string{"--external-client=false", "--duration", "200ms", "--cold", "2", "--runtimes", tc.runtimes,
				"--isolation", isolation(), "--concurrency", "1,4", "--scale", "4", "--idle", "2",
				"--throughput-all", "--json"})
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			if err := cmd.ExecuteContext(ctx); err != nil {
				t.Fatalf("bench: %v\nprogress:\n%s", err, progress.String())
			}
			var res Result
			if err := json.Unmarshal(out.Bytes(), &res); err != nil {
				t.Fatalf("output is not a Result: %v\n%s", err, out.String())
			}
			if res.Floor.Warm.N == 0 || res.Floor.Warm.P50 <= 0 || len(res.Floor.Throughput) != 2 {
				t.Errorf("floor = %+v, want warm samples and 2 throughput levels", res.Floor)
			}
			if len(res.Modes) != 1 || res.Modes[0].Skipped != "" {
				t.Fatalf("modes = %+v, want one measured mode", res.Modes)
			}
			m := res.Modes[0]
			want := strings.Split(tc.runtimes, ",")
			if len(m.Runtimes) != len(want) {
				t.Fatalf("got %d runtimes, want %d", len(m.Runtimes), len(want))
			}
			for i, r := range m.Runtimes {
				if r.Runtime != want[i] {
					t.Errorf("runtime %d = %s, want %s", i, r.Runtime, want[i])
				}
				if r.Warm.N == 0 || r.Warm.P50 <= 0 || r.Warm.P99 < r.Warm.P50 {
					t.Errorf("%s warm = %+v, want samples with p99 ≥ p50 > 0", r.Runtime, r.Warm)
				}
				if len(r.Throughput) != 2 || r.Throughput[1].Concurrency != 4 || r.Throughput[1].N == 0 {
					t.Errorf("%s throughput = %+v, want completions at concurrency 1 and 4", r.Runtime, r.Throughput)
				}
				if r.Cold.Total.N != 2 || r.Cold.Init.P50 <= 0 || r.Cold.Init.P50 > r.Cold.Total.P50 {
					t.Errorf("%s cold = %+v, want 2 samples with 0 < init ≤ total", r.Runtime, r.Cold)
				}
				if r.Memory == nil || r.Memory.Instances != 2 || r.Memory.RSS <= 0 {
					t.Errorf("%s memory = %+v, want the RSS of 2 instances", r.Runtime, r.Memory)
				}
			}
			if want[0] == "go" {
				if m.Scale == nil || m.Scale.Instances != 4 || m.Scale.Ready <= 0 {
					t.Errorf("scale = %+v, want 4 instances", m.Scale)
				}
			}
			var rows bytes.Buffer
			if err := Format(&rows, &res); err != nil {
				t.Fatal(err)
			}
			for _, rt := range want {
				if !strings.Contains(rows.String(), rt+" cold start p50 / p99, unpooled") {
					t.Errorf("table lacks the %s cold start row:\n%s", rt, rows.String())
				}
			}
		})
	}
}

func TestEvaluate(t *testing.T) {
	floor := Target{Warm: Latency{N: 100, P50: 0.1, P99: 0.2}, Throughput: []Throughput{{Concurrency: 16, RPS: 1000}}}
	goRT := func(warm, cold, rps float64) Runtime {
		return Runtime{Runtime: "go", Target: Target{Warm: Latency{P50: warm, P99: warm * 2},
			Throughput: []Throughput{{Concurrency: 16, RPS: rps}}},
			Cold: Cold{Total: Latency{P50: cold}}, Memory: &Memory{Instances: 2, RSS: 6, Platform: 0.5}}
	}
	vsExternal := func(r Runtime, median float64) Runtime {
		r.VsFloorExternal = &Interleaved{Ratios: []float64{median}, Median: median}
		return r
	}
	rawRT := func(warm, median float64) Runtime {
		r := vsExternal(goRT(warm, 5, 600), median)
		r.Runtime = "raw"
		return r
	}
	tests := []struct {
		name   string
		modes  []Mode
		metric string
		iso    string
		want   string
	}{
		{name: "warm within 2× floor", modes: []Mode{{Level: "none", Runtimes: []Runtime{goRT(0.2, 5, 600)}}},
			metric: "go warm p50 / p99", iso: "none", want: Pass},
		{name: "warm over 2× floor", modes: []Mode{{Level: "none", Runtimes: []Runtime{goRT(0.21, 5, 600)}}},
			metric: "go warm p50 / p99", iso: "none", want: Miss},
		{name: "raw has no target", modes: []Mode{{Level: "none", Runtimes: []Runtime{rawRT(0.21, 3.1)}}},
			metric: "raw warm p50 / p99", iso: "none", want: NoTarget},
		{name: "raw not judged interleaved", modes: []Mode{{Level: "none", Runtimes: []Runtime{rawRT(0.21, 3.1)}}},
			metric: "raw   … vs that floor, interleaved", iso: "none", want: NoTarget},
		{name: "interleaved within 3×", modes: []Mode{{Level: "none", Runtimes: []Runtime{vsExternal(goRT(0.3, 5, 600), 3)}}},
			metric: "go   … vs that floor, interleaved", iso: "none", want: Pass},
		{name: "interleaved over 3×", modes: []Mode{{Level: "none", Runtimes: []Runtime{vsExternal(goRT(0.3, 5, 600), 3.01)}}},
			metric: "go   … vs that floor, interleaved", iso: "none", want: Miss},
		{name: "throughput half the floor", modes: []Mode{{Level: "none", Runtimes: []Runtime{goRT(0.2, 5, 500)}}},
			metric: "go throughput c=16", iso: "none", want: Pass},
		{name: "throughput under half", modes: []Mode{{Level: "none", Runtimes: []Runtime{goRT(0.2, 5, 499)}}},
			metric: "go throughput c=16", iso: "none", want: Miss},
		{name: "go cold unsandboxed over 10 ms", modes: []Mode{{Level: "none", Runtimes: []Runtime{goRT(0.2, 12, 600)}}},
			metric: "go cold start p50 / p99, unpooled", iso: "none", want: Miss},
		{name: "go cold isolated under 15 ms", modes: []Mode{{Level: "isolated", Runtimes: []Runtime{goRT(0.2, 12, 600)}}},
			metric: "go cold start p50 / p99, unpooled", iso: "isolated", want: Pass},
		{name: "isolated warm within 10%", modes: []Mode{
			{Level: "none", Runtimes: []Runtime{goRT(0.2, 5, 600)}},
			{Level: "isolated", Runtimes: []Runtime{goRT(0.219, 5, 600)}}},
			metric: "go warm p50 vs unsandboxed", iso: "isolated", want: Pass},
		{name: "isolated warm over 10%", modes: []Mode{
			{Level: "none", Runtimes: []Runtime{goRT(0.2, 5, 600)}},
			{Level: "isolated", Runtimes: []Runtime{goRT(0.221, 5, 600)}}},
			metric: "go warm p50 vs unsandboxed", iso: "isolated", want: Miss},
		{name: "memory with platform side", modes: []Mode{{Level: "none", Runtimes: []Runtime{goRT(0.2, 5, 600)}}},
			metric: "go idle instance memory", iso: "none", want: Pass},
		{name: "no pools yet", modes: []Mode{{Level: "none", Runtimes: []Runtime{{Runtime: "python"}}}},
			metric: "python cold start, pooled", iso: "none", want: Todo},
		{name: "isolation unavailable", modes: []Mode{{Level: "none", Skipped: "no cgroups"}},
			metric: "isolated node", iso: "isolated", want: NotApplicable},
		{name: "scale over 1 s", modes: []Mode{{Level: "none", Scale: &Scale{N: 50, Instances: 50, Ready: 1200}}},
			metric: "go 0→50 instances", iso: "none", want: Miss},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			checks := Evaluate(&Result{Floor: floor, Modes: tc.modes})
			got := "absent"
			for _, c := range checks {
				if strings.HasPrefix(c.Metric, tc.metric) && c.Isolation == tc.iso {
					got = c.Status
					break
				}
			}
			if got != tc.want {
				t.Errorf("status of %q = %q, want %q (checks %+v)", tc.metric, got, tc.want, checks)
			}
		})
	}
}

func TestSummarize(t *testing.T) {
	var lat []time.Duration
	for i := 100; i >= 1; i-- {
		lat = append(lat, time.Duration(i)*time.Millisecond)
	}
	got := summarize(lat)
	want := Latency{N: 100, P50: 50, P99: 99, Mean: 50.5}
	if got != want {
		t.Errorf("got %+v, want %+v", got, want)
	}
	if got := summarize(nil); got != (Latency{}) {
		t.Errorf("empty: got %+v, want zero", got)
	}
}

// TestExternalClient runs the real `aloft bench client` process against a
// floor server, as the bench does for its client-in-its-own-process rows.
func TestExternalClient(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the aloft binary")
	}
	exe := filepath.Join(t.TempDir(), "aloft")
	build := exec.Command("go", "build", "-o", exe, "./cmd/aloft")
	build.Dir = filepath.Join("..", "..")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	url, stop, err := startFloor()
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	floor := &target{url: url}
	b := &bencher{opts: Options{Duration: 300 * time.Millisecond, ExternalClient: []string{exe, "bench", "client"}}.withDefaults(), floor: floor}
	l, err := b.external(context.Background(), floor, b.opts.Duration)
	if err != nil {
		t.Fatal(err)
	}
	if l == nil || l.N < 10 || l.P50 <= 0 || l.P99 < l.P50 {
		t.Errorf("external latency %+v, want a distribution of many requests", l)
	}
	// The floor against itself: every round's ratio near 1.
	in, err := b.externalVsFloor(context.Background(), &target{url: url})
	if err != nil {
		t.Fatal(err)
	}
	if len(in.Ratios) != externalRounds || in.Median < 0.5 || in.Median > 2 {
		t.Errorf("floor vs itself: %+v, want %d ratios with a median near 1", in, externalRounds)
	}
}

func TestInterleaveAlternatesAndDivides(t *testing.T) {
	var order []int
	in, err := interleave(4, func(i int) (float64, error) {
		order = append(order, i)
		return float64(10 * (i + 1)), nil // 10, then 20: ratio 2
	})
	if err != nil {
		t.Fatal(err)
	}
	if want := []int{0, 1, 1, 0, 0, 1, 1, 0}; !slices.Equal(order, want) {
		t.Errorf("measured in order %v, want %v", order, want)
	}
	if in.Median != 2 || len(in.Ratios) != 4 {
		t.Errorf("interleave = %+v, want 4 ratios of 2", in)
	}
	if _, err := interleave(3, func(i int) (float64, error) { return 0, errors.New("boom") }); err == nil {
		t.Error("interleave hid its measurement's error")
	}
}
