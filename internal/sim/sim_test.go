package sim

import (
	"bytes"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aloft-dev/aloft/internal/scheduler"
)

// constFunction returns a function whose invocations all run for durMS and
// whose instances take memMB.
func constFunction(id string, perMinute []int, durMS, memMB float64) Function {
	f := Function{ID: id, Trigger: "timer", Invocations: perMinute, MemoryMB: memMB}
	for i := range f.DurationPercentiles {
		f.DurationPercentiles[i] = durMS
	}
	return f
}

// every returns per-minute counts over minutes with one invocation each
// period minutes, starting at minute 0.
func every(period, minutes int) []int {
	c := make([]int, minutes)
	for m := 0; m < minutes; m += period {
		c[m] = 1
	}
	return c
}

func TestRunHandComputed(t *testing.T) {
	sec := func(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }
	// A timer every 20 minutes, 1 s each, 1 GB, over 8 hours; with the even
	// spread each invocation starts 30 s into its minute.
	timer := Trace{Minutes: 480, Functions: []Function{constFunction("timer", every(20, 480), 1000, 1024)}}
	// Two overlapping 60 s invocations at 15 s and 45 s, then one at 5m30s;
	// 30 minutes.
	overlap := Trace{Minutes: 30, Functions: []Function{constFunction("overlap", append([]int{2, 0, 0, 0, 0, 1}, make([]int, 24)...), 60000, 1024)}}

	tests := []struct {
		name       string
		trace      Trace
		policy     scheduler.KeepAlivePolicy
		cold       int64
		concurrent int64
		prewarms   int64
		idle       time.Duration
	}{
		// Every idle time (19m59s) outlasts 10 minutes: all 24 are cold and
		// each costs 10 idle minutes.
		{"timer, fixed 10m", timer, scheduler.FixedKeepAlive{}, 24, 0, 0, 24 * 10 * time.Minute},
		// The first 10 ends see fewer than 10 idle times and fall back to
		// 10 minutes: invocations 1–11 are cold. From the 11th end on, the
		// histogram (all in bin 19) pre-warms at 17.1 min and keeps to 22
		// min, so invocations 12–24 are warm, each after 19m59s − 17m6s =
		// 2m53s loaded. After the 24th (ends 460m31s) the pre-warm at 477m37s
		// runs to the end of the trace: 2m23s.
		{"timer, adaptive", timer, scheduler.HybridHistogram{}, 11, 0, 14,
			10*10*time.Minute + 13*sec(173) + sec(143)},
		// No margin: pre-warm at 19 min, keep to 20 min; the last pre-warm
		// (479m31s) has 29 s left in the trace.
		{"timer, adaptive without margin", timer, scheduler.HybridHistogram{Margin: -1}, 11, 0, 14,
			10*10*time.Minute + 13*sec(59) + sec(29)},
		// The second invocation overlaps the first: a concurrent cold start.
		// Instance A idles from 75 s for 10 min; B idles 105–330 s, runs the
		// third invocation, idles from 390 s for 10 min.
		{"overlap, fixed 10m", overlap, scheduler.FixedKeepAlive{}, 2, 1, 0, sec(600 + 225 + 600)},
		// Too few idle times: the adaptive policy is the fixed one.
		{"overlap, adaptive", overlap, scheduler.HybridHistogram{}, 2, 1, 0, sec(600 + 225 + 600)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := Run(tt.trace, tt.policy, Options{Spread: SpreadEven})
			if err != nil {
				t.Fatal(err)
			}
			if r.ColdStarts != tt.cold || r.ConcurrentColdStarts != tt.concurrent || r.Prewarms != tt.prewarms {
				t.Errorf("cold=%d concurrent=%d prewarms=%d, want %d, %d, %d",
					r.ColdStarts, r.ConcurrentColdStarts, r.Prewarms, tt.cold, tt.concurrent, tt.prewarms)
			}
			if d := r.IdleTime - tt.idle; d < -time.Millisecond || d > time.Millisecond {
				t.Errorf("idle=%v, want %v", r.IdleTime, tt.idle)
			}
			if want := tt.idle.Seconds(); math.Abs(r.IdleGBSeconds-want) > 0.01 { // 1 GB
				t.Errorf("idle GB-s=%.3f, want %.3f", r.IdleGBSeconds, want)
			}
		})
	}
}

func TestRunDeterministic(t *testing.T) {
	tr := Trace{Minutes: 120, Functions: []Function{
		{ID: "a", Invocations: every(3, 120), DurationPercentiles: [7]float64{1, 2, 10, 50, 100, 2000, 90000}, MemoryMB: 128},
		{ID: "b", Invocations: append(make([]int, 60), 50), DurationPercentiles: [7]float64{1000, 1000, 1000, 1000, 1000, 1000, 1000}, MemoryMB: 256},
	}}
	a, err := Run(tr, scheduler.HybridHistogram{}, Options{Seed: 7})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := Run(tr, scheduler.HybridHistogram{}, Options{Seed: 7})
	if a.ColdStarts != b.ColdStarts || a.IdleTime != b.IdleTime {
		t.Errorf("same seed: cold %d vs %d, idle %v vs %v", a.ColdStarts, b.ColdStarts, a.IdleTime, b.IdleTime)
	}
	if a.Invocations != 40+50 {
		t.Errorf("invocations=%d, want 90", a.Invocations)
	}
	// 50 one-second invocations inside one minute overlap at random: more
	// than one instance is needed.
	if got := a.Functions[1].ConcurrentColdStarts; got == 0 {
		t.Errorf("function b concurrent cold starts=0, want some")
	}
	if _, err := Run(tr, scheduler.FixedKeepAlive{}, Options{Spread: "poisson"}); err == nil {
		t.Errorf("spread poisson: got no error")
	}
}

