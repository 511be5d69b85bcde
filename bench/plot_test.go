package bench

import (
	"context"
	"image"
	_ "image/png"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestWritePlots(t *testing.T) {
	bare, err := StartBare()
	if err != nil {
		t.Fatal(err)
	}
	defer bare.Close()
	tg, _ := startResponder(t, false)
	sc, _ := NewScenario("mix", FlagKeys{})
	rep := NewReport(time.Now())
	for _, target := range []*Target{bare, tg} {
		res, err := Run(context.Background(), Options{URL: target.URL, Label: target.Label, Scenario: sc, Connections: 2, Requests: 300, Headers: []string{"X-Api-Key: secret"}})
		if err != nil {
			t.Fatal(err)
		}
		rep.Results = append(rep.Results, res)
	}
	dir := filepath.Join(t.TempDir(), "plots")
	paths, err := rep.WritePlots(dir)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"mix-latency.png", "mix-throughput.png", "mix-p99.png", "mix-errors.png"}
	if len(paths) != len(want) {
		t.Fatalf("paths %v, want %v", paths, want)
	}
	for i, p := range paths {
		if filepath.Base(p) != want[i] {
			t.Errorf("plot %d is %s, want %s", i, filepath.Base(p), want[i])
		}
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		img, format, err := image.Decode(f)
		f.Close()
		if err != nil || format != "png" {
			t.Fatalf("%s: decode %q: %v", p, format, err)
		}
		if b := img.Bounds(); b.Dx() != plotW || b.Dy() != plotH {
			t.Errorf("%s: %v, want %dx%d", p, b, plotW, plotH)
		}
		// Something besides the white background must have been drawn in
		// each series' colour.
		for s := range rep.Results {
			if !hasColour(img, palette[s]) {
				t.Errorf("%s: no pixel in series %d's colour", p, s)
			}
		}
	}
	if _, err := (&Report{}).WritePlots(dir); err == nil {
		t.Error("empty report: want an error")
	}
}

func hasColour(img image.Image, c interface{ RGBA() (r, g, b, a uint32) }) bool {
	wr, wg, wb, _ := c.RGBA()
	b := img.Bounds()
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			r, g, bb, _ := img.At(x, y).RGBA()
			if r == wr && g == wg && bb == wb {
				return true
			}
		}
	}
	return false
}

func TestNiceStep(t *testing.T) {
	tests := []struct{ raw, want float64 }{{0.3, 0.5}, {1, 1}, {1.5, 2}, {3, 5}, {7, 10}, {120, 200}, {0, 1}}
	for _, tc := range tests {
		if got := niceStep(tc.raw); got != tc.want {
			t.Errorf("niceStep(%v) = %v, want %v", tc.raw, got, tc.want)
		}
	}
}

// TestLogYAxis: latency plots span the decades around their data, with
// 1-2-5 ticks over few decades and powers of ten over many.
func TestLogYAxis(t *testing.T) {
	tests := []struct {
		name      string
		ys        []float64
		ticks     string
		fracs     map[float64]float64
		wantFloor float64 // a value that must sit on the floor (frac 0)
	}{
		{"four decades", []float64{40, 900, 20000}, "10 100 1000 10k 100k", map[float64]float64{10: 0, 1000: 0.5, 100000: 1}, -1},
		{"two decades", []float64{3, 80}, "1 2 5 10 20 50 100", map[float64]float64{1: 0, 10: 0.5, 100: 1}, 0},
		{"one value", []float64{250}, "100 200 500 1000", map[float64]float64{100: 0, 1000: 1}, 0},
		{"nothing positive", []float64{0, 0}, "1 2 5 10", map[float64]float64{1: 0, 10: 1}, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := &chart{yLog: true, series: []series{{name: "a", xs: make([]float64, len(tc.ys)), ys: tc.ys}}}
			sc := c.logY()
			var got []string
			for _, tk := range sc.ticks {
				got = append(got, tk.label)
			}
			if s := strings.Join(got, " "); s != tc.ticks {
				t.Errorf("ticks %q, want %q", s, tc.ticks)
			}
			for v, want := range tc.fracs {
				if f := sc.frac(v); math.Abs(f-want) > 1e-9 {
					t.Errorf("frac(%v) = %v, want %v", v, f, want)
				}
			}
			if f := sc.frac(tc.wantFloor); f != 0 {
				t.Errorf("frac(%v) = %v, want the floor", tc.wantFloor, f)
			}
		})
	}
}
