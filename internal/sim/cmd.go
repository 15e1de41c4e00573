package sim

import (
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/aloft-dev/aloft/internal/scheduler"
)

// NewCommand returns the "aloft sim" command: it replays a trace through the
// keep-alive policies and prints their figures side by side.
func NewCommand() *cobra.Command {
	var (
		dir        string
		policy     string
		keepAlive  time.Duration
		fallback   time.Duration
		minSamples int
		seed       uint64
		spread     string
	)
	cmd := &cobra.Command{
		Use:   "sim --trace DIR",
		Short: "Replay an Azure Functions trace through the keep-alive policies",
		Long: `Replay an Azure Functions trace (invocations.csv, durations.csv, memory.csv in the
InVitro layout) through Aloft's keep-alive policies in virtual time, and report
cold starts and idle memory-time (GB-s spent on loaded, idle instances).

  fixed     keep every idle instance loaded for --keep-alive
  adaptive  the hybrid histogram policy of Shahrad et al. (ATC'20): per function,
            pre-warm at the 5th percentile of idle time and keep alive to the
            99th; fall back to keeping instances --fallback when the idle-time
            histogram is not representative`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if dir == "" {
				return fmt.Errorf("--trace is required")
			}
			fixed := scheduler.FixedKeepAlive{KeepAlive: keepAlive}
			adaptive := scheduler.HybridHistogram{
				MinSamples: minSamples,
				Fallback:   scheduler.Windows{KeepAlive: fallback},
			}
			var policies []scheduler.KeepAlivePolicy
			switch policy {
			case "fixed":
				policies = append(policies, fixed)
			case "adaptive":
				policies = append(policies, adaptive)
			case "both":
				policies = append(policies, fixed, adaptive)
			default:
				return fmt.Errorf("--policy %q is not one of fixed, adaptive, both", policy)
			}
			tr, err := LoadTrace(dir)
			if err != nil {
				return err
			}
			opts := Options{Seed: seed, Spread: Spread(spread)}
			var reports []Report
			for _, p := range policies {
				r, err := Run(tr, p, opts)
				if err != nil {
					return err
				}
				r.Policy = Label(p)
				reports = append(reports, r)
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "trace %s: %d functions, %d minutes; seed %d, %s spread\n\n",
				dir, len(tr.Functions), tr.Minutes, seed, opts.Spread)
			return Format(out, reports...)
		},
	}
	f := cmd.Flags()
	f.StringVar(&dir, "trace", "", "directory with invocations.csv, durations.csv and memory.csv")
	f.StringVar(&policy, "policy", "both", "fixed, adaptive or both")
	f.DurationVar(&keepAlive, "keep-alive", scheduler.DefaultKeepAlive, "keep-alive of the fixed policy")
	f.DurationVar(&fallback, "fallback", scheduler.DefaultKeepAlive, "keep-alive of the adaptive policy when its histogram is not representative (the paper: 4h)")
	f.IntVar(&minSamples, "min-samples", 10, "idle times the adaptive policy needs before trusting its histogram")
	f.Uint64Var(&seed, "seed", 1, "seed for start offsets within a minute and durations")
	f.StringVar(&spread, "spread", string(SpreadUniform), "placement of a minute's invocations: uniform (random) or even")
	return cmd
}

// Label names a policy with its main parameter, for report columns.
func Label(p scheduler.KeepAlivePolicy) string {
	switch p := p.(type) {
	case scheduler.FixedKeepAlive:
		return "fixed " + shortDuration(p.Decide(nil, 0).KeepAlive)
	case scheduler.HybridHistogram:
		fb := p.Fallback.KeepAlive
		if fb == 0 && p.Fallback.PrewarmAfter == 0 {
			fb = scheduler.DefaultKeepAlive
		}
		return "adaptive (fallback " + shortDuration(fb) + ")"
	}
	return p.Name()
}

// shortDuration formats d without trailing zero units: 10m, 4h, 1m30s.
func shortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}
