// Package stats holds the statistics of pennon's experiment reports:
// intervals for conversion rates and means, the two-proportion z-test and
// Welch's t-test for a treatment against its control, and the chi-square
// goodness-of-fit test that detects a sample-ratio mismatch. Distributions
// come from gonum (distuv) rather than hand-written approximations.
//
// Everything works from streaming aggregates (counts, sums, sums of
// squares), because that is all a sidecar keeps.
package stats

import (
	"encoding/json"
	"math"
	"strconv"

	"gonum.org/v1/gonum/stat/distuv"
)

// Confidence is the level of every interval and the test threshold: 95 %.
const Confidence = 0.95

var stdNormal = distuv.Normal{Mu: 0, Sigma: 1}

// zCrit is the two-sided critical value of the standard normal at Confidence
// (1.959964…).
var zCrit = stdNormal.Quantile(1 - (1-Confidence)/2)

// Interval is a two-sided confidence interval around an estimate.
type Interval struct {
	Estimate float64 `json:"estimate"`
	Low      float64 `json:"low"`
	High     float64 `json:"high"`
}

// Contains reports whether x lies in the interval.
func (i Interval) Contains(x float64) bool { return x >= i.Low && x <= i.High }

// Proportion is the conversion rate successes/n with a Wilson score
// interval, which (unlike the textbook normal interval) stays inside [0, 1]
// and keeps its coverage for small samples and rates near 0 or 1.
func Proportion(successes, n uint64) Interval {
	if n == 0 {
		return Interval{Estimate: math.NaN(), Low: math.NaN(), High: math.NaN()}
	}
	p := float64(successes) / float64(n)
	nf := float64(n)
	z2 := zCrit * zCrit
	den := 1 + z2/nf
	center := (p + z2/(2*nf)) / den
	half := zCrit * math.Sqrt(p*(1-p)/nf+z2/(4*nf*nf)) / den
	return Interval{Estimate: p, Low: math.Max(0, center-half), High: math.Min(1, center+half)}
}

// Moments summarises a sample as a sidecar streams it.
type Moments struct {
	N     uint64  `json:"n"`
	Sum   float64 `json:"sum"`
	SumSq float64 `json:"sumSq"`
}

// Mean is the sample mean.
func (m Moments) Mean() float64 {
	if m.N == 0 {
		return math.NaN()
	}
	return m.Sum / float64(m.N)
}

// Variance is the unbiased sample variance (NaN below two observations).
// It is computed from the sums, clamped at zero against rounding.
func (m Moments) Variance() float64 {
	if m.N < 2 {
		return math.NaN()
	}
	n := float64(m.N)
	v := (m.SumSq - m.Sum*m.Sum/n) / (n - 1)
	return math.Max(0, v)
}

// MeanInterval is the mean with a Student's t interval.
func MeanInterval(m Moments) Interval {
	mean := m.Mean()
	if m.N < 2 {
		return Interval{Estimate: mean, Low: math.NaN(), High: math.NaN()}
	}
	t := distuv.StudentsT{Mu: 0, Sigma: 1, Nu: float64(m.N - 1)}.Quantile(1 - (1-Confidence)/2)
	half := t * math.Sqrt(m.Variance()/float64(m.N))
	return Interval{Estimate: mean, Low: mean - half, High: mean + half}
}

// Test is the outcome of comparing a treatment with its control.
type Test struct {
	// Statistic is z (proportions) or t (means); positive when the
	// treatment is higher.
	Statistic float64 `json:"statistic"`
	// DF is the degrees of freedom (Welch–Satterthwaite); 0 for z.
	DF float64 `json:"df,omitempty"`
	// P is the two-sided p-value.
	P float64 `json:"p"`
	// Difference is treatment − control with its interval.
	Difference Interval `json:"difference"`
	// Lift is treatment/control − 1 with its interval (delta method on the
	// ratio); NaN when the control's estimate is 0.
	Lift Interval `json:"lift"`
	// Significant: P below 1 − Confidence.
	Significant bool `json:"significant"`
}

// TwoProportions compares conversion rates with the two-proportion z-test
// (pooled standard error for the test, unpooled for the interval of the
// difference).
func TwoProportions(controlX, controlN, treatX, treatN uint64) Test {
	if controlN == 0 || treatN == 0 {
		return nanTest()
	}
	p1, p2 := float64(controlX)/float64(controlN), float64(treatX)/float64(treatN)
	n1, n2 := float64(controlN), float64(treatN)
	pool := (float64(controlX) + float64(treatX)) / (n1 + n2)
	sePool := math.Sqrt(pool * (1 - pool) * (1/n1 + 1/n2))
	var z, p float64
	switch {
	case sePool > 0:
		z = (p2 - p1) / sePool
		p = 2 * stdNormal.Survival(math.Abs(z))
	case p1 == p2:
		z, p = 0, 1
	}
	v1, v2 := p1*(1-p1)/n1, p2*(1-p2)/n2
	diff := p2 - p1
	seDiff := math.Sqrt(v1 + v2)
	t := Test{Statistic: z, P: p, Significant: p < 1-Confidence,
		Difference: Interval{Estimate: diff, Low: diff - zCrit*seDiff, High: diff + zCrit*seDiff}}
	t.Lift = ratioLift(p1, v1, p2, v2)
	return t
}

