package process

import (
	"context"
	"encoding/json"
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/cairn-stream/cairn/internal/natstest"
	"github.com/cairn-stream/cairn/services/aggregator"
)

// restarts is acceptance 4's number of SIGTERM restarts.
const restarts = 50

// TestSigtermRestartsExactlyOnceOutput is acceptance 4 of issue 7: an operator with outputs
// is restarted with SIGTERM 50 times while events flow in bursts, so that records wait and
// outputs are in flight when the signal lands. Every other stop comes right after a
// checkpoint the instance took part in completed; the others strike 0–1 ms after a
// barrier, so that the barrier and the signal reach an instance busy with a burst. Every
// stop must exit 0, every input record must give exactly one output (each key's running
// count goes 1, 2, … N with no gap and no repeat, with the right running sum), and the
// totals must be exact. The coordinator trims the input meanwhile, which the test checks,
// so a restart that replayed from sequence 1 could not end exact. (The narrow race between
// a stop and an output that cannot be stored is hit too rarely from outside the process;
// services/aggregator's TestShutdownWithOutputsThatCannotBeStored forces it.)
func TestSigtermRestartsExactlyOnceOutput(t *testing.T) {
	const inst = "counter-0"
	s := newStack(t, stackOptions{instances: []string{inst}, output: true})
	ctx := ctxFor(t, 120*time.Second)
	barriers := make(chan *nats.Msg, 64)
	sub, err := s.nc.ChanSubscribe(subjects.Barrier(s.job), barriers)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	stop := s.feed(ctx, inst, 50*time.Millisecond, 25)
	defer stop()
	p := s.ops[inst]
	start := time.Now()
	for i := range restarts {
		if i%2 == 1 {
			if _, err := s.completedAfter(ctx, p.ReadySince()); err != nil {
				t.Fatalf("restart %d: %v", i, err)
			}
		} else if err := aimAtBarrier(ctx, barriers, time.Duration(i%4)*250*time.Microsecond); err != nil {
			t.Fatalf("restart %d: %v", i, err)
		}
		_, code, err := p.Signal(syscall.SIGTERM, 20*time.Second)
		if err != nil {
			t.Fatalf("restart %d: %v", i, err)
		}
		if code != 0 {
			t.Fatalf("restart %d: exit code %d after SIGTERM; want 0; last lines:\n%s", i, code, p.Tail(10))
		}
		if err := p.Start(); err != nil {
			t.Fatal(err)
		}
		if err := p.WaitReady(ctx); err != nil {
			t.Fatalf("restart %d: %v", i, err)
		}
	}
	t.Logf("%d SIGTERM restarts in %s", restarts, time.Since(start).Round(time.Millisecond))
	last, err := stop()
	if err != nil {
		t.Fatal(err)
	}
	s.assertExact(ctx, inst, last)
	first, err := s.firstSeq(ctx, subjectOf(s, inst))
	if err != nil {
		t.Fatal(err)
	}
	if first <= 1 {
		t.Errorf("the input of %s still starts at sequence %d: the coordinator never trimmed it, so the test cannot tell a restore from a replay", inst, first)
	}

	msgs, err := natstest.ReadSubject(ctx, s.res.Output, subjects.Output(s.job, inst))
	if err != nil {
		t.Fatal(err)
	}
	outputs := make([]aggregator.KeyUpdate, len(msgs))
	for i, m := range msgs {
		if err := json.Unmarshal(m.Data(), &outputs[i]); err != nil {
			t.Fatalf("output %d: %v", i+1, err)
		}
	}
	values := s.published(inst)
	for _, p := range checkOutputs(values, outputs) {
		t.Error(p)
	}
	t.Logf("%d events, %d outputs; input trimmed to start at sequence %d", len(values), len(outputs), first)
}

func subjectOf(s *stack, inst string) string { return subjects.Input(s.job, inst) }

// aimAtBarrier waits for the next barrier and then offset more: the moment to strike so
// that the barrier and the signal both reach a process busy with a burst of records.
func aimAtBarrier(ctx context.Context, barriers <-chan *nats.Msg, offset time.Duration) error {
	for len(barriers) > 0 {
		<-barriers
	}
	select {
	case <-barriers:
	case <-ctx.Done():
		return fmt.Errorf("waiting for a barrier: %w", ctx.Err())
	}
	t := time.NewTimer(offset)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// checkOutputs checks one instance's outputs, in stream order, against the values
// published to it: per key, the running count goes 1, 2, … N with no gap and no repeat,
// and each output carries the running sum; the outputs of all keys together are one per
// event.
func checkOutputs(values []int64, outputs []aggregator.KeyUpdate) []string {
	var problems []string
	if len(outputs) != len(values) {
		problems = append(problems, fmt.Sprintf("%d outputs for %d events", len(outputs), len(values)))
	}
	// The running sums each key's outputs must carry, in order.
	want := map[string][]int64{}
	sum := map[string]int64{}
	for i, v := range values {
		k := keyOf(i)
		sum[k] += v
		want[k] = append(want[k], sum[k])
	}
	next := map[string]int64{}
	for i, o := range outputs {
		n := next[o.Key]
		switch {
		case o.Count <= n:
			problems = append(problems, fmt.Sprintf("output #%d: key %s count %d again after %d (a repeat)", i+1, o.Key, o.Count, n))
		case o.Count > n+1:
			problems = append(problems, fmt.Sprintf("output #%d: key %s count %d after %d (a gap)", i+1, o.Key, o.Count, n))
		case int(n) >= len(want[o.Key]):
			problems = append(problems, fmt.Sprintf("output #%d: key %s count %d, but only %d events of it were published", i+1, o.Key, o.Count, len(want[o.Key])))
		case o.Sum != want[o.Key][n]:
			problems = append(problems, fmt.Sprintf("output #%d: key %s count %d sum %d; want sum %d", i+1, o.Key, o.Count, o.Sum, want[o.Key][n]))
		}
		if len(problems) > 10 {
			return append(problems, "…")
		}
		next[o.Key] = max(n, o.Count)
	}
	for k, w := range want {
		if next[k] != int64(len(w)) {
			problems = append(problems, fmt.Sprintf("key %s: outputs end at count %d; %d events were published", k, next[k], len(w)))
		}
	}
	return problems
}

// TestCheckOutputs checks that checkOutputs catches a gap, a repeat and a wrong sum.
func TestCheckOutputs(t *testing.T) {
	values := make([]int64, 3*keys)
	var exact []aggregator.KeyUpdate
	sums := map[string]int64{}
	for i := range values {
		values[i] = value("x", i)
		sums[keyOf(i)] += values[i]
		exact = append(exact, aggregator.KeyUpdate{Key: keyOf(i), Count: int64(i/keys + 1), Sum: sums[keyOf(i)]})
	}
	wrongSum := append([]aggregator.KeyUpdate(nil), exact...)
	wrongSum[5].Sum++
	tests := []struct {
		name    string
		outputs []aggregator.KeyUpdate
		want    int
	}{
		{"exact", exact, 0},
		{"repeat", append(append(append([]aggregator.KeyUpdate(nil), exact[:keys+1]...), exact[keys]), exact[keys+1:]...), 2},
		{"gap", append(append([]aggregator.KeyUpdate(nil), exact[:keys]...), exact[keys+1:]...), 2},
		{"wrong sum", wrongSum, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if p := checkOutputs(values, tt.outputs); len(p) != tt.want {
				t.Fatalf("problems %q; want %d", p, tt.want)
			}
		})
	}
}
