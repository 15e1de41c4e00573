package scheduler

import (
	"math"
	"testing"
	"time"
)

// hist builds a histogram from idle times given in minutes, each repeated
// as many times as its count.
func hist(counts map[float64]int) *IdleHistogram {
	var h IdleHistogram
	for m, n := range counts {
		for range n {
			h.Record(time.Duration(m * float64(time.Minute)))
		}
	}
	return &h
}

func TestIdleHistogramPercentileBin(t *testing.T) {
	tests := []struct {
		name   string
		counts map[float64]int
		p      float64
		want   int
	}{
		{"empty", nil, 50, -1},
		{"one sample", map[float64]int{7.5: 1}, 5, 7},
		{"one sample p99", map[float64]int{7.5: 1}, 99, 7},
		{"first bin", map[float64]int{0: 3, 10: 1}, 5, 0},
		{"head of two bins", map[float64]int{3.2: 95, 20: 5}, 5, 3},
		{"p95 lands in first bin", map[float64]int{3.2: 95, 20: 5}, 95, 3},
		{"p99 lands in second bin", map[float64]int{3.2: 95, 20: 5}, 99, 20},
		{"p100 is the last sample", map[float64]int{1: 50, 2: 49, 239.9: 1}, 100, 239},
		{"p5 of 100 spread samples", spread(100), 5, 4},
		{"p99 of 100 spread samples", spread(100), 99, 98},
		{"negative idle counts as 0", map[float64]int{-1: 2}, 50, 0},
		{"out of range ignored", map[float64]int{240: 10, 5: 1}, 99, 5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := hist(tt.counts).PercentileBin(tt.p); got != tt.want {
				t.Errorf("PercentileBin(%v)=%d, want %d", tt.p, got, tt.want)
			}
		})
	}
}

// spread returns n idle times, one in each of bins 0..n-1.
func spread(n int) map[float64]int {
	m := map[float64]int{}
	for i := range n {
		m[float64(i)+0.5] = 1
	}
	return m
}

func TestIdleHistogramCV(t *testing.T) {
	tests := []struct {
		name   string
		counts map[float64]int
		want   float64
	}{
		{"empty", nil, 0},
		{"one bin", map[float64]int{5: 10}, math.Sqrt(239)},
		{"two equal bins", map[float64]int{5: 10, 6: 10}, math.Sqrt(240.0/2 - 1)},
		{"48 bins", spread(48), 2},
		{"all bins", spread(240), 0},
		{"out of range ignored", map[float64]int{5: 10, 300: 50}, math.Sqrt(239)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := hist(tt.counts).CV(); math.Abs(got-tt.want) > 1e-9 {
				t.Errorf("CV()=%v, want %v", got, tt.want)
			}
		})
	}
}

func TestIdleHistogramCounts(t *testing.T) {
	h := hist(map[float64]int{0: 2, 239.99: 3, 240: 4, 1000: 1})
	in, oob := h.Counts()
	if in != 5 || oob != 5 {
		t.Errorf("Counts()=%d,%d, want 5,5", in, oob)
	}
}

func TestIdleHistogramAging(t *testing.T) {
	var h IdleHistogram
	for range agingLimit - 1 {
		h.Record(5 * time.Minute)
	}
	h.Record(20 * time.Minute)
	h.Record(300 * time.Minute)
	h.Record(300 * time.Minute)
	before := h.CV()
	h.Record(5 * time.Minute) // bin 5 reaches the limit: everything halves
	in, oob := h.Counts()
	if want := uint64(agingLimit / 2); in != want || oob != 1 {
		t.Errorf("Counts()=%d,%d after aging, want %d,1", in, oob, want)
	}
	if got := h.PercentileBin(50); got != 5 {
		t.Errorf("PercentileBin(50)=%d after aging, want 5", got)
	}
	if got := h.CV(); math.Abs(got-before) > 0.01 || math.Abs(got-math.Sqrt(239)) > 1e-9 {
		t.Errorf("CV()=%v after aging, want %v (bin 20 halved to 0)", got, math.Sqrt(239))
	}
	var sq uint64
	for _, c := range h.bins {
		sq += uint64(c) * uint64(c)
	}
	if sq != h.sumSq {
		t.Errorf("sumSq=%d after aging, want %d", h.sumSq, sq)
	}
}

