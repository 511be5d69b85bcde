package stats

import (
	"math"
	"testing"
)

func near(t *testing.T, what string, got, want, tol float64) {
	t.Helper()
	if math.IsNaN(got) || math.Abs(got-want) > tol {
		t.Errorf("%s = %.6g, want %.6g (±%g)", what, got, want, tol)
	}
}

// Newcombe (1998), "Two-sided confidence intervals for the single
// proportion: comparison of seven methods", Statistics in Medicine 17,
// table II, Wilson score method.
func TestProportionWilsonNewcombe(t *testing.T) {
	for _, tc := range []struct {
		x, n      uint64
		low, high float64
	}{
		{81, 263, 0.2553, 0.3662},
		{15, 148, 0.0624, 0.1605},
		{0, 20, 0, 0.1611},
		{1, 29, 0.0061, 0.1718},
	} {
		got := Proportion(tc.x, tc.n)
		near(t, "low", got.Low, tc.low, 0.00006)
		near(t, "high", got.High, tc.high, 0.00006)
		near(t, "estimate", got.Estimate, float64(tc.x)/float64(tc.n), 1e-12)
	}
	if got := Proportion(0, 0); !math.IsNaN(got.Estimate) {
		t.Errorf("no units: %+v, want NaN", got)
	}
}

func moments(xs []float64) Moments {
	var m Moments
	for _, x := range xs {
		m.N++
		m.Sum += x
		m.SumSq += x * x
	}
	return m
}

// Wikipedia, "Welch's t-test", examples 1 and 3: Welch's t, its degrees of
// freedom and two-sided p-value as published.
func TestWelchWikipediaExamples(t *testing.T) {
	for _, tc := range []struct {
		name       string
		a1, a2     []float64
		t, df, p   float64
		dfTol, pTo float64
	}{
		{"example 1",
			[]float64{27.5, 21.0, 19.0, 23.6, 17.0, 17.9, 16.9, 20.1, 21.9, 22.6, 23.1, 19.6, 19.0, 21.7, 21.4},
			[]float64{27.1, 22.0, 20.8, 23.4, 23.4, 23.5, 25.8, 22.0, 24.8, 20.2, 21.9, 22.1, 22.9, 20.5, 24.4},
			2.46, 25.0, 0.021, 0.05, 0.0006},
		{"example 3",
			[]float64{17.2, 20.9, 22.6, 18.1, 21.7, 21.4, 23.5, 24.2, 14.7, 21.8},
			[]float64{21.5, 22.8, 21.0, 23.0, 21.6, 23.6, 22.5, 20.7, 23.4, 21.8, 20.7, 21.7, 21.5, 22.5, 23.6, 21.5, 22.5, 23.5, 21.5, 21.8},
			1.57, 9.9, 0.149, 0.05, 0.0006},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Control a1, treatment a2: the treatment is higher, t > 0.
			got := Welch(moments(tc.a1), moments(tc.a2))
			near(t, "t", got.Statistic, tc.t, 0.005)
			near(t, "df", got.DF, tc.df, tc.dfTol)
			near(t, "p", got.P, tc.p, tc.pTo)
			if !got.Difference.Contains(got.Difference.Estimate) || (got.P < 0.05) == got.Difference.Contains(0) {
				t.Errorf("difference interval %+v disagrees with p %.3f", got.Difference, got.P)
			}
		})
	}
}

// Two-proportion z-tests with published statistics: 140/200 vs 255/340
// (z = −1.266015; the source's p used a t distribution, so the p-value is
// checked against the standard normal table instead: Φ(1.26) = 0.8962,
// Φ(1.27) = 0.8980) and 28/254 vs 36/301 (z = −0.344, two-tailed p =
// 0.7307, computed there from rounded proportions).
func TestTwoProportionsPublished(t *testing.T) {
	got := TwoProportions(255, 340, 140, 200) // control 255/340, treatment 140/200
	near(t, "z", got.Statistic, -1.266015, 0.00001)
	if got.P <= 2*(1-0.8980) || got.P >= 2*(1-0.8962) {
		t.Errorf("p = %g, outside the normal table's bracket", got.P)
	}
	if got.Significant {
		t.Error("not significant at 5 %")
	}
	got = TwoProportions(36, 301, 28, 254)
	near(t, "z", got.Statistic, -0.344, 0.005)
	near(t, "p", got.P, 0.7307, 0.005)

	// Lift: 12 % vs 10 % on large samples is +20 % with an interval around
	// it that excludes 0.
	got = TwoProportions(10000, 100000, 12000, 100000)
	near(t, "lift", got.Lift.Estimate, 0.2, 1e-9)
	if !got.Significant || got.Lift.Low <= 0 || got.Lift.High <= 0.2 || !got.Lift.Contains(0.2) {
		t.Errorf("lift %+v, p %g", got.Lift, got.P)
	}
	if got := TwoProportions(0, 0, 1, 10); !math.IsNaN(got.P) {
		t.Errorf("empty control: %+v", got)
	}
}

// Mendel's dihybrid cross (315, 108, 101, 32 against 9:3:3:1): the
// textbook goodness-of-fit example, χ² = 0.470 with 3 df, p = 0.925.
func TestSampleRatioMendel(t *testing.T) {
	got := SampleRatio([]uint64{315, 108, 101, 32}, []float64{9, 3, 3, 1})
	near(t, "chi2", got.ChiSquare, 0.470, 0.0005)
	near(t, "p", got.P, 0.925, 0.0005)
	if got.DF != 3 || got.Mismatch {
		t.Errorf("%+v", got)
	}
	// A 50/50 split that delivered 50,000 vs 51,000 units: χ² = 9.90,
	// p = 0.00165 — suspicious, not yet past the strict threshold; at
	// 50,000 vs 52,000 it is.
	got = SampleRatio([]uint64{50000, 51000}, []float64{1, 1})
	near(t, "chi2", got.ChiSquare, 9.901, 0.001)
	near(t, "p", got.P, 0.00165, 0.00002)
	if got.Mismatch {
		t.Errorf("flagged at p=%g", got.P)
	}
	if got = SampleRatio([]uint64{50000, 52000}, []float64{50, 50}); !got.Mismatch {
		t.Errorf("not flagged: %+v", got)
	}
	if got = SampleRatio([]uint64{10, 5}, []float64{1, 0}); !got.Mismatch {
		t.Errorf("units in a variant with weight 0 must be a mismatch: %+v", got)
	}
}

func TestMeanInterval(t *testing.T) {
	m := moments([]float64{2, 4, 4, 4, 5, 5, 7, 9})
	near(t, "mean", m.Mean(), 5, 1e-12)
	near(t, "variance", m.Variance(), 32.0/7, 1e-12)
	iv := MeanInterval(m)
	// t(0.975, 7) = 2.364624
	half := 2.364624 * math.Sqrt(32.0/7/8)
	near(t, "low", iv.Low, 5-half, 1e-5)
	near(t, "high", iv.High, 5+half, 1e-5)
}

func FuzzStatsNeverPanic(f *testing.F) {
	f.Add(uint64(1), uint64(2), uint64(3), uint64(4), 1.5, 2.5)
	f.Fuzz(func(t *testing.T, a, b, c, d uint64, s, q float64) {
		_ = Proportion(a%(b+1), b)
		_ = TwoProportions(a%(b+1), b, c%(d+1), d)
		_ = Welch(Moments{N: a % 1000, Sum: s, SumSq: q}, Moments{N: c % 1000, Sum: q, SumSq: s})
		_ = SampleRatio([]uint64{a, b, c}, []float64{1, float64(d % 3), 2})
	})
}
