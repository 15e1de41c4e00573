package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
)

func newInvokeCmd() *cobra.Command {
	var data string
	var logTail, async bool
	cmd := &cobra.Command{
		Use:   "invoke NAME [--data JSON | --data @FILE | --data @-] [--log-tail | --async]",
		Short: "Invoke a function and print its result",
		Long: "Invoke a function through the Lambda Invoke API and print its result on stdout.\n" +
			"The event is --data: JSON, @FILE to read a file, @- to read stdin (default {}).\n" +
			"When the function fails its error is printed on stderr and aloft exits with 1.\n" +
			"With --async the event is queued (an Event invocation) and its request id printed.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			payload, err := readData(data, cmd.InOrStdin())
			if err != nil {
				return err
			}
			client, err := clientFromEnv()
			if err != nil {
				return err
			}
			if async {
				if logTail {
					return errors.New("--log-tail cannot be used with --async")
				}
				res, err := client.Invoke(cmd.Context(), args[0], payload, InvokeOptions{InvocationType: "Event"})
				if err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "queued: request id %s\n", res.RequestID)
				return nil
			}
			res, err := client.Invoke(cmd.Context(), args[0], payload, InvokeOptions{LogTail: logTail})
			if err != nil {
				return err
			}
			if res.LogTail != "" {
				writeLine(cmd.ErrOrStderr(), []byte(res.LogTail))
			}
			if res.FunctionError != "" {
				writeLine(cmd.ErrOrStderr(), res.Payload)
				return fmt.Errorf("%w (%s)", ErrFunctionFailed, res.FunctionError)
			}
			writeLine(cmd.OutOrStdout(), res.Payload)
			return nil
		},
	}
	cmd.Flags().StringVarP(&data, "data", "d", "", "event: JSON, @FILE, or @- for stdin (default {})")
	cmd.Flags().BoolVar(&logTail, "log-tail", false, "print the end of the invocation's log on stderr")
	cmd.Flags().BoolVar(&async, "async", false, "queue the event (Event invocation) and print its request id")
	return cmd
}

// readData returns the event of --data: the JSON itself, a file's content
// for @FILE, stdin for @-, "{}" when empty. It must be JSON, as Lambda's.
func readData(data string, stdin io.Reader) ([]byte, error) {
	var payload []byte
	switch {
	case data == "":
		return []byte("{}"), nil
	case data == "@-":
		b, err := io.ReadAll(stdin)
		if err != nil {
			return nil, fmt.Errorf("cannot read the event from stdin: %w", err)
		}
		payload = b
	case strings.HasPrefix(data, "@"):
		b, err := os.ReadFile(data[1:])
		if err != nil {
			return nil, fmt.Errorf("cannot read the event: %w", err)
		}
		payload = b
	default:
		payload = []byte(data)
	}
	if !json.Valid(payload) {
		return nil, fmt.Errorf("the event given with --data is not valid JSON")
	}
	return payload, nil
}

// writeLine writes b, adding a newline when it does not end with one.
func writeLine(w io.Writer, b []byte) {
	w.Write(b)
	if len(b) > 0 && b[len(b)-1] != '\n' {
		io.WriteString(w, "\n")
	}
}

func newLsCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List the deployed functions",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			client, err := clientFromEnv()
			if err != nil {
				return err
			}
			fns, err := client.List(cmd.Context())
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tRUNTIME\tMEMORY\tTIMEOUT\tWARM\tBUSY\tPROV\tQUEUED\tOLDEST\tDLQ\tLAST MODIFIED\tURL")
			for _, fn := range fns {
				queued, oldest, dlq := "-", "-", "-"
				if q := fn.Queue; q != nil {
					queued, dlq = strconv.Itoa(q.Depth), strconv.Itoa(q.DeadLetters)
					if q.Depth > 0 {
						oldest = formatAge(q.OldestAgeSeconds)
					}
				}
				fmt.Fprintf(tw, "%s\t%s\t%d MB\t%d s\t%d\t%d\t%d\t%s\t%s\t%s\t%s\t%s\n", fn.Name, fn.Runtime, fn.Memory, fn.Timeout,
					fn.Instances.Warm, fn.Instances.Busy, fn.Instances.Provisioned, queued, oldest, dlq, fn.LastModified.Local().Format(time.DateTime), fn.URL)
			}
			return tw.Flush()
		},
	}
}

func newRmCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "rm NAME...",
		Aliases: []string{"delete"},
		Short:   "Remove functions (their logs and usage records stay)",
		Args:    cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			client, err := clientFromEnv()
			if err != nil {
				return err
			}
			for _, name := range args {
				if err := client.Delete(cmd.Context(), name); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "removed %s\n", name)
			}
			return nil
		},
	}
}

func newLogsCmd() *cobra.Command {
	var follow bool
	var since string
	cmd := &cobra.Command{
		Use:   "logs NAME [-f] [--since 10m]",
		Short: "Print a function's logs",
		Long: "Print a function's log lines (START, its output, END, REPORT). --since takes a\n" +
			"duration (90s, 10m, 2h) or an RFC 3339 time; -f keeps printing new lines.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			client, err := clientFromEnv()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			body, err := client.Logs(ctx, args[0], since, follow)
			if err != nil {
				return err
			}
			defer body.Close()
			_, err = io.Copy(cmd.OutOrStdout(), body)
			if err != nil && (ctx.Err() != nil || errors.Is(err, context.Canceled)) {
				return nil // interrupted while following
			}
			if err != nil {
				return fmt.Errorf("cannot read the logs: %w", err)
			}
			return nil
		},
	}
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing new log lines")
	cmd.Flags().StringVar(&since, "since", "", "only lines newer than a duration ago or an RFC 3339 time")
	return cmd
}

func newUsageCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "usage [NAME]",
		Short: "Print metered usage and its cost",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			client, err := clientFromEnv()
			if err != nil {
				return err
			}
			name := ""
			if len(args) == 1 {
				name = args[0]
			}
			u, err := client.Usage(cmd.Context(), name)
			if err != nil {
				return err
			}
			writeUsage(cmd.OutOrStdout(), u)
			return nil
		},
	}
}

func writeUsage(w io.Writer, u Usage) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	row := func(r UsageRow, name string) {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%.4f\t%.8f\t\n", name, r.Invocations, r.Errors, r.ColdStarts, r.Throttles, r.GBSeconds, r.CostUSD)
	}
	fmt.Fprintln(tw, "FUNCTION\tINVOCATIONS\tERRORS\tCOLD STARTS\tTHROTTLES\tGB-SECONDS\tCOST USD\t")
	for _, r := range u.Functions {
		row(r, r.Function)
	}
	row(u.Total, "TOTAL")
	tw.Flush()
	fmt.Fprintf(w, "prices: %s USD per GB-second, %s USD per million requests\n",
		strconv.FormatFloat(u.PricePerGBSecond, 'f', -1, 64), strconv.FormatFloat(u.PricePerMillionRequests, 'f', -1, 64))
}

func newStatusCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Print the server's isolation, driver and load",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			client, err := clientFromEnv()
			if err != nil {
				return err
			}
			s, err := client.Status(cmd.Context())
			if err != nil {
				return err
			}
			writeStatus(cmd.OutOrStdout(), client.BaseURL, s)
			return nil
		},
	}
}

func writeStatus(w io.Writer, url string, s Status) {
	iso := s.Isolation.Level
	if len(s.Isolation.Enabled) > 0 {
		iso += " (enabled: " + strings.Join(s.Isolation.Enabled, ", ") + ")"
	}
	tw := tabwriter.NewWriter(w, 0, 4, 1, ' ', 0)
	fmt.Fprintf(tw, "server:\t%s\n", url)
	fmt.Fprintf(tw, "version:\t%s\n", s.Version)
	fmt.Fprintf(tw, "data dir:\t%s\n", s.DataDir)
	fmt.Fprintf(tw, "isolation:\t%s\n", iso)
	if len(s.Isolation.Missing) > 0 {
		fmt.Fprintf(tw, "missing:\t%s\n", strings.Join(s.Isolation.Missing, ", "))
	}
	fmt.Fprintf(tw, "driver:\t%s\n", s.Driver)
	fmt.Fprintf(tw, "functions:\t%d\n", s.Functions)
	fmt.Fprintf(tw, "instances:\t%d warm, %d busy\n", s.Instances.Warm, s.Instances.Busy)
	tw.Flush()
}
