package sim

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/aloft-dev/aloft/internal/scheduler"
)

// Format writes reports side by side, one column per policy. Relative idle
// memory is against the first report.
func Format(w io.Writer, reports ...Report) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	row := func(name string, cell func(Report) string) {
		cells := make([]string, len(reports))
		for i, r := range reports {
			cells[i] = cell(r)
		}
		fmt.Fprintf(tw, "%-28s\t%s\t\n", name, strings.Join(cells, "\t"))
	}
	row("policy", func(r Report) string { return r.Policy })
	row("functions", func(r Report) string { return fmt.Sprint(len(r.Functions)) })
	row("invocations", func(r Report) string { return fmt.Sprint(r.Invocations) })
	row("cold starts", func(r Report) string { return fmt.Sprint(r.ColdStarts) })
	row("  of which concurrent", func(r Report) string { return fmt.Sprint(r.ConcurrentColdStarts) })
	row("  of which function idle", func(r Report) string { return fmt.Sprint(r.ColdStarts - r.ConcurrentColdStarts) })
	row("cold-start %", func(r Report) string { return fmt.Sprintf("%.2f", r.ColdStartPercent()) })
	for _, p := range []float64{50, 75, 90} {
		row(fmt.Sprintf("function cold-start %% p%g", p), func(r Report) string {
			return fmt.Sprintf("%.1f", r.FunctionColdStartPercentile(p))
		})
	}
	row("pre-warm loads", func(r Report) string { return fmt.Sprint(r.Prewarms) })
	row("idle instance-hours", func(r Report) string { return fmt.Sprintf("%.1f", r.IdleTime.Hours()) })
	row("idle memory GB-s", func(r Report) string { return fmt.Sprintf("%.0f", r.IdleGBSeconds) })
	if len(reports) > 1 && reports[0].IdleGBSeconds > 0 {
		row("idle memory vs "+reports[0].Policy, func(r Report) string {
			return fmt.Sprintf("%.0f%%", 100*r.IdleGBSeconds/reports[0].IdleGBSeconds)
		})
	}
	row("functions predicted at end", func(r Report) string {
		n := 0
		for _, f := range r.Functions {
			if f.LastReason == scheduler.ReasonHistogram {
				n++
			}
		}
		return fmt.Sprint(n)
	})
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("cannot write report: %w", err)
	}
	return nil
}