// Welch compares means with Welch's unequal-variances t-test.
func Welch(control, treat Moments) Test {
	if control.N < 2 || treat.N < 2 {
		return nanTest()
	}
	m1, m2 := control.Mean(), treat.Mean()
	v1, v2 := control.Variance()/float64(control.N), treat.Variance()/float64(treat.N)
	se := math.Sqrt(v1 + v2)
	diff := m2 - m1
	if se == 0 {
		p := 1.0
		if diff != 0 {
			p = 0
		}
		return Test{Statistic: math.Copysign(math.Inf(1), diff), P: p, Significant: p < 1-Confidence,
			Difference: Interval{Estimate: diff, Low: diff, High: diff}, Lift: ratioLift(m1, 0, m2, 0)}
	}
	t := diff / se
	df := (v1 + v2) * (v1 + v2) / (v1*v1/float64(control.N-1) + v2*v2/float64(treat.N-1))
	dist := distuv.StudentsT{Mu: 0, Sigma: 1, Nu: df}
	p := 2 * dist.Survival(math.Abs(t))
	q := dist.Quantile(1 - (1-Confidence)/2)
	return Test{Statistic: t, DF: df, P: p, Significant: p < 1-Confidence,
		Difference: Interval{Estimate: diff, Low: diff - q*se, High: diff + q*se},
		Lift:       ratioLift(m1, v1, m2, v2)}
}

// ratioLift is b/a − 1 with a delta-method interval, given the variances of
// the two estimates (va, vb).
func ratioLift(a, va, b, vb float64) Interval {
	if a == 0 {
		return Interval{Estimate: math.NaN(), Low: math.NaN(), High: math.NaN()}
	}
	r := b / a
	se := math.Abs(r) * math.Sqrt(va/(a*a)+nanToZero(vb/(b*b)))
	return Interval{Estimate: r - 1, Low: r - 1 - zCrit*se, High: r - 1 + zCrit*se}
}

func nanToZero(x float64) float64 {
	if math.IsNaN(x) || math.IsInf(x, 0) {
		return 0
	}
	return x
}

func nanTest() Test {
	nan := math.NaN()
	return Test{Statistic: nan, P: nan, Difference: Interval{nan, nan, nan}, Lift: Interval{nan, nan, nan}}
}

// SRM is a sample-ratio-mismatch check: a chi-square goodness-of-fit test
// of the observed units per variant against the configured split.
type SRM struct {
	ChiSquare float64 `json:"chiSquare"`
	DF        int     `json:"df"`
	P         float64 `json:"p"`
	// Mismatch is set when P is below Threshold: the assignment or the
	// exposure logging is broken, and no other number of the report can
	// be trusted.
	Mismatch  bool    `json:"mismatch"`
	Threshold float64 `json:"threshold"`
}

// SRMThreshold is stricter than 0.05 because the check runs on every
// report refresh: a healthy experiment should almost never trip it.
const SRMThreshold = 0.001

// SampleRatio tests observed counts against expected weights (any positive
// scale; they are normalised). Variants with weight 0 must have no units.
func SampleRatio(observed []uint64, weights []float64) SRM {
	out := SRM{Threshold: SRMThreshold, P: math.NaN()}
	if len(observed) != len(weights) || len(observed) < 2 {
		return out
	}
	var total, wsum float64
	for i, o := range observed {
		total += float64(o)
		wsum += weights[i]
	}
	if total == 0 || wsum <= 0 {
		return out
	}
	k := 0
	for i, o := range observed {
		exp := total * weights[i] / wsum
		if exp == 0 {
			if o > 0 {
				out.ChiSquare, out.P, out.Mismatch = math.Inf(1), 0, true
				return out
			}
			continue
		}
		d := float64(o) - exp
		out.ChiSquare += d * d / exp
		k++
	}
	if k < 2 {
		return out
	}
	out.DF = k - 1
	out.P = distuv.ChiSquared{K: float64(out.DF)}.Survival(out.ChiSquare)
	out.Mismatch = out.P < SRMThreshold
	return out
}

// MinUnitsPerVariant is below which a report warns that the sample is too
// small for its intervals and tests to mean much.
const MinUnitsPerVariant = 100

// jsonNum writes x, or null when it is not a finite number (JSON has no NaN).
func jsonNum(b []byte, x float64) []byte {
	if math.IsNaN(x) || math.IsInf(x, 0) {
		return append(b, "null"...)
	}
	return strconv.AppendFloat(b, x, 'g', -1, 64)
}

// MarshalJSON writes undefined bounds (too few units) as null.
func (i Interval) MarshalJSON() ([]byte, error) {
	b := append([]byte(nil), `{"estimate":`...)
	b = jsonNum(b, i.Estimate)
	b = append(b, `,"low":`...)
	b = jsonNum(b, i.Low)
	b = append(b, `,"high":`...)
	b = jsonNum(b, i.High)
	return append(b, '}'), nil
}

// MarshalJSON writes an undefined statistic or p-value as null.
func (t Test) MarshalJSON() ([]byte, error) {
	type plain Test
	p := plain(t)
	stat, pv := p.Statistic, p.P
	p.Statistic, p.P = 0, 0
	inner, err := json.Marshal(struct {
		plain
		Statistic json.RawMessage `json:"statistic"`
		P         json.RawMessage `json:"p"`
	}{p, jsonNum(nil, stat), jsonNum(nil, pv)})
	return inner, err
}

// MarshalJSON writes an undefined χ² or p-value as null.
func (s SRM) MarshalJSON() ([]byte, error) {
	type plain SRM
	return json.Marshal(struct {
		plain
		ChiSquare json.RawMessage `json:"chiSquare"`
		P         json.RawMessage `json:"p"`
	}{plain(s), jsonNum(nil, s.ChiSquare), jsonNum(nil, s.P)})
}
