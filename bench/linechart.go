package bench

// LineChart is the exported face of the package's line chart, for benches
// in sub-packages (bench/fleet) that plot their own series: one chart
// renderer for every pennon plot, so they all look and read alike.
type LineChart struct {
	Title, Subtitle string
	XLabel, YLabel  string
	Lines           []Line
	// YLog draws the y axis in powers of ten; use it for latencies and
	// delays, which span decades.
	YLog bool
}

// Line is one named series; Xs and Ys have the same length.
type Line struct {
	Name   string
	Xs, Ys []float64
}

// WritePNG renders the chart at the package's plot size into path.
func (c LineChart) WritePNG(path string) error {
	ch := &chart{title: c.Title, subtitle: c.Subtitle, xLabel: c.XLabel, yLabel: c.YLabel, yLog: c.YLog}
	for _, l := range c.Lines {
		n := min(len(l.Xs), len(l.Ys))
		ch.series = append(ch.series, series{name: l.Name, xs: l.Xs[:n], ys: l.Ys[:n]})
	}
	return writePNG(path, ch)
}