func TestFunctionColdStartPercentile(t *testing.T) {
	r := Report{Functions: []FunctionReport{
		{Invocations: 10, ColdStarts: 1}, // 10%
		{Invocations: 4, ColdStarts: 2},  // 50%
		{Invocations: 1, ColdStarts: 1},  // 100%
		{Invocations: 5, ColdStarts: 0},  // 0%
		{},                               // never invoked: ignored
	}}
	tests := []struct {
		p    float64
		want float64
	}{{25, 0}, {50, 10}, {75, 50}, {90, 100}, {100, 100}}
	for _, tt := range tests {
		if got := r.FunctionColdStartPercentile(tt.p); got != tt.want {
			t.Errorf("FunctionColdStartPercentile(%v)=%v, want %v", tt.p, got, tt.want)
		}
	}
}

// writeTrace writes a two-function trace in the InVitro layout.
func writeTrace(t *testing.T, durations, memory string) string {
	t.Helper()
	dir := t.TempDir()
	files := map[string]string{
		"invocations.csv": "HashOwner,HashApp,HashFunction,Trigger,480,481,482\n" +
			"o1,a1,f1,timer,1,0,1\n" +
			"o1,a1,f2,http,0,3,0\n",
		"durations.csv": durations,
		"memory.csv":    memory,
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

const (
	goodDurations = "HashOwner,HashApp,HashFunction,Average,Count,Minimum,Maximum,percentile_Average_0,percentile_Average_1,percentile_Average_25,percentile_Average_50,percentile_Average_75,percentile_Average_99,percentile_Average_100\n" +
		"o1,a1,f1,100,2,10,200,10,11,50,100,150,190,200\n" +
		"o1,a1,f2,5,3,5,5,5,5,5,5,5,5,5\n"
	goodMemory = "HashFunction,HashOwner,HashApp,SampleCount,AverageAllocatedMb,AverageAllocatedMb_pct1\n" +
		"f1,o1,a1,10,128.5,100\n" +
		"f2,o1,a1,10,64,60\n"
)

func TestLoadTrace(t *testing.T) {
	tr, err := LoadTrace(writeTrace(t, goodDurations, goodMemory))
	if err != nil {
		t.Fatal(err)
	}
	if tr.FirstMinute != 480 || tr.Minutes != 3 || len(tr.Functions) != 2 {
		t.Fatalf("trace %d minutes from %d, %d functions; want 3 from 480, 2", tr.Minutes, tr.FirstMinute, len(tr.Functions))
	}
	f := tr.Functions[0]
	if f.ID != "f1" || f.App != "a1" || f.Trigger != "timer" || f.MemoryMB != 128.5 ||
		f.DurationPercentiles != [7]float64{10, 11, 50, 100, 150, 190, 200} || len(f.Invocations) != 3 || f.Invocations[2] != 1 {
		t.Errorf("function 0 = %+v", f)
	}
	if got := tr.Functions[1].Invocations[1]; got != 3 {
		t.Errorf("function 1 minute 481 = %d, want 3", got)
	}
}

func TestLoadTraceErrors(t *testing.T) {
	tests := []struct {
		name, durations, memory, want string
	}{
		{"missing duration row", strings.Split(goodDurations, "o1,a1,f2")[0], goodMemory, "function f2 has no row in durations.csv"},
		{"missing memory column", goodDurations, "HashFunction,HashOwner\nf1,o1\n", "no column AverageAllocatedMb"},
		{"bad duration", strings.Replace(goodDurations, ",190,", ",x,", 1), goodMemory, "cannot read durations.csv line 2"},
		{"empty memory", goodDurations, "", "cannot read memory.csv: no rows"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := LoadTrace(writeTrace(t, tt.durations, tt.memory))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("LoadTrace error=%v, want one containing %q", err, tt.want)
			}
		})
	}
	if _, err := LoadTrace(t.TempDir()); err == nil || !strings.Contains(err.Error(), "cannot read trace") {
		t.Errorf("empty dir: error=%v, want cannot read trace", err)
	}
}

func TestCommand(t *testing.T) {
	dir := writeTrace(t, goodDurations, goodMemory)
	tests := []struct {
		name    string
		args    []string
		want    []string
		wantErr string
	}{
		{"both", []string{"--trace", dir}, []string{"fixed 10m", "adaptive (fallback 10m)", "invocations", "idle memory vs fixed 10m"}, ""},
		{"fixed only", []string{"--trace", dir, "--policy", "fixed", "--keep-alive", "20m"}, []string{"fixed 20m"}, ""},
		{"adaptive, paper fallback", []string{"--trace", dir, "--policy", "adaptive", "--fallback", "4h", "--spread", "even"}, []string{"adaptive (fallback 4h)", "even spread"}, ""},
		{"bad policy", []string{"--trace", dir, "--policy", "lru"}, nil, `--policy "lru" is not one of fixed, adaptive, both`},
		{"no trace", nil, nil, "--trace is required"},
		{"bad spread", []string{"--trace", dir, "--spread", "poisson"}, nil, `spread "poisson" is not one of uniform, even`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmd := NewCommand()
			var out bytes.Buffer
			cmd.SetOut(&out)
			cmd.SetErr(&out)
			cmd.SetArgs(tt.args)
			err := cmd.Execute()
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error=%v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for _, w := range tt.want {
				if !strings.Contains(out.String(), w) {
					t.Errorf("output lacks %q:\n%s", w, out.String())
				}
			}
			if tt.name == "fixed only" && strings.Contains(out.String(), "adaptive") {
				t.Errorf("--policy fixed printed the adaptive policy:\n%s", out.String())
			}
		})
	}
}
