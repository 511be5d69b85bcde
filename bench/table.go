package bench

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
)

// WriteTable prints the report as an aligned table, one row per result
// with its error count and share, and each result's first error when it
// had any.
func (r *Report) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "target\tscenario\tmode\tconns\trequests\terrors\terr%\treq/s\tp50\tp90\tp99\tp99.9\tmax\t")
	for _, res := range r.Results {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%d\t%s\t%.0f\t%s\t%s\t%s\t%s\t%s\t\n",
			res.Label, res.Scenario, modeLabel(res), res.Connections, res.Requests, res.Errors, fmtPercent(res.errorShare()), res.Throughput,
			fmtMicros(res.Latency.P50), fmtMicros(res.Latency.P90), fmtMicros(res.Latency.P99),
			fmtMicros(res.Latency.P999), fmtMicros(res.Latency.Max))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	var notes []string
	for _, res := range r.Results {
		if res.FirstError != "" {
			notes = append(notes, fmt.Sprintf("%s: %d errors, first: %s (status codes %v)", res.Label, res.Errors, res.FirstError, res.StatusCodes))
		}
	}
	if len(notes) > 0 {
		_, err := io.WriteString(w, strings.Join(notes, "\n")+"\n")
		return err
	}
	return nil
}

func modeLabel(res *Result) string {
	if res.Mode == "open" {
		return fmt.Sprintf("open@%.0f/s", res.Rate)
	}
	return res.Mode
}
