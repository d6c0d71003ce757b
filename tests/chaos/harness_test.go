package chaos

import (
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cairn-stream/cairn/pkg/messages"
	"github.com/cairn-stream/cairn/services/aggregator"
)

// These tests check the harness itself; they run without CAIRN_CHAOS and take no time.

func TestScheduleIsSeeded(t *testing.T) {
	a, b := newSchedule(42, stormLength), newSchedule(42, stormLength)
	if !reflect.DeepEqual(a, b) {
		t.Fatal("two schedules from seed 42 differ")
	}
	if reflect.DeepEqual(a.operators, newSchedule(43, stormLength).operators) {
		t.Fatal("seeds 42 and 43 give the same operator kills")
	}
	for seed := range uint64(200) {
		s := newSchedule(seed, stormLength)
		if len(s.operators) < 20 {
			t.Fatalf("seed %d: %d operator kills; acceptance needs at least 20", seed, len(s.operators))
		}
		holders, restarts := 0, 0
		var last time.Duration
		for _, a := range s.control {
			if a.natsRestart {
				restarts++
			} else {
				holders++
			}
			if a.at < last || a.at >= stormLength {
				t.Fatalf("seed %d: control action at %s out of order or past the storm", seed, a.at)
			}
			last = a.at
		}
		if holders < 5 || restarts != 1 {
			t.Fatalf("seed %d: %d holder kills and %d NATS restarts; want at least 5 and exactly 1", seed, holders, restarts)
		}
		prev := initialInterval
		for _, c := range s.configs {
			if c.interval == prev {
				t.Fatalf("seed %d: config change to the interval already in force (%s)", seed, c.interval)
			}
			prev = c.interval
		}
		kills, terms, away := 0, 0, 0
		for _, k := range s.operators {
			if k.at < 0 || k.at >= stormLength || k.instance < 0 || k.instance >= instances {
				t.Fatalf("seed %d: operator kill %+v out of range", seed, k)
			}
			switch {
			case k.away:
				away++
				if k.down < awayMin || k.at+k.down > stormLength-10*time.Second {
					t.Fatalf("seed %d: the long absence %+v is too short or ends too late", seed, k)
				}
			case k.graceful:
				terms++
			default:
				kills++
			}
		}
		if kills < 20 || terms < 5 || away != 1 {
			t.Fatalf("seed %d: %d SIGKILLs, %d SIGTERM restarts, %d long absences; want at least 20, at least 5, and 1", seed, kills, terms, away)
		}
		if d := s.duplicate; d.at <= 0 || d.at+15*time.Second+d.hold >= stormLength || d.instance < 0 || d.instance >= instances {
			t.Fatalf("seed %d: duplicate start %+v out of range", seed, d)
		}
	}
}

func TestCheckBarriers(t *testing.T) {
	at := time.Now()
	b := func(id, version uint64) barrierSeen {
		at = at.Add(100 * time.Millisecond)
		return barrierSeen{at: at, id: id, version: version, coordinator: "c", triggered: time.Unix(int64(id), 0)}
	}
	reissued := func(x barrierSeen) barrierSeen {
		x.coordinator = "another"
		return x
	}
	tests := []struct {
		name     string
		barriers []barrierSeen
		want     []string // a substring of each problem, in order
	}{
		{name: "increasing with a gap", barriers: []barrierSeen{b(1, 0), b(2, 1), b(5, 1), b(6, 2)}},
		{name: "retransmission", barriers: []barrierSeen{b(1, 1), b(2, 1), b(2, 1), b(3, 1)}},
		{name: "id issued twice", barriers: []barrierSeen{b(1, 1), b(2, 1), reissued(b(2, 1))}, want: []string{"issued twice", "received after"}},
		{name: "reordered", barriers: []barrierSeen{b(1, 1), b(3, 1), b(2, 1)}, want: []string{"received after"}},
		{name: "version goes back", barriers: []barrierSeen{b(1, 2), b(2, 1)}, want: []string{"after barrier 1 carried 2"}},
		{name: "unknown version", barriers: []barrierSeen{b(1, 3)}, want: []string{"stream ends at 2"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assertProblems(t, checkBarriers(tt.barriers, 2), tt.want)
		})
	}
}

