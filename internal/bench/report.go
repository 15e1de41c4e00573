package bench

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
)

// Statuses of a Check.
const (
	Pass          = "PASS"
	Miss          = "MISS"
	Todo          = "TODO" // the feature the target needs does not exist yet
	NotApplicable = "N/A"  // the figure could not be measured on this host
	NoTarget      = ""     // a figure shown for context
)

// Targets, from the issues that asked for the benchmark. Where two issues
// set the same target, the stricter one is used; the warm latency has one
// bound per floor (see docs/performance.md).
const (
	TargetWarmVsFloor = 2.0 // warm p50 at most 2× the floor's
	// TargetWarmVsFloorExternal is the core issue's bound, judged against
	// the floor measured by a client in its own process, interleaved.
	TargetWarmVsFloorExternal = 3.0
	TargetThroughputC16       = 0.5  // throughput at concurrency 16 at least half the floor's
	TargetGoColdMs            = 10.0 // Go cold start p50, unsandboxed
	TargetGoColdIsolatedMs    = 15.0 // Go cold start p50, isolated
	TargetIsolatedWarmRatio   = 1.10 // isolated warm p50 within 10% of unsandboxed
	TargetScaleMs             = 1000 // 0→50 Go instances
	TargetGoIdleMB            = 10.0 // idle Go instance, platform side included
	TargetPooledNodeColdMs    = 25.0
	TargetPooledPyColdMs      = 15.0
)

// Check is one row of the report: a figure, and its target when it has one.
type Check struct {
	Metric    string `json:"metric"`
	Isolation string `json:"isolation,omitempty"` // "none", "isolated"; empty for the floor
	Value     string `json:"value"`
	Target    string `json:"target,omitempty"`
	Status    string `json:"status,omitempty"`
}

