package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
)

// QueueState is a function's asynchronous queue as the API shows it.
type QueueState struct {
	Depth            int     `json:"depth"`
	OldestAgeSeconds float64 `json:"oldest_age_seconds"`
	DeadLetters      int     `json:"dead_letters"`
}

// DeadLetter is a failed asynchronous event kept in a function's
// dead-letter stream.
type DeadLetter struct {
	ID        string    `json:"id"`
	Function  string    `json:"function"`
	Condition string    `json:"condition"`
	Time      time.Time `json:"time"`
	Attempts  int       `json:"attempts"`
	// Record is Lambda's destination record (requestContext,
	// requestPayload, responseContext, responsePayload).
	Record json.RawMessage `json:"record"`
}

func dlqPath(name string) string { return "/v1/functions/" + url.PathEscape(name) + "/dlq" }

// DeadLetters lists a function's dead letters, oldest first.
func (c *Client) DeadLetters(ctx context.Context, name string) ([]DeadLetter, error) {
	var out struct {
		DeadLetters []DeadLetter `json:"dead_letters"`
	}
	err := c.getJSON(ctx, dlqPath(name), &out)
	return out.DeadLetters, err
}

// DeadLetter returns one dead letter by id.
func (c *Client) DeadLetter(ctx context.Context, name, id string) (DeadLetter, error) {
	var dl DeadLetter
	err := c.getJSON(ctx, dlqPath(name)+"/"+url.PathEscape(id), &dl)
	return dl, err
}

// ReplayDeadLetters enqueues dead letters again (ids empty: all) and returns
// the new request ids.
func (c *Client) ReplayDeadLetters(ctx context.Context, name string, ids []string) ([]string, error) {
	if ids == nil {
		ids = []string{}
	}
	body, _ := json.Marshal(map[string][]string{"ids": ids})
	req, err := c.newRequest(ctx, http.MethodPost, dlqPath(name)+"/replay", bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	var out struct {
		RequestIDs []string `json:"request_ids"`
	}
	err = c.doJSON(req, &out)
	return out.RequestIDs, err
}

// PurgeDeadLetters removes every dead letter of a function and returns how
// many there were.
func (c *Client) PurgeDeadLetters(ctx context.Context, name string) (int, error) {
	req, err := c.newRequest(ctx, http.MethodDelete, dlqPath(name), nil)
	if err != nil {
		return 0, err
	}
	var out struct {
		Purged int `json:"purged"`
	}
	err = c.doJSON(req, &out)
	return out.Purged, err
}

func newDLQCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "dlq",
		Short: "Inspect, replay and purge a function's failed asynchronous events",
		Long: "A function's asynchronous events that failed every attempt, or grew older than its\n" +
			"maximum_event_age, land in its dead-letter stream unless it has an on_failure destination.",
	}
	cmd.AddCommand(
		&cobra.Command{
			Use:   "ls NAME",
			Short: "List a function's dead letters",
			Args:  cobra.ExactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				client, err := clientFromEnv()
				if err != nil {
					return err
				}
				dls, err := client.DeadLetters(cmd.Context(), args[0])
				if err != nil {
					return err
				}
				tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "ID\tCONDITION\tATTEMPTS\tTIME\tERROR")
				for _, dl := range dls {
					fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\n", dl.ID, dl.Condition, dl.Attempts,
						dl.Time.Local().Format(time.DateTime), errorOf(dl.Record))
				}
				return tw.Flush()
			},
		},
		&cobra.Command{
			Use:   "show NAME ID",
			Short: "Print one dead letter's record as JSON",
			Args:  cobra.ExactArgs(2),
			RunE: func(cmd *cobra.Command, args []string) error {
				client, err := clientFromEnv()
				if err != nil {
					return err
				}
				dl, err := client.DeadLetter(cmd.Context(), args[0], args[1])
				if err != nil {
					return err
				}
				var out bytes.Buffer
				if err := json.Indent(&out, dl.Record, "", "  "); err != nil {
					out.Reset()
					out.Write(dl.Record)
				}
				writeLine(cmd.OutOrStdout(), out.Bytes())
				return nil
			},
		},
		&cobra.Command{
			Use:   "replay NAME [ID...]",
			Short: "Enqueue dead letters again (all of them without IDs)",
			Args:  cobra.MinimumNArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				client, err := clientFromEnv()
				if err != nil {
					return err
				}
				ids, err := client.ReplayDeadLetters(cmd.Context(), args[0], args[1:])
				if err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "replayed %d event(s)\n", len(ids))
				for _, id := range ids {
					fmt.Fprintf(cmd.OutOrStdout(), "  request id %s\n", id)
				}
				return nil
			},
		},
		&cobra.Command{
			Use:   "purge NAME",
			Short: "Remove every dead letter of a function",
			Args:  cobra.ExactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				client, err := clientFromEnv()
				if err != nil {
					return err
				}
				n, err := client.PurgeDeadLetters(cmd.Context(), args[0])
				if err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "purged %d dead letter(s)\n", n)
				return nil
			},
		},
	)
	return cmd
}

// errorOf returns the error message in a destination record, if any.
func errorOf(record json.RawMessage) string {
	var r struct {
		RequestContext struct {
			Condition string `json:"condition"`
		} `json:"requestContext"`
		ResponsePayload struct {
			ErrorMessage string `json:"errorMessage"`
		} `json:"responsePayload"`
	}
	json.Unmarshal(record, &r)
	return r.ResponsePayload.ErrorMessage
}

// formatAge prints an age in seconds compactly: 0s, 42s, 3m, 5h.
func formatAge(sec float64) string {
	d := time.Duration(sec * float64(time.Second))
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	default:
		return fmt.Sprintf("%dh", int(d.Hours()))
	}
}
