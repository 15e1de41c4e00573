package main

import (
	"fmt"
	"log/slog"
	"math"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/aloft-dev/aloft/internal/metering"
	"github.com/aloft-dev/aloft/internal/node"
	"github.com/aloft-dev/aloft/internal/worker"
)

func newUpCmd() *cobra.Command {
	cfg := node.Config{Version: version}
	var verbose bool
	cmd := &cobra.Command{
		Use:   "up",
		Short: "Run an all-in-one Aloft node in the foreground",
		Long: "Run an all-in-one Aloft node in the foreground: control plane, gateway and worker\n" +
			"in one process, with NATS JetStream embedded, all state under --data.\n" +
			"SIGINT or SIGTERM drains it gracefully.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			level := slog.LevelInfo
			if verbose {
				level = slog.LevelDebug
			}
			cfg.Logger = slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: level}))
			if cfg.Token == "" {
				cfg.Token = os.Getenv("ALOFT_TOKEN")
			}
			if err := checkUpFlags(cfg); err != nil {
				return err
			}
			if cfg.PoolSize == 0 {
				cfg.PoolSize = -1 // node.Config's zero value means the default
			}
			ctx := cmd.Context()
			n, err := node.Start(ctx, cfg)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			iso := n.Isolation()
			fmt.Fprintf(out, "aloft %s listening on %s\n", version, n.URL())
			fmt.Fprintf(out, "data: %s\n%s\n", n.DataDir(), n.TokenMessage())
			if iso.Level == "none" {
				fmt.Fprintf(out, "isolation: NONE — missing: %s\n", strings.Join(iso.Missing, ", "))
			} else {
				fmt.Fprintf(out, "isolation: %s (%s)\n", iso.Level, strings.Join(iso.Enabled, ", "))
			}
			<-ctx.Done()
			fmt.Fprintln(out, "draining… (interrupt again to quit at once)")
			forceQuitOnSignal()
			return n.Close()
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.DataDir, "data", ".aloft", "data directory (functions, code, logs, usage)")
	f.StringVar(&cfg.Listen, "listen", "127.0.0.1:8080", "HTTP listen address")
	f.DurationVar(&cfg.KeepAlive, "keep-alive", 10*time.Minute, "how long an idle instance stays warm")
	f.IntVar(&cfg.PoolSize, "pool-size", worker.DefaultPoolSize, "pre-started Node and Python instances per runtime for cold starts (0 disables)")
	f.IntVar(&cfg.MemoryMB, "memory", 0, "memory budget for instances, MB (default 80% of RAM)")
	f.DurationVar(&cfg.QueueTimeout, "queue-timeout", 10*time.Second, "how long an invocation waits for capacity before a 429")
	f.StringVar(&cfg.KeepAlivePolicy, "keep-alive-policy", "fixed", "fixed | adaptive (idle-time histogram, Shahrad et al. ATC'20)")
	f.IntVar(&cfg.AsyncConcurrency, "async-concurrency", 0, "asynchronous events of one function run at once (default 4)")
	f.DurationVar(&cfg.AsyncRetryBackoff, "async-retry-backoff", 0, "wait before retrying a failed asynchronous event; doubles for the second retry (default 1m, as Lambda)")
	f.StringVar(&cfg.Isolation, "isolation", "auto", "auto | required | none")
	f.DurationVar(&cfg.Grace, "grace", 30*time.Second, "how long shutdown waits for in-flight invocations")
	f.Float64Var(&cfg.Prices.PerGBSecond, "price-gb-second", metering.DefaultPricePerGBSecond, "price per GB-second, USD")
	f.Float64Var(&cfg.Prices.PerMillionRequest, "price-million-requests", metering.DefaultPricePerMillionRequest, "price per million requests, USD")
	f.StringVar(&cfg.NATSListen, "nats-listen", "", "also serve the embedded NATS on this address (default: in-process only)")
	f.BoolVarP(&verbose, "verbose", "v", false, "debug logging")
	return cmd
}

// forceQuitOnSignal exits at once on the next SIGINT or SIGTERM, for a user
// who does not want to wait for the drain.
func forceQuitOnSignal() {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		<-sig
		os.Exit(130)
	}()
}

// checkUpFlags refuses settings no node can run with: a negative size,
// duration or price, or no keep-alive at all.
func checkUpFlags(cfg node.Config) error {
	if cfg.KeepAlive <= 0 {
		return fmt.Errorf("--keep-alive %v: must be positive", cfg.KeepAlive)
	}
	price := func(p float64) bool { return p >= 0 && !math.IsInf(p, 1) } // false for NaN
	for _, c := range []struct {
		flag  string
		ok    bool
		value any
	}{
		{"queue-timeout", cfg.QueueTimeout >= 0, cfg.QueueTimeout},
		{"async-retry-backoff", cfg.AsyncRetryBackoff >= 0, cfg.AsyncRetryBackoff},
		{"grace", cfg.Grace >= 0, cfg.Grace},
		{"pool-size", cfg.PoolSize >= 0, cfg.PoolSize},
		{"memory", cfg.MemoryMB >= 0, cfg.MemoryMB},
		{"async-concurrency", cfg.AsyncConcurrency >= 0, cfg.AsyncConcurrency},
		{"price-gb-second", price(cfg.Prices.PerGBSecond), cfg.Prices.PerGBSecond},
		{"price-million-requests", price(cfg.Prices.PerMillionRequest), cfg.Prices.PerMillionRequest},
	} {
		if !c.ok {
			return fmt.Errorf("--%s %v: must be zero or more", c.flag, c.value)
		}
	}
	return nil
}
