// Package scheduler holds Aloft's pure decisions (placement, autoscaling,
// keep-alive): state and time in, decision out. It imports only
// internal/model and the standard library, so decisions can be unit-tested
// and replayed against a trace in virtual time (internal/sim).
package scheduler

import (
	"math"
	"time"
)

// DefaultKeepAlive is the fixed policy's keep-alive, as AWS Lambda's.
const DefaultKeepAlive = 10 * time.Minute

// Windows is a keep-alive decision for one function, relative to the end of
// its last invocation.
type Windows struct {
	// PrewarmAfter is 0 to keep the instance loaded after the invocation
	// ends. Otherwise the instance is unloaded right after the invocation and
	// one is loaded again once the function has been idle this long.
	PrewarmAfter time.Duration
	// KeepAlive is how long an idle instance stays loaded: counted from the
	// end of the invocation when PrewarmAfter is 0, from the pre-warm load
	// otherwise.
	KeepAlive time.Duration
	// Reason tells which rule produced the windows, for metrics and logs.
	Reason Reason
}

// Reason names the rule behind a Windows decision.
type Reason string

const (
	ReasonFixed       Reason = "fixed"         // the fixed policy
	ReasonHistogram   Reason = "histogram"     // the idle-time histogram is representative
	ReasonFewSamples  Reason = "few-samples"   // fallback: not enough idle times recorded yet
	ReasonOutOfBounds Reason = "out-of-bounds" // fallback: too many idle times beyond the histogram range
	ReasonLowCV       Reason = "low-cv"        // fallback: idle times too spread out to predict
	ReasonSurplus     Reason = "surplus"       // other invocations still run: an instance added for concurrency
)

// Loaded reports whether an instance should be loaded when the function has
// been idle for idle (time since its last invocation ended).
func (w Windows) Loaded(idle time.Duration) bool {
	return idle >= 0 && idle >= w.PrewarmAfter && idle < w.PrewarmAfter+w.KeepAlive
}

// LoadedTime returns how long an instance following w is loaded during the
// first idle of an idle period: the idle instance-time it costs.
func (w Windows) LoadedTime(idle time.Duration) time.Duration {
	d := idle - w.PrewarmAfter
	if d <= 0 {
		return 0
	}
	return min(d, w.KeepAlive)
}

// KeepAlivePolicy decides, for one function, how long an idle instance stays
// loaded and when to load one ahead of need. Policies are pure: the caller
// owns the per-function state (an IdleHistogram) and the clock, and a policy
// turns that state into Windows.
//
// Call contract (the worker, the simulator in internal/sim and any other
// caller follow it; everything happens under the caller's per-function lock,
// policies start no goroutines and do not allocate):
//
//  1. Keep one IdleHistogram per function; its zero value is ready to use.
//  2. When an invocation starts while no other invocation of the function is
//     in flight, and the function has run before, call
//     h.Record(start - lastEnd), where lastEnd is when the most recent
//     invocation of the function ended. Invocations that start while another
//     one is in flight record nothing: the function was not idle.
//  3. When an invocation ends, call w := policy.Decide(&h, inFlight), with
//     inFlight the number of invocations of the function still running. The
//     instance that just became idle follows w, counting its idle time from
//     that end. If inFlight is 0, w is also the function's windows, counted
//     from lastEnd = that end.
//  4. Periodically (a reaper), at now: unload every idle instance for which
//     w.Loaded(now - idleSince) is false (with PrewarmAfter > 0 that is right
//     after the invocation). If no invocation of the function is in flight,
//     no instance of it is loaded and the function's windows say
//     Loaded(now - lastEnd), load one instance ahead of need (a pre-warm); it
//     follows the function's windows, so it is unloaded once
//     Loaded(now - lastEnd) turns false. An invocation arriving before the
//     pre-warm time cancels it (the function is no longer idle).
type KeepAlivePolicy interface {
	// Name is a short name for reports ("fixed", "adaptive").
	Name() string
	// Decide returns the windows that apply from the end of the invocation
	// that just ended, while inFlight other invocations of the function
	// still run. It reads h and does not modify it. It costs at most
	// O(HistogramBins) and does not allocate.
	Decide(h *IdleHistogram, inFlight int) Windows
}

// FixedKeepAlive keeps every idle instance loaded for a fixed time and never
// pre-warms. Its zero value keeps instances for DefaultKeepAlive.
type FixedKeepAlive struct {
	KeepAlive time.Duration // default DefaultKeepAlive
}