// Evaluate turns a run's figures into report rows, with PASS or MISS
// against each target.
func Evaluate(r *Result) []Check {
	var out []Check
	add := func(metric, iso, value, target, status string) {
		out = append(out, Check{Metric: metric, Isolation: iso, Value: value, Target: target, Status: status})
	}
	floor := r.Floor
	add("floor warm p50 / p99", "", lat(floor.Warm), "", NoTarget)
	if floor.WarmExternal != nil {
		add("floor warm p50 / p99, client in its own process", "", lat(*floor.WarmExternal), "", NoTarget)
	}
	if len(floor.Throughput) > 0 {
		add("floor throughput "+levels(floor.Throughput), "", rps(floor.Throughput), "", NoTarget)
		if t, ok := cpuLevel(floor.Throughput); ok {
			add(fmt.Sprintf("floor   … CPU per request at c=%d", t.Concurrency), "",
				fmt.Sprintf("%.0f µs (server and client, one process)", t.CPUSelfUs), "", NoTarget)
		}
	}
	var unsandboxed map[string]Runtime
	for _, m := range r.Modes {
		iso := m.Level
		if m.Skipped != "" {
			add("isolated node", "isolated", "not measured: "+m.Skipped,
				fmt.Sprintf("Go cold p50 < %g ms; warm p50 ≤ +%.0f%% of unsandboxed", TargetGoColdIsolatedMs, (TargetIsolatedWarmRatio-1)*100), NotApplicable)
			continue
		}
		byRT := map[string]Runtime{}
		for _, rt := range m.Runtimes {
			byRT[rt.Runtime] = rt
			name := rt.Runtime
			// raw is a diagnostic (the platform's share of the Go
			// function's latency), not a function the targets are about.
			judged := func(target, status string) (string, string) {
				if name == "raw" {
					return "", NoTarget
				}
				return target, status
			}
			limit := TargetWarmVsFloor * floor.Warm.P50
			target, status := judged(fmt.Sprintf("p50 ≤ %g× floor (%s)", TargetWarmVsFloor, msStr(limit)), passIf(rt.Warm.P50 <= limit))
			add(name+" warm p50 / p99", iso, lat(rt.Warm), target, status)
			if rt.Inside.N > 0 {
				add(name+"   … of which Runtime API round trip p50 / p99", iso, lat(rt.Inside), "", NoTarget)
			}
			if ext := rt.WarmExternal; ext != nil && floor.WarmExternal != nil {
				add(name+" warm p50 / p99, client in its own process", iso,
					fmt.Sprintf("%s (%.1f× that floor)", lat(*ext), ext.P50/floor.WarmExternal.P50), "", NoTarget)
			}
			if v := rt.VsFloorExternal; v != nil {
				target, status := judged(fmt.Sprintf("median ≤ %g×", TargetWarmVsFloorExternal), passIf(v.Median <= TargetWarmVsFloorExternal))
				add(name+"   … vs that floor, interleaved", iso,
					fmt.Sprintf("%.2f× (median of %d rounds; %s)", v.Median, len(v.Ratios), ratios(v.Ratios)), target, status)
			}
			if base, ok := unsandboxed[name]; ok && iso == "isolated" {
				ratio := rt.Warm.P50 / base.Warm.P50
				target, status := judged(fmt.Sprintf("≤ +%.0f%%", (TargetIsolatedWarmRatio-1)*100), passIf(ratio <= TargetIsolatedWarmRatio))
				value := fmt.Sprintf("%+.1f%% (sequential runs)", (ratio-1)*100)
				// The interleaved measurement, when there is one, decides.
				for _, c := range r.IsolationCost {
					if c.Runtime == name {
						add(name+" warm p50 vs unsandboxed", iso, value, "", NoTarget)
						value = fmt.Sprintf("%+.1f%% (median of %d interleaved rounds)", (c.Median-1)*100, len(c.Ratios))
						_, status = judged(target, passIf(c.Median <= TargetIsolatedWarmRatio))
					}
				}
				add(name+" warm p50 vs unsandboxed", iso, value, target, status)
			}
			if len(rt.Throughput) > 0 {
				target, status := "", NoTarget
				if f, ok := find(floor.Throughput, 16); ok {
					if t, ok := find(rt.Throughput, 16); ok {
						target, status = judged(fmt.Sprintf("c=16 ≥ %g× floor (%.0f)", TargetThroughputC16, TargetThroughputC16*f.RPS),
							passIf(t.RPS >= TargetThroughputC16*f.RPS))
					}
				}
				add(name+" throughput "+levels(rt.Throughput), iso, rps(rt.Throughput), target, status)
				if t, ok := cpuLevel(rt.Throughput); ok {
					value := fmt.Sprintf("%.0f µs in the function's processes + %.0f µs node and client", t.CPUInstancesUs, t.CPUSelfUs)
					if t.CPUInstancesUs > 0 && r.Machine.CPUs > 0 {
						value += fmt.Sprintf(" (the function's share alone caps %d CPUs at %.0f req/s)",
							r.Machine.CPUs, float64(r.Machine.CPUs)*1e6/t.CPUInstancesUs)
					}
					add(fmt.Sprintf("%s   … CPU per invocation at c=%d", name, t.Concurrency), iso, value, "", NoTarget)
				}
			}
			target, status = "", NoTarget
			if name == "go" {
				limit := TargetGoColdMs
				if iso == "isolated" {
					limit = TargetGoColdIsolatedMs
				}
				target, status = fmt.Sprintf("p50 < %g ms", limit), passIf(rt.Cold.Total.P50 < limit)
			}
			add(name+" cold start p50 / p99, unpooled", iso, lat(rt.Cold.Total), target, status)
			add(name+"   … of which Init Duration p50 / p99", iso, lat(rt.Cold.Init), "", NoTarget)
			addBreakdown(add, name, iso, rt.Cold)
			if base, ok := unsandboxed[name]; ok && iso == "isolated" {
				add(name+" cold start p50, cost of isolation", iso,
					fmt.Sprintf("%+.2f ms", rt.Cold.Total.P50-base.Cold.Total.P50), "", NoTarget)
			}
			if name == "node" || name == "python" {
				limit := TargetPooledNodeColdMs
				if name == "python" {
					limit = TargetPooledPyColdMs
				}
				if rt.ColdPooled != nil {
					add(name+" cold start p50 / p99, pooled", iso, lat(rt.ColdPooled.Total),
						fmt.Sprintf("p50 < %g ms", limit), passIf(rt.ColdPooled.Total.P50 < limit))
					addBreakdown(add, name, iso, *rt.ColdPooled)
				} else {
					add(name+" cold start, pooled", iso, "pooled: not implemented yet",
						fmt.Sprintf("p50 < %g ms", limit), Todo)
				}
			}
			if mem := rt.Memory; mem != nil {
				target, status := "", NoTarget
				if name == "go" {
					target, status = fmt.Sprintf("< %g MB", TargetGoIdleMB), passIf(mem.Total() < TargetGoIdleMB)
				}
				add(name+" idle instance memory", iso,
					fmt.Sprintf("%.1f MB (RSS %.1f + platform %.2f; PSS %.1f; %d instances)",
						mem.Total(), mem.RSS, mem.Platform, mem.PSS, mem.Instances), target, status)
			}
		}
		if s := m.Scale; s != nil {
			add(fmt.Sprintf("go 0→%d instances", s.N), iso,
				fmt.Sprintf("%s (first %s; %d instances)", msStr(s.Ready), msStr(s.FirstMs), s.Instances),
				fmt.Sprintf("< %s", msStr(TargetScaleMs)), passIf(s.Ready < TargetScaleMs))
		}
		if iso == "none" {
			unsandboxed = byRT
		}
	}
	return out
}

