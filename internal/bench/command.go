package bench

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"runtime/pprof"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

// NewCommand returns the "aloft bench" command.
func NewCommand() *cobra.Command {
	var (
		opts       Options
		runtimes   string
		conc       string
		asJSON     bool
		cpuProfile string
		verbose    bool
	)
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure invoke latency, throughput, cold starts, scaling and memory on a fresh node",
		Long: `Start a fresh in-process node (temporary data directory, random port) and
measure, over loopback HTTP with one keep-alive client:

  warm latency   p50/p99 of sequential invokes of an echo function per runtime,
                 next to the floor: a plain net/http server echoing the same payload;
                 also from a client in its own process, in rounds alternating
                 with the floor (--external-client)
  throughput     req/s at each --concurrency, floor and Go (--throughput-all: every runtime)
  cold start     p50/p99 of the first invoke after a deploy, request to response,
                 and the Init Duration the platform reports for it
  0→N scale      N concurrent invokes of a Go function with no instance, each
                 sleeping; the time until the last answered, minus the sleep
  idle memory    RSS (and PSS) of K idle instances' processes, plus the node's
                 own growth for them, per instance

With --isolation both, the figures are taken on a node without isolation and
then on one with the isolating sandbox (when the host allows), in the same run.
Each figure is printed with its target and PASS or MISS.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			for _, rt := range strings.Split(runtimes, ",") {
				if rt = strings.TrimSpace(rt); rt != "" {
					opts.Runtimes = append(opts.Runtimes, rt)
				}
			}
			for _, c := range strings.Split(conc, ",") {
				n, err := strconv.Atoi(strings.TrimSpace(c))
				if err != nil || n < 1 {
					return fmt.Errorf("--concurrency %q is not a list of positive numbers", conc)
				}
				opts.Concurrency = append(opts.Concurrency, n)
			}
			opts.Progress = cmd.ErrOrStderr()
			if verbose {
				opts.Logger = slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: slog.LevelWarn}))
			}
			if cpuProfile != "" {
				f, err := os.Create(cpuProfile)
				if err != nil {
					return fmt.Errorf("cannot create the CPU profile: %w", err)
				}
				defer f.Close()
				if err := pprof.StartCPUProfile(f); err != nil {
					return fmt.Errorf("cannot start the CPU profile: %w", err)
				}
				defer pprof.StopCPUProfile()
			}
			res, err := Run(cmd.Context(), opts)
			if err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(res)
			}
			return Format(cmd.OutOrStdout(), res)
		},
	}
	var external bool
	cmd.AddCommand(newClientCommand())
	cmd.PreRunE = func(*cobra.Command, []string) error {
		if external {
			exe, err := os.Executable()
			if err != nil {
				return fmt.Errorf("cannot find this program for the external client: %w", err)
			}
			opts.ExternalClient = []string{exe, "bench", "client"}
		}
		return nil
	}
	f := cmd.Flags()
	f.BoolVar(&external, "external-client", true, "also measure the floor's and each runtime's warm latency from a client in its own process, interleaved with the floor")
	f.DurationVar(&opts.Duration, "duration", 3*time.Second, "measuring time of each latency and throughput figure")
	f.StringVar(&runtimes, "runtimes", "go,node,python,raw", "runtimes to measure (raw: the Go function on a minimal hand-written Runtime API client instead of aws-lambda-go)")
	f.StringVar(&opts.Isolation, "isolation", "both", "both (unsandboxed, then isolated when the host allows), none, auto or required")
	f.IntVar(&opts.Cold, "cold", 20, "cold starts per runtime")
	f.StringVar(&conc, "concurrency", "1,16,64", "throughput concurrency levels")
	f.BoolVar(&opts.ThroughputAll, "throughput-all", false, "measure throughput for every runtime, not only Go")
	f.IntVar(&opts.Scale, "scale", 50, "instances of the 0→N scale test")
	f.DurationVar(&opts.ScaleSleep, "scale-sleep", 300*time.Millisecond, "how long each scale-test invocation runs")
	f.IntVar(&opts.Idle, "idle", 10, "idle instances per runtime for the memory figure")
	f.BoolVar(&asJSON, "json", false, "print the results as JSON instead of a table")
	f.StringVar(&cpuProfile, "cpuprofile", "", "write a CPU profile of the whole run (node included) to this file")
	f.BoolVar(&verbose, "verbose", false, "print the nodes' warnings")
	return cmd
}

// newClientCommand is "aloft bench client", the external client the bench
// runs as a process of its own.
func newClientCommand() *cobra.Command {
	var (
		url      string
		duration time.Duration
	)
	cmd := &cobra.Command{
		Use:    "client",
		Short:  "Measure sequential warm latency of one URL (run by aloft bench)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return ClientMain(cmd.Context(), cmd.OutOrStdout(), url, duration)
		},
	}
	cmd.Flags().StringVar(&url, "url", "", "the URL to POST the bench payload to")
	cmd.Flags().DurationVar(&duration, "duration", 3*time.Second, "measuring time")
	return cmd
}