func TestCheckEvents(t *testing.T) {
	done := func(id, version uint64) messages.CheckpointEvent {
		return messages.CheckpointEvent{CheckpointID: id, ConfigVersion: version, Outcome: messages.Completed}
	}
	abort := func(id uint64, r messages.AbortReason) messages.CheckpointEvent {
		return messages.CheckpointEvent{CheckpointID: id, Outcome: messages.Aborted, Reason: r}
	}
	tests := []struct {
		name   string
		events []messages.CheckpointEvent
		want   []string
	}{
		{name: "clean", events: []messages.CheckpointEvent{done(1, 1), abort(2, messages.AbortInstanceLost), done(3, 2)}},
		{name: "late abort of an older id is allowed", events: []messages.CheckpointEvent{done(1, 1), done(3, 1), abort(2, messages.AbortCoordinatorChange)}},
		{name: "ended twice", events: []messages.CheckpointEvent{done(1, 1), abort(1, messages.AbortTimeout)}, want: []string{"ended twice"}},
		{name: "completed out of order", events: []messages.CheckpointEvent{done(2, 1), done(1, 1)}, want: []string{"stored after completed checkpoint 2"}},
		{name: "version goes back", events: []messages.CheckpointEvent{done(1, 2), done(2, 1)}, want: []string{"under config version 1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, problems := checkEvents(tt.events)
			assertProblems(t, problems, tt.want)
		})
	}
}

func TestCheckConfigs(t *testing.T) {
	ev := func(v uint64, interval time.Duration) messages.ConfigEvent {
		c := messages.DefaultConfig()
		c.Interval, c.Timeout = interval, checkpointTimeout
		return messages.ConfigEvent{Version: v, Config: c}
	}
	asked := []configResult{{version: 1, interval: time.Second}, {version: 3, interval: 2 * time.Second}}
	tests := []struct {
		name   string
		stored []messages.ConfigEvent
		want   []string
	}{
		{name: "an extra version from a retried request is fine", stored: []messages.ConfigEvent{ev(1, time.Second), ev(2, 2*time.Second), ev(3, 2*time.Second)}},
		{name: "gap", stored: []messages.ConfigEvent{ev(1, time.Second), ev(3, 2*time.Second)}, want: []string{"has version 3; want 2"}},
		{name: "accepted version missing", stored: []messages.ConfigEvent{ev(1, time.Second)}, want: []string{"version 3 is not in the config stream"}},
		{name: "wrong interval", stored: []messages.ConfigEvent{ev(1, time.Second), ev(2, time.Second), ev(3, time.Second)}, want: []string{"stored interval 1s"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assertProblems(t, checkConfigs(tt.stored, asked), tt.want)
		})
	}
}

func TestExactness(t *testing.T) {
	want := map[string]messages.KeyTotals{"k0": {Count: 3, Sum: 30}, "k1": {Count: 2, Sum: 5}}
	got := messages.OperatorState{Keys: map[string]messages.KeyTotals{"k0": {Count: 4, Sum: 40}, "k1": {Count: 1, Sum: 2}, "k9": {Count: 1, Sum: 1}}}
	lost, doubled, problems := exactness("counter-0", want, got)
	if lost != 1 || doubled != 2 || len(problems) != 3 {
		t.Fatalf("lost %d doubled %d problems %q; want 1, 2 and 3 problems", lost, doubled, problems)
	}
	if lost, doubled, problems := exactness("counter-0", want, messages.OperatorState{Keys: want}); lost != 0 || doubled != 0 || problems != nil {
		t.Fatalf("identical state: lost %d doubled %d problems %q", lost, doubled, problems)
	}
}

func TestCheckOutputs(t *testing.T) {
	values := make([]int64, 2*keys+1)
	var outputs []aggregator.KeyUpdate
	sums := map[string]int64{}
	for i := range values {
		values[i] = int64(i + 1)
		sums[keyOf(i)] += values[i]
		outputs = append(outputs, aggregator.KeyUpdate{Key: keyOf(i), Count: int64(i/keys + 1), Sum: sums[keyOf(i)]})
	}
	replayed := slices.Insert(slices.Clone(outputs), keys+1, outputs[keys])
	tests := []struct {
		name    string
		outputs []aggregator.KeyUpdate
		want    []string
	}{
		{name: "exact", outputs: outputs},
		{name: "missing last", outputs: outputs[:len(outputs)-1], want: []string{"outputs for"}},
		{name: "replay not dropped", outputs: replayed, want: []string{"outputs for", fmt.Sprintf("output #%d", keys+2)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assertProblems(t, checkOutputs("counter-0", values, tt.outputs), tt.want)
		})
	}
}

// assertProblems checks that problems holds exactly one entry per wanted substring, in order.
func assertProblems(t *testing.T, problems, want []string) {
	t.Helper()
	if len(problems) != len(want) {
		t.Fatalf("problems %q; want %d matching %q", problems, len(want), want)
	}
	for i, w := range want {
		if !strings.Contains(problems[i], w) {
			t.Errorf("problem %d = %q; want it to contain %q", i, problems[i], w)
		}
	}
}