// Name implements KeepAlivePolicy.
func (FixedKeepAlive) Name() string { return "fixed" }

// Decide implements KeepAlivePolicy; it ignores the histogram.
func (p FixedKeepAlive) Decide(*IdleHistogram, int) Windows {
	ka := p.KeepAlive
	if ka <= 0 {
		ka = DefaultKeepAlive
	}
	return Windows{KeepAlive: ka, Reason: ReasonFixed}
}

// HybridHistogram is the adaptive keep-alive policy of Shahrad et al.,
// "Serverless in the Wild" (USENIX ATC'20), per function instead of per app.
//
// It reads the function's idle-time histogram (4 h range, 1-minute bins).
// When the histogram is representative — at least MinSamples idle times, no
// more than OOBThreshold of them beyond the range, and a coefficient of
// variation of the bin counts of at least CVThreshold (idle times
// concentrated in few bins) — it unloads the instance right after the
// invocation, pre-warms at the HeadPercentile idle time less Margin, and
// keeps the instance loaded until the TailPercentile idle time plus Margin:
//
//	PrewarmAfter = lower edge of the head bin × (1 − Margin)
//	KeepAlive    = upper edge of the tail bin × (1 + Margin) − PrewarmAfter
//
// A head in the first bin gives PrewarmAfter 0: the instance is not unloaded
// and stays loaded until the tail.
//
// When the histogram is not representative it falls back to Fallback, by
// default the fixed policy's 10 minutes without pre-warming. The paper differs in two fallbacks: for
// histograms with many out-of-bounds idle times it forecasts the next idle
// time with an ARIMA model (not implemented here), and for histograms with a
// low CV it keeps instances loaded for the whole range (4 h). Using the fixed
// keep-alive instead makes the adaptive policy never spend more idle memory
// than the fixed one on functions it cannot predict; set Fallback to
// Windows{KeepAlive: HistogramRange} for the paper's behaviour.
//
// The histogram decides only when the function goes idle (no invocation in
// flight): whether its last instance stays loaded, and when to pre-warm one.
// The paper models an app as loaded or not and says nothing of instances
// added for concurrency; an instance that goes idle while other invocations
// of the function still run is kept for Surplus, the fixed keep-alive by
// default, as the fixed policy would. (Applying the histogram's short
// windows to those instances too makes busy functions shed and restart them
// constantly: on the invitro-100 trace it cut the cold starts of idle
// functions by a third but raised concurrency cold starts by 40%.)
//
// Zero-valued fields take the defaults given on each.
type HybridHistogram struct {
	MinSamples     int     // default 10 idle times, in and out of range
	CVThreshold    float64 // default 2, as the paper
	OOBThreshold   float64 // default 0.5: fall back when more than half the idle times are out of range
	HeadPercentile float64 // default 5
	TailPercentile float64 // default 99
	// Margin widens the loaded interval on both sides, as a fraction; the
	// paper uses 10%. Default 0.1; negative means no margin.
	Margin float64
	// Fallback applies when the histogram is not representative; default
	// Windows{KeepAlive: DefaultKeepAlive}. Its Reason is overwritten.
	Fallback Windows
	// Surplus is the keep-alive of an instance that goes idle while other
	// invocations of the function still run; default DefaultKeepAlive.
	Surplus time.Duration
}

// Name implements KeepAlivePolicy.
func (HybridHistogram) Name() string { return "adaptive" }

