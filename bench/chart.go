package bench

import (
	"image"
	"image/color"
	"image/draw"
	"math"
	"strconv"

	"golang.org/x/image/font"
	"golang.org/x/image/font/basicfont"
	"golang.org/x/image/math/fixed"
)

// chart is a minimal line chart: enough to read a latency curve or a time
// series without a plotting library (gonum/plot would add a large
// dependency tree for three plots). Text uses the 7×13 X11 fixed font.
type chart struct {
	title    string
	subtitle string // load shape, under the title
	xLabel   string
	yLabel   string
	series   []series
	// xTicks, when set, replaces the automatic x ticks (the percentile
	// curve labels its "nines" axis itself).
	xTicks []tick
	xMin   float64 // x range; xMax 0 means "from the data"
	xMax   float64
	// yLog draws the y axis in powers of ten. Latency spans decades (a
	// 40 µs median under a 20 ms tail): on a linear axis the tail flattens
	// everything else into the floor line. Values ≤ 0 sit on the floor.
	yLog bool
}

type series struct {
	name   string
	xs, ys []float64
}

type tick struct {
	v     float64
	label string
}

var (
	colWhite = color.RGBA{255, 255, 255, 255}
	colAxis  = color.RGBA{40, 40, 40, 255}
	colGrid  = color.RGBA{225, 225, 225, 255}
	colText  = color.RGBA{20, 20, 20, 255}
	// palette is distinguishable for common colour-vision deficiencies (Okabe–Ito).
	palette = []color.RGBA{
		{0, 114, 178, 255}, {213, 94, 0, 255}, {0, 158, 115, 255},
		{204, 121, 167, 255}, {230, 159, 0, 255}, {86, 180, 233, 255}, {0, 0, 0, 255},
	}
)

// render draws the chart at w×h pixels.
func (c *chart) render(w, h int) *image.RGBA {
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	draw.Draw(img, img.Bounds(), image.NewUniform(colWhite), image.Point{}, draw.Src)
	const left, right, top, bottom = 80, 30, 60, 60
	plot := image.Rect(left, top, w-right, h-bottom)

	xmin, xmax, ymax := c.xMin, c.xMax, 0.0
	for _, s := range c.series {
		for i := range s.xs {
			if c.xMax == 0 {
				xmax = math.Max(xmax, s.xs[i])
			}
			ymax = math.Max(ymax, s.ys[i])
		}
	}
	if xmax <= xmin {
		xmax = xmin + 1
	}
	px := func(x float64) int { return plot.Min.X + int(math.Round((x-xmin)/(xmax-xmin)*float64(plot.Dx()))) }
	yAxis := c.linearY(ymax)
	if c.yLog {
		yAxis = c.logY()
	}
	py := func(y float64) int { return plot.Max.Y - int(math.Round(yAxis.frac(y)*float64(plot.Dy()))) }

	// Grid and y ticks.
	for _, t := range yAxis.ticks {
		yy := py(t.v)
		hline(img, plot.Min.X, plot.Max.X, yy, colGrid)
		drawText(img, plot.Min.X-8-textWidth(t.label), yy+4, t.label, colText, 1)
	}
	xt := c.xTicks
	if xt == nil {
		step := niceStep((xmax - xmin) / 8)
		for x := math.Ceil(xmin/step) * step; x <= xmax*1.0001; x += step {
			xt = append(xt, tick{x, fmtTick(x)})
		}
	}
	for _, t := range xt {
		xx := px(t.v)
		vline(img, xx, plot.Min.Y, plot.Max.Y, colGrid)
		drawText(img, xx-textWidth(t.label)/2, plot.Max.Y+18, t.label, colText, 1)
	}
	// Axes.
	hline(img, plot.Min.X, plot.Max.X, plot.Max.Y, colAxis)
	vline(img, plot.Min.X, plot.Min.Y, plot.Max.Y, colAxis)

	for i, s := range c.series {
		col := palette[i%len(palette)]
		for j := 1; j < len(s.xs); j++ {
			thickLine(img, px(s.xs[j-1]), py(s.ys[j-1]), px(s.xs[j]), py(s.ys[j]), col)
		}
		if len(s.xs) == 1 {
			thickLine(img, px(s.xs[0])-3, py(s.ys[0]), px(s.xs[0])+3, py(s.ys[0]), col)
		}
	}

	scale := 2
	if textWidth(c.title)*2 > w-left-right {
		scale = 1 // a long title at 1× rather than cut off
	}
	drawText(img, left, 28, c.title, colText, scale)
	drawText(img, left, 44, c.subtitle, colText, 1)
	drawText(img, 10, top-6, c.yLabel, colText, 1)
	drawText(img, plot.Min.X+plot.Dx()/2-textWidth(c.xLabel)/2, h-15, c.xLabel, colText, 1)
	// Legend, top-left inside the plot, on a white box so lines never hide it.
	lw := 0
	for _, s := range c.series {
		lw = max(lw, textWidth(s.name))
	}
	box := image.Rect(plot.Min.X+10, plot.Min.Y+8, plot.Min.X+10+lw+44, plot.Min.Y+14+18*len(c.series))
	draw.Draw(img, box, image.NewUniform(colWhite), image.Point{}, draw.Src)
	for i, s := range c.series {
		y := plot.Min.Y + 20 + 18*i
		col := palette[i%len(palette)]
		thickLine(img, box.Min.X+6, y-4, box.Min.X+30, y-4, col)
		drawText(img, box.Min.X+36, y, s.name, colText, 1)
	}
	return img
}

