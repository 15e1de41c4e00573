package sim

import (
	"container/heap"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/aloft-dev/aloft/internal/scheduler"
)

// Spread says how a minute's invocations are placed inside the minute.
type Spread string

const (
	// SpreadUniform draws each start independently and uniformly at random
	// within the minute, as InVitro does. The default.
	SpreadUniform Spread = "uniform"
	// SpreadEven places the i-th of c starts at (i+½)/c of the minute, as
	// the trace's published inter-arrival CVs assume.
	SpreadEven Spread = "even"
)

// Options tune a replay. The zero value is valid: seed 0, uniform spread.
type Options struct {
	// Seed seeds the random start offsets and durations. Function i of the
	// trace draws from PCG streams (Seed, 2i) for offsets and (Seed, 2i+1)
	// for durations, so every policy replays exactly the same invocations.
	Seed   uint64
	Spread Spread // default SpreadUniform
}

// Report is the outcome of replaying a trace through one policy.
type Report struct {
	Policy      string // the policy's name; callers may overwrite it with a label
	Invocations int64
	ColdStarts  int64
	// ConcurrentColdStarts are the cold starts of invocations that arrived
	// while another invocation of the function was running: the function was
	// loaded but needed one more instance. The others found the function
	// idle with nothing loaded, the only kind the paper's per-app model has.
	ConcurrentColdStarts int64
	// Prewarms counts instances loaded ahead of need (whether or not an
	// invocation used them).
	Prewarms int64
	// IdleTime is the time instances spent loaded but idle, summed over
	// instances; IdleGBSeconds weighs it by each function's memory.
	IdleTime      time.Duration
	IdleGBSeconds float64
	// Decisions counts the policy's decisions (one per invocation end) by
	// reason.
	Decisions map[scheduler.Reason]int64
	Functions []FunctionReport // in trace order
}

// FunctionReport is one function's share of a Report.
type FunctionReport struct {
	ID, Trigger          string
	Invocations          int64
	ColdStarts           int64
	ConcurrentColdStarts int64 // see Report.ConcurrentColdStarts
	Prewarms             int64
	IdleTime             time.Duration
	IdleGBSeconds        float64
	LastReason           scheduler.Reason // reason of the function's last decision
}

// ColdStartPercent is the share of invocations that were cold starts.
func (r Report) ColdStartPercent() float64 { return percent(r.ColdStarts, r.Invocations) }

// ColdStartPercent is the share of the function's invocations that were cold
// starts.
func (f FunctionReport) ColdStartPercent() float64 { return percent(f.ColdStarts, f.Invocations) }

func percent(a, b int64) float64 {
	if b == 0 {
		return 0
	}
	return 100 * float64(a) / float64(b)
}

// FunctionColdStartPercentile returns the p-th percentile (nearest rank,
// 0 < p ≤ 100) of the per-function cold-start percentage, over the functions
// with at least one invocation; the paper's headline figure is p = 75.
func (r Report) FunctionColdStartPercentile(p float64) float64 {
	var pcts []float64
	for _, f := range r.Functions {
		if f.Invocations > 0 {
			pcts = append(pcts, f.ColdStartPercent())
		}
	}
	if len(pcts) == 0 {
		return 0
	}
	slices.Sort(pcts)
	i := int(math.Ceil(p/100*float64(len(pcts)))) - 1
	return pcts[min(max(i, 0), len(pcts)-1)]
}

// Run replays tr through policy in virtual time.
//
// The model, per function, each function on its own (one idle-time histogram
// per function, as the policy's call contract says):
//   - Each minute's invocations start at offsets given by opts.Spread; each
//     runs for a duration drawn from the function's duration percentiles
//     (linear interpolation between them).
//   - An invocation is warm when an instance of the function is loaded and
//     idle (the most recently used one is taken), else it is a cold start on
//     a new instance. Cold-start latency is not modelled: the instance runs
//     the invocation from its arrival. Overlapping invocations therefore
//     need as many instances as are in flight.
//   - Idle instances follow the Windows the policy returned when they became
//     idle; with PrewarmAfter > 0 they are unloaded at once and, when the
//     function has become idle, one instance is pre-warmed at PrewarmAfter
//     (unless an instance is loaded then anyway) and kept KeepAlive.
//   - Idle memory-time counts instances loaded and not running, up to the
//     end of the trace's last minute, times the function's memory.
func Run(tr Trace, policy scheduler.KeepAlivePolicy, opts Options) (Report, error) {
	switch opts.Spread {
	case "":
		opts.Spread = SpreadUniform
	case SpreadUniform, SpreadEven:
	default:
		return Report{}, fmt.Errorf("cannot run simulation: spread %q is not one of uniform, even", opts.Spread)
	}
	r := Report{
		Policy:    policy.Name(),
		Decisions: map[scheduler.Reason]int64{},
		Functions: make([]FunctionReport, 0, len(tr.Functions)),
	}
	horizon := time.Duration(tr.Minutes) * time.Minute
	for i, f := range tr.Functions {
		fr := runFunction(f, i, policy, opts, horizon, r.Decisions)
		r.Invocations += fr.Invocations
		r.ColdStarts += fr.ColdStarts
		r.ConcurrentColdStarts += fr.ConcurrentColdStarts
		r.Prewarms += fr.Prewarms
		r.IdleTime += fr.IdleTime
		r.IdleGBSeconds += fr.IdleGBSeconds
		r.Functions = append(r.Functions, fr)
	}
	return r, nil
}