func TestFixedKeepAlive(t *testing.T) {
	tests := []struct {
		name   string
		policy FixedKeepAlive
		want   Windows
	}{
		{"zero value", FixedKeepAlive{}, Windows{KeepAlive: 10 * time.Minute, Reason: ReasonFixed}},
		{"20 minutes", FixedKeepAlive{KeepAlive: 20 * time.Minute}, Windows{KeepAlive: 20 * time.Minute, Reason: ReasonFixed}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// The fixed policy ignores the histogram, however regular.
			if got := tt.policy.Decide(hist(map[float64]int{30: 100}), 0); got != tt.want {
				t.Errorf("Decide()=%+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestHybridHistogramDecide(t *testing.T) {
	mins := func(m float64) time.Duration { return time.Duration(m * float64(time.Minute)) }
	tests := []struct {
		name     string
		policy   HybridHistogram
		counts   map[float64]int
		inFlight int
		want     Windows
	}{
		{"empty: few samples", HybridHistogram{}, nil,
			0, Windows{KeepAlive: 10 * time.Minute, Reason: ReasonFewSamples}},
		{"9 samples: few samples", HybridHistogram{}, map[float64]int{19.9: 9},
			0, Windows{KeepAlive: 10 * time.Minute, Reason: ReasonFewSamples}},
		{"timer every 20 minutes", HybridHistogram{}, map[float64]int{19.9: 10},
			// head bin 19 → 19 min × 0.9; tail bin 19 → 20 min × 1.1
			0, Windows{PrewarmAfter: mins(17.1), KeepAlive: mins(22 - 17.1), Reason: ReasonHistogram}},
		{"head and tail differ", HybridHistogram{}, map[float64]int{3.5: 5, 4.5: 90, 30.5: 5},
			// 5th percentile in bin 3, 99th in bin 30
			0, Windows{PrewarmAfter: mins(2.7), KeepAlive: mins(31*1.1 - 2.7), Reason: ReasonHistogram}},
		{"head in first bin: keep loaded", HybridHistogram{}, map[float64]int{0.2: 50, 1.5: 50},
			0, Windows{PrewarmAfter: 0, KeepAlive: mins(2.2), Reason: ReasonHistogram}},
		{"no margin", HybridHistogram{Margin: -1}, map[float64]int{19.9: 10},
			0, Windows{PrewarmAfter: mins(19), KeepAlive: mins(1), Reason: ReasonHistogram}},
		{"custom percentiles", HybridHistogram{HeadPercentile: 50, TailPercentile: 50}, map[float64]int{1.5: 10, 5.5: 10, 9.5: 10},
			0, Windows{PrewarmAfter: mins(4.5), KeepAlive: mins(6*1.1 - 4.5), Reason: ReasonHistogram}},
		{"min samples lowered", HybridHistogram{MinSamples: 2}, map[float64]int{19.9: 2},
			0, Windows{PrewarmAfter: mins(17.1), KeepAlive: mins(22 - 17.1), Reason: ReasonHistogram}},
		{"out of bounds", HybridHistogram{}, map[float64]int{19.9: 10, 300: 11},
			0, Windows{KeepAlive: 10 * time.Minute, Reason: ReasonOutOfBounds}},
		{"half out of bounds is still in", HybridHistogram{}, map[float64]int{19.9: 10, 300: 10},
			0, Windows{PrewarmAfter: mins(17.1), KeepAlive: mins(22 - 17.1), Reason: ReasonHistogram}},
		{"out-of-bounds threshold", HybridHistogram{OOBThreshold: 0.2}, map[float64]int{19.9: 10, 300: 3},
			0, Windows{KeepAlive: 10 * time.Minute, Reason: ReasonOutOfBounds}},
		{"spread out: low CV", HybridHistogram{}, spread(60),
			0, Windows{KeepAlive: 10 * time.Minute, Reason: ReasonLowCV}},
		{"48 bins: CV exactly 2 is representative", HybridHistogram{}, spread(48),
			0, Windows{PrewarmAfter: mins(2 * 0.9), KeepAlive: mins(48*1.1 - 2*0.9), Reason: ReasonHistogram}},
		{"CV threshold raised", HybridHistogram{CVThreshold: 3}, spread(48),
			0, Windows{KeepAlive: 10 * time.Minute, Reason: ReasonLowCV}},
		{"paper's range fallback", HybridHistogram{Fallback: Windows{KeepAlive: HistogramRange}}, spread(60),
			0, Windows{KeepAlive: 4 * time.Hour, Reason: ReasonLowCV}},
		{"fallback with pre-warm", HybridHistogram{Fallback: Windows{PrewarmAfter: time.Minute, KeepAlive: time.Minute, Reason: ReasonFixed}}, nil,
			0, Windows{PrewarmAfter: time.Minute, KeepAlive: time.Minute, Reason: ReasonFewSamples}},
		{"surplus instance", HybridHistogram{}, map[float64]int{19.9: 10}, 2,
			Windows{KeepAlive: 10 * time.Minute, Reason: ReasonSurplus}},
		{"surplus keep-alive", HybridHistogram{Surplus: time.Minute}, map[float64]int{19.9: 10}, 1,
			Windows{KeepAlive: time.Minute, Reason: ReasonSurplus}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := tt.policy.Decide(hist(tt.counts), tt.inFlight)
			// Float margins may round by a nanosecond.
			if got.Reason != tt.want.Reason || absDur(got.PrewarmAfter-tt.want.PrewarmAfter) > time.Microsecond ||
				absDur(got.KeepAlive-tt.want.KeepAlive) > time.Microsecond {
				t.Errorf("Decide()=%+v, want %+v", got, tt.want)
			}
		})
	}
}

func absDur(d time.Duration) time.Duration {
	if d < 0 {
		return -d
	}
	return d
}

func TestWindowsLoaded(t *testing.T) {
	keep := Windows{KeepAlive: 10 * time.Minute}
	pre := Windows{PrewarmAfter: 5 * time.Minute, KeepAlive: 2 * time.Minute}
	tests := []struct {
		name       string
		w          Windows
		idle       time.Duration
		loaded     bool
		loadedTime time.Duration
	}{
		{"keep: just ended", keep, 0, true, 0},
		{"keep: within", keep, 9 * time.Minute, true, 9 * time.Minute},
		{"keep: expired", keep, 10 * time.Minute, false, 10 * time.Minute},
		{"keep: long after", keep, time.Hour, false, 10 * time.Minute},
		{"keep: negative", keep, -time.Second, false, 0},
		{"pre-warm: just ended", pre, 0, false, 0},
		{"pre-warm: before load", pre, 4 * time.Minute, false, 0},
		{"pre-warm: at load", pre, 5 * time.Minute, true, 0},
		{"pre-warm: loaded", pre, 6 * time.Minute, true, time.Minute},
		{"pre-warm: expired", pre, 7 * time.Minute, false, 2 * time.Minute},
		{"pre-warm: long after", pre, time.Hour, false, 2 * time.Minute},
		{"zero windows: never loaded", Windows{}, 0, false, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.w.Loaded(tt.idle); got != tt.loaded {
				t.Errorf("Loaded(%v)=%v, want %v", tt.idle, got, tt.loaded)
			}
			if got := tt.w.LoadedTime(tt.idle); got != tt.loadedTime {
				t.Errorf("LoadedTime(%v)=%v, want %v", tt.idle, got, tt.loadedTime)
			}
		})
	}
}

func TestDecideDoesNotAllocate(t *testing.T) {
	h := hist(map[float64]int{19.9: 20, 3: 1})
	policies := []KeepAlivePolicy{FixedKeepAlive{}, HybridHistogram{}}
	for _, p := range policies {
		allocs := testing.AllocsPerRun(100, func() {
			h.Record(19 * time.Minute)
			_ = p.Decide(h, 0)
		})
		if allocs != 0 {
			t.Errorf("%s: Record+Decide allocates %v times, want 0", p.Name(), allocs)
		}
	}
}