// Decide implements KeepAlivePolicy.
func (p HybridHistogram) Decide(h *IdleHistogram, inFlight int) Windows {
	if inFlight > 0 {
		surplus := p.Surplus
		if surplus <= 0 {
			surplus = DefaultKeepAlive
		}
		return Windows{KeepAlive: surplus, Reason: ReasonSurplus}
	}
	minSamples := p.MinSamples
	if minSamples <= 0 {
		minSamples = 10
	}
	cvThreshold := orDefault(p.CVThreshold, 2)
	oobThreshold := orDefault(p.OOBThreshold, 0.5)
	head := orDefault(p.HeadPercentile, 5)
	tail := orDefault(p.TailPercentile, 99)
	margin := p.Margin
	switch {
	case margin == 0:
		margin = 0.1
	case margin < 0:
		margin = 0
	}
	fallback := p.Fallback
	if fallback.PrewarmAfter == 0 && fallback.KeepAlive == 0 {
		fallback.KeepAlive = DefaultKeepAlive
	}

	in, oob := h.Counts()
	total := in + oob
	switch {
	case total < uint64(minSamples):
		fallback.Reason = ReasonFewSamples
		return fallback
	case float64(oob) > oobThreshold*float64(total):
		fallback.Reason = ReasonOutOfBounds
		return fallback
	case h.CV() < cvThreshold:
		fallback.Reason = ReasonLowCV
		return fallback
	}
	headBin := h.PercentileBin(head)
	tailBin := h.PercentileBin(tail)
	prewarm := time.Duration(float64(time.Duration(headBin)*HistogramBin) * (1 - margin))
	end := time.Duration(float64(time.Duration(tailBin+1)*HistogramBin) * (1 + margin))
	return Windows{PrewarmAfter: prewarm, KeepAlive: end - prewarm, Reason: ReasonHistogram}
}

func orDefault(v, def float64) float64 {
	if v <= 0 || math.IsNaN(v) {
		return def
	}
	return v
}

// Shape of the idle-time histogram, as in the paper.
const (
	HistogramBin   = time.Minute
	HistogramBins  = 240
	HistogramRange = HistogramBins * HistogramBin // 4 h
)

// agingLimit is the bin count at which all counts are halved, so counters
// never overflow and old history slowly loses weight; percentiles and CV
// depend on the shape only.
const agingLimit = 1 << 24

// IdleHistogram counts one function's idle times in 1-minute bins over 4
// hours, plus the idle times beyond that range. Its zero value is empty and
// ready to use; it is a plain value (about 1 KB) with no pointers, cheap to
// keep per function. It is not safe for concurrent use.
type IdleHistogram struct {
	bins  [HistogramBins]uint32
	in    uint64 // sum of bins
	sumSq uint64 // sum of the squares of bins, for the CV
	oob   uint64 // idle times >= HistogramRange
}

// Record adds one idle time: the time between the end of the function's last
// invocation and the start of the next. Negative values count as 0.
func (h *IdleHistogram) Record(idle time.Duration) {
	if idle >= HistogramRange {
		h.oob++
		return
	}
	b := 0
	if idle > 0 {
		b = int(idle / HistogramBin)
	}
	c := uint64(h.bins[b])
	h.bins[b]++
	h.in++
	h.sumSq += 2*c + 1 // (c+1)² − c²
	if h.bins[b] >= agingLimit {
		h.age()
	}
}

// age halves every count.
func (h *IdleHistogram) age() {
	h.in, h.sumSq = 0, 0
	for i, c := range h.bins {
		c /= 2
		h.bins[i] = c
		h.in += uint64(c)
		h.sumSq += uint64(c) * uint64(c)
	}
	h.oob /= 2
}

// Counts returns how many idle times fell in the histogram's range and
// beyond it.
func (h *IdleHistogram) Counts() (inRange, outOfRange uint64) { return h.in, h.oob }

// CV returns the coefficient of variation (population standard deviation
// over mean) of the bin counts, 0 for an empty histogram. Idle times all in
// one bin give √(HistogramBins−1) ≈ 15.5; spread evenly over k bins they
// give √(HistogramBins/k − 1).
func (h *IdleHistogram) CV() float64 {
	if h.in == 0 {
		return 0
	}
	// With n bins, mean m = in/n and variance sumSq/n − m²:
	// CV² = variance/m² = n·sumSq/in² − 1.
	in := float64(h.in)
	cv2 := float64(HistogramBins)*float64(h.sumSq)/(in*in) - 1
	if cv2 < 0 { // rounding
		return 0
	}
	return math.Sqrt(cv2)
}

// PercentileBin returns the bin holding the p-th percentile (0–100) of the
// in-range idle times: the first bin at which the cumulative count reaches
// p% of the total. It returns -1 for an empty histogram. Bin b covers idle
// times [b, b+1) × HistogramBin.
func (h *IdleHistogram) PercentileBin(p float64) int {
	if h.in == 0 {
		return -1
	}
	target := p / 100 * float64(h.in)
	var cum uint64
	for b, c := range h.bins {
		cum += uint64(c)
		if c > 0 && float64(cum) >= target {
			return b
		}
	}
	return HistogramBins - 1 // unreachable: cum reaches h.in
}