// Format writes the report table.
func Format(w io.Writer, r *Result) error {
	m := r.Machine
	fmt.Fprintf(w, "aloft bench: %d CPUs (%s), %s/%s, %s, kernel %s\n", m.CPUs, m.CPUModel, m.OS, m.Arch, m.GoVersion, m.Kernel)
	s := r.Settings
	fmt.Fprintf(w, "%s per figure, %d-byte payload, %d cold starts per runtime, %d idle instances; took %.0f s\n\n",
		msStr(s.DurationMs), s.PayloadBytes, s.Cold, s.Idle, r.Took)
	for _, md := range r.Modes {
		if md.Driver != "" {
			fmt.Fprintf(w, "node --isolation %s: driver %s, isolation %s\n", md.Isolation, md.Driver, md.Level)
		}
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "FIGURE\tISOLATION\tVALUE\tTARGET\tRESULT")
	for _, c := range r.Checks {
		iso := c.Isolation
		if iso == "" {
			iso = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", c.Metric, iso, c.Value, c.Target, c.Status)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	var missed []string
	for _, c := range r.Checks {
		if c.Status == Miss {
			missed = append(missed, c.Metric+" ("+c.Isolation+")")
		}
	}
	if len(missed) > 0 {
		fmt.Fprintf(w, "\nmissed %d target(s): %s\n", len(missed), strings.Join(missed, "; "))
	}
	return nil
}

func passIf(ok bool) string {
	if ok {
		return Pass
	}
	return Miss
}

func find(tps []Throughput, c int) (Throughput, bool) {
	for _, t := range tps {
		if t.Concurrency == c {
			return t, true
		}
	}
	return Throughput{}, false
}

// cpuLevel is the throughput figure whose CPU split the report shows: at
// concurrency 16 when measured, else the highest measured.
func cpuLevel(tps []Throughput) (Throughput, bool) {
	if t, ok := find(tps, 16); ok {
		return t, true
	}
	if len(tps) == 0 {
		return Throughput{}, false
	}
	return slices.MaxFunc(tps, func(a, b Throughput) int { return a.Concurrency - b.Concurrency }), true
}

func levels(tps []Throughput) string {
	var s []string
	for _, t := range tps {
		s = append(s, fmt.Sprint(t.Concurrency))
	}
	return "c=" + strings.Join(s, "/")
}

func rps(tps []Throughput) string {
	var s []string
	for _, t := range tps {
		s = append(s, fmt.Sprintf("%.0f", t.RPS))
	}
	return strings.Join(s, " / ") + " req/s"
}

func ratios(rs []float64) string {
	var s []string
	for _, r := range rs {
		s = append(s, fmt.Sprintf("%.2f", r))
	}
	return strings.Join(s, " ")
}

func lat(l Latency) string {
	return msNum(l.P50) + " / " + msStr(l.P99)
}

// msStr formats milliseconds with the precision that matters at their size.
func msStr(v float64) string { return msNum(v) + " ms" }

func msNum(v float64) string {
	switch {
	case v < 1:
		return fmt.Sprintf("%.3f", v)
	case v < 100:
		return fmt.Sprintf("%.2f", v)
	default:
		return fmt.Sprintf("%.0f", v)
	}
}

// addBreakdown adds the rows that split a cold start's p50: sandbox setup,
// runtime start (interpreter, bootstrap, handler import), the first
// invocation, and the rest (HTTP hops and the platform's own work).
func addBreakdown(add func(metric, iso, value, target, status string), name, iso string, c Cold) {
	rest := c.Total.P50 - c.Sandbox.P50 - c.Runtime.P50 - c.Invoke.P50
	add(name+"   … p50 split: sandbox / runtime start / first invoke / rest", iso,
		fmt.Sprintf("%.2f / %.2f / %.2f / %.2f ms", c.Sandbox.P50, c.Runtime.P50, c.Invoke.P50, rest), "", NoTarget)
}