// yScale maps a value to its height in the plot (0 bottom, 1 top) and
// lists the ticks to label.
type yScale struct {
	frac  func(y float64) float64
	ticks []tick
}

// linearY is 0..ymax rounded up to a nice step, five or so ticks.
func (c *chart) linearY(ymax float64) yScale {
	step := niceStep(ymax / 5)
	top := math.Max(step, math.Ceil(ymax/step)*step)
	var ticks []tick
	for y := 0.0; y <= top*1.0001; y += step {
		ticks = append(ticks, tick{y, fmtTick(y)})
	}
	return yScale{frac: func(y float64) float64 { return y / top }, ticks: ticks}
}

// logY spans the decades around the positive data: ticks at 1, 2 and 5 ×
// each power of ten while there are few decades, at powers of ten only
// when there are many.
func (c *chart) logY() yScale {
	lo, hi := math.Inf(1), 0.0
	for _, s := range c.series {
		for _, y := range s.ys {
			if y > 0 {
				lo, hi = math.Min(lo, y), math.Max(hi, y)
			}
		}
	}
	if hi == 0 {
		lo, hi = 1, 10
	}
	dlo, dhi := math.Floor(math.Log10(lo)), math.Ceil(math.Log10(hi))
	if dhi <= dlo {
		dhi = dlo + 1
	}
	frac := func(y float64) float64 {
		if y <= 0 {
			return 0
		}
		return math.Max(0, (math.Log10(y)-dlo)/(dhi-dlo))
	}
	mults := []float64{1, 2, 5}
	if dhi-dlo > 3 {
		mults = []float64{1}
	}
	var ticks []tick
	for d := dlo; d <= dhi; d++ {
		for _, m := range mults {
			if v := m * math.Pow(10, d); d < dhi || m == 1 {
				ticks = append(ticks, tick{v, fmtTick(v)})
			}
		}
	}
	return yScale{frac: frac, ticks: ticks}
}

// niceStep rounds a raw step up to 1, 2 or 5 × a power of ten.
func niceStep(raw float64) float64 {
	if raw <= 0 || math.IsNaN(raw) || math.IsInf(raw, 0) {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(raw)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= raw {
			return m * p
		}
	}
	return 10 * p
}

func fmtTick(v float64) string {
	switch {
	case v >= 1e6:
		return strconv.FormatFloat(v/1e6, 'g', 4, 64) + "M"
	case v >= 1e4:
		return strconv.FormatFloat(v/1e3, 'g', 4, 64) + "k"
	default:
		return strconv.FormatFloat(v, 'g', 4, 64)
	}
}

func hline(img *image.RGBA, x0, x1, y int, c color.RGBA) {
	for x := x0; x <= x1; x++ {
		img.SetRGBA(x, y, c)
	}
}

func vline(img *image.RGBA, x, y0, y1 int, c color.RGBA) {
	for y := y0; y <= y1; y++ {
		img.SetRGBA(x, y, c)
	}
}

// thickLine draws a 2-pixel Bresenham line.
func thickLine(img *image.RGBA, x0, y0, x1, y1 int, c color.RGBA) {
	dx, dy := abs(x1-x0), -abs(y1-y0)
	sx, sy := sign(x1-x0), sign(y1-y0)
	e := dx + dy
	for {
		img.SetRGBA(x0, y0, c)
		img.SetRGBA(x0+1, y0, c)
		img.SetRGBA(x0, y0+1, c)
		if x0 == x1 && y0 == y1 {
			return
		}
		if e2 := 2 * e; e2 >= dy {
			e += dy
			x0 += sx
		} else {
			e += dx
			y0 += sy
		}
	}
}

func abs(v int) int {
	if v < 0 {
		return -v
	}
	return v
}

func sign(v int) int {
	switch {
	case v < 0:
		return -1
	case v > 0:
		return 1
	}
	return 0
}

func textWidth(s string) int { return font.MeasureString(basicfont.Face7x13, s).Round() }

// drawText draws s with its baseline at y, scaled by an integer factor
// (titles at 2×, everything else at 1×).
func drawText(img *image.RGBA, x, y int, s string, c color.RGBA, scale int) {
	if scale <= 1 {
		d := font.Drawer{Dst: img, Src: image.NewUniform(c), Face: basicfont.Face7x13, Dot: fixed.P(x, y)}
		d.DrawString(s)
		return
	}
	w := textWidth(s)
	tmp := image.NewRGBA(image.Rect(0, 0, w, 13))
	d := font.Drawer{Dst: tmp, Src: image.NewUniform(c), Face: basicfont.Face7x13, Dot: fixed.P(0, 11)}
	d.DrawString(s)
	for ty := 0; ty < 13; ty++ {
		for tx := 0; tx < w; tx++ {
			if tmp.RGBAAt(tx, ty).A == 0 {
				continue
			}
			for sy := 0; sy < scale; sy++ {
				for sx := 0; sx < scale; sx++ {
					img.SetRGBA(x+tx*scale+sx, y-11*scale+ty*scale+sy, c)
				}
			}
		}
	}
}