// instance is an idle instance of the function, loaded or scheduled to be.
type instance struct {
	since   time.Duration     // start of its idle time (its last end, or the function's for a pre-warm)
	w       scheduler.Windows // windows it follows from since
	prewarm bool
}

func runFunction(f Function, index int, policy scheduler.KeepAlivePolicy, opts Options, horizon time.Duration, decisions map[scheduler.Reason]int64) FunctionReport {
	fr := FunctionReport{ID: f.ID, Trigger: f.Trigger}
	offsets := rand.New(rand.NewPCG(opts.Seed, 2*uint64(index)))
	durations := rand.New(rand.NewPCG(opts.Seed, 2*uint64(index)+1))

	var (
		h       scheduler.IdleHistogram
		busy    endHeap    // end times of running invocations
		idle    []instance // idle instances, loaded or pending
		lastEnd time.Duration
		ran     bool // an invocation has ended
	)
	// account adds an idle instance's loaded time until idle x.
	account := func(in instance, x time.Duration) {
		fr.IdleTime += in.w.LoadedTime(x)
		if in.prewarm && x >= in.w.PrewarmAfter {
			fr.Prewarms++
		}
	}
	// end handles the end of an invocation at e, already popped from busy.
	end := func(e time.Duration) {
		w := policy.Decide(&h, busy.Len())
		decisions[w.Reason]++
		fr.LastReason = w.Reason
		if w.PrewarmAfter == 0 {
			idle = append(idle, instance{since: e, w: w})
		}
		if busy.Len() > 0 {
			return
		}
		lastEnd, ran = e, true
		if w.PrewarmAfter > 0 {
			at := e + w.PrewarmAfter
			for _, in := range idle {
				if in.w.Loaded(at - in.since) {
					return // an instance is loaded then anyway
				}
			}
			idle = append(idle, instance{since: e, w: w, prewarm: true})
		}
	}
	arrive := func(t, d time.Duration) {
		for busy.Len() > 0 && busy[0] <= t {
			end(heap.Pop(&busy).(time.Duration))
		}
		fr.Invocations++
		if busy.Len() == 0 && ran {
			h.Record(t - lastEnd)
		}
		// Keep the loaded instances, account for the others (expired, or
		// pre-warms this arrival cancels), and pick the most recently idle.
		kept, best := idle[:0], -1
		for _, in := range idle {
			if !in.w.Loaded(t - in.since) {
				account(in, t-in.since)
				continue
			}
			if best < 0 || in.since > kept[best].since {
				best = len(kept)
			}
			kept = append(kept, in)
		}
		if best >= 0 {
			account(kept[best], t-kept[best].since)
			kept = slices.Delete(kept, best, best+1)
		} else {
			fr.ColdStarts++
			if busy.Len() > 0 {
				fr.ConcurrentColdStarts++
			}
		}
		idle = kept
		heap.Push(&busy, t+d)
	}

	var starts []time.Duration
	for m, c := range f.Invocations {
		base := time.Duration(m) * time.Minute
		starts = starts[:0]
		for i := range c {
			switch opts.Spread {
			case SpreadEven:
				starts = append(starts, base+time.Duration((float64(i)+0.5)/float64(c)*float64(time.Minute)))
			default:
				starts = append(starts, base+time.Duration(offsets.Int64N(int64(time.Minute))))
			}
		}
		slices.Sort(starts)
		for _, t := range starts {
			arrive(t, sampleDuration(f.DurationPercentiles, durations))
		}
	}
	for busy.Len() > 0 {
		end(heap.Pop(&busy).(time.Duration))
	}
	for _, in := range idle {
		if x := horizon - in.since; x > 0 {
			account(in, x)
		}
	}
	fr.IdleGBSeconds = fr.IdleTime.Seconds() * f.MemoryMB / 1024
	return fr
}

// sampleDuration draws an execution time from the percentiles p (ms at
// DurationQuantiles), interpolating linearly between them.
func sampleDuration(p [7]float64, rng *rand.Rand) time.Duration {
	u := rng.Float64()
	q := DurationQuantiles
	for j := 1; j < len(q); j++ {
		if u < q[j] || j == len(q)-1 {
			ms := p[j-1] + (p[j]-p[j-1])*(u-q[j-1])/(q[j]-q[j-1])
			return time.Duration(max(ms, 0) * float64(time.Millisecond))
		}
	}
	panic("unreachable")
}

// endHeap is a min-heap of invocation end times.
type endHeap []time.Duration

func (h endHeap) Len() int           { return len(h) }
func (h endHeap) Less(i, j int) bool { return h[i] < h[j] }
func (h endHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *endHeap) Push(x any)        { *h = append(*h, x.(time.Duration)) }
func (h *endHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}
