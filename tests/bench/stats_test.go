package bench

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"
	"text/tabwriter"
	"time"
)

// minSamples is the sample count below which a p99 says little; the table warns under it.
const minSamples = 100

// sample holds measured durations.
type sample []time.Duration

// percentile returns the p-th percentile (0 < p ≤ 100) by nearest rank: the smallest value
// with at least p% of the sample at or below it. It returns 0 for an empty sample.
func (s sample) percentile(p float64) time.Duration {
	if len(s) == 0 {
		return 0
	}
	sorted := slices.Clone(s)
	slices.Sort(sorted)
	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	return sorted[min(max(rank, 1), len(sorted))-1]
}

// abs returns |d|.
func abs(d time.Duration) time.Duration {
	if d < 0 {
		return -d
	}
	return d
}

// figure is one measured quantity next to the floor measured with it in the same run.
type figure struct {
	// name says what was measured, floorName what it is compared with.
	name, floorName string
	got, floor      sample
}

// ms converts d to milliseconds.
func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// ratio is a / b, or 0 when b is 0.
func ratio(a, b time.Duration) float64 {
	if b <= 0 {
		return 0
	}
	return float64(a) / float64(b)
}

// report reports the figure's p50 and p99 and their ratios to the floor's as benchmark
// metrics, their units prefixed with prefix; with withFloor, the floor's p50 and p99 too
// (once per benchmark is enough when its figures share a floor).
func (f figure) report(b *testing.B, prefix string, withFloor bool) {
	p50, p99 := f.got.percentile(50), f.got.percentile(99)
	fp50, fp99 := f.floor.percentile(50), f.floor.percentile(99)
	b.ReportMetric(ms(p50), prefix+"p50-ms")
	b.ReportMetric(ms(p99), prefix+"p99-ms")
	if withFloor {
		b.ReportMetric(ms(fp50), prefix+"floor-p50-ms")
		b.ReportMetric(ms(fp99), prefix+"floor-p99-ms")
	}
	b.ReportMetric(ratio(p50, fp50), prefix+"ratio-p50")
	b.ReportMetric(ratio(p99, fp99), prefix+"ratio-p99")
}

// table renders the figures as an aligned text table for b.Log, followed by the notes.
// The testing package prints at most 10 lines of a benchmark's log, so keep it short.
func table(figs []figure, notes ...string) string {
	var sb strings.Builder
	sb.WriteString("\n")
	w := tabwriter.NewWriter(&sb, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "figure\tn\tp50\tp99\tfloor p50\tfloor p99\tp50/floor\tp99/floor\tfloor")
	fewest := -1
	for _, f := range figs {
		p50, p99 := f.got.percentile(50), f.got.percentile(99)
		fp50, fp99 := f.floor.percentile(50), f.floor.percentile(99)
		fmt.Fprintf(w, "%s\t%d\t%.3fms\t%.3fms\t%.3fms\t%.3fms\t%.1fx\t%.1fx\t%s (n=%d)\n",
			f.name, len(f.got), ms(p50), ms(p99), ms(fp50), ms(fp99), ratio(p50, fp50), ratio(p99, fp99), f.floorName, len(f.floor))
		if fewest < 0 || len(f.got) < fewest {
			fewest = len(f.got)
		}
	}
	_ = w.Flush()
	if fewest >= 0 && fewest < minSamples {
		notes = append(notes, fmt.Sprintf("only %d samples: p99 is close to the maximum; run with -benchtime=200x", fewest))
	}
	for _, n := range notes {
		sb.WriteString(n)
		sb.WriteString("\n")
	}
	return strings.TrimSuffix(sb.String(), "\n")
}

// quantiles formats a sample's p50 and p99 for a note.
func quantiles(s sample) string {
	return fmt.Sprintf("p50 %.3fms p99 %.3fms", ms(s.percentile(50)), ms(s.percentile(99)))
}

func TestSamplePercentile(t *testing.T) {
	milli := time.Millisecond
	hundred := make(sample, 100)
	for i := range hundred {
		hundred[i] = time.Duration(100-i) * milli
	}
	tests := []struct {
		name string
		s    sample
		p    float64
		want time.Duration
	}{
		{name: "empty", s: nil, p: 50, want: 0},
		{name: "one value", s: sample{3 * milli}, p: 99, want: 3 * milli},
		{name: "median of odd count", s: sample{5 * milli, 1 * milli, 3 * milli}, p: 50, want: 3 * milli},
		{name: "median of even count is the lower middle", s: sample{4 * milli, 1 * milli, 3 * milli, 2 * milli}, p: 50, want: 2 * milli},
		{name: "p99 of 100 is the second largest", s: hundred, p: 99, want: 99 * milli},
		{name: "p100 is the maximum", s: hundred, p: 100, want: 100 * milli},
		{name: "p50 of 100 unsorted", s: hundred, p: 50, want: 50 * milli},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.s.percentile(tt.p); got != tt.want {
				t.Errorf("percentile(%v) = %v, want %v", tt.p, got, tt.want)
			}
		})
	}
}

// rounded returns s rounded to milliseconds, for a log line.
func rounded(s sample) []time.Duration {
	out := make([]time.Duration, len(s))
	for i, d := range s {
		out[i] = d.Round(time.Millisecond)
	}
	return out
}
