package chaos

import (
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/cairn-stream/cairn/pkg/messages"
	"github.com/cairn-stream/cairn/services/aggregator"
)

// exactness compares an instance's state with what was published to it: lost counts the
// events missing from the state, doubled the events counted more than once, and problems
// names every key that differs.
func exactness(instance string, want map[string]messages.KeyTotals, got messages.OperatorState) (lost, doubled int64, problems []string) {
	keys := slices.Sorted(maps.Keys(want))
	for k := range got.Keys {
		if _, ok := want[k]; !ok {
			keys = append(keys, k)
		}
	}
	for _, k := range keys {
		w, g := want[k], got.Keys[k]
		if w == g {
			continue
		}
		if d := w.Count - g.Count; d > 0 {
			lost += d
		} else {
			doubled -= d
		}
		problems = append(problems, fmt.Sprintf("%s key %s: count %d sum %d, want count %d sum %d", instance, k, g.Count, g.Sum, w.Count, w.Sum))
	}
	if got.Rejected != 0 {
		problems = append(problems, fmt.Sprintf("%s rejected %d well-formed events", instance, got.Rejected))
	}
	return lost, doubled, problems
}

// checkOutputs checks an instance's outputs, in stream order, against the values
// published to it: one output per event, in input order, each carrying its key's running
// count and sum. A replay after a restore that the duplicate window failed to drop shows
// up as a repeated count.
func checkOutputs(instance string, values []int64, outputs []aggregator.KeyUpdate) []string {
	var problems []string
	if len(outputs) != len(values) {
		problems = append(problems, fmt.Sprintf("%s: %d outputs for %d events", instance, len(outputs), len(values)))
	}
	sums := map[string]int64{}
	counts := map[string]int64{}
	for i := range min(len(outputs), len(values)) {
		k := keyOf(i)
		counts[k]++
		sums[k] += values[i]
		want := aggregator.KeyUpdate{Key: k, Count: counts[k], Sum: sums[k]}
		if outputs[i] != want {
			problems = append(problems, fmt.Sprintf("%s: output #%d is %+v; want %+v", instance, i+1, outputs[i], want))
			break // everything after a slip differs too
		}
	}
	return problems
}

// checkBarriers checks the barriers in the order they were received: ids strictly
// increasing (so never issued twice; ids missing while NATS was down are fine), config
// versions never decreasing and each one a version the config stream holds (or 0, the
// defaults). A barrier sent again — the same id, coordinator and trigger time, re-sent to
// an instance the checkpoint still waits for — is a retransmission, not a new issue of the
// id; it is skipped.
func checkBarriers(bs []barrierSeen, lastVersion uint64) []string {
	var problems []string
	seen := map[uint64]int{}
	var prev *barrierSeen
	for i := range bs {
		b := &bs[i]
		if j, ok := seen[b.id]; ok {
			if first := bs[j]; first.coordinator == b.coordinator && first.triggered.Equal(b.triggered) {
				continue
			}
			problems = append(problems, fmt.Sprintf("barrier id %d issued twice: #%d from %s triggered at %s and #%d from %s triggered at %s",
				b.id, j, bs[j].coordinator, clock(bs[j].triggered), i, b.coordinator, clock(b.triggered)))
		}
		seen[b.id] = i
		if b.version > lastVersion {
			problems = append(problems, fmt.Sprintf("barrier %d carries config version %d; the config stream ends at %d", b.id, b.version, lastVersion))
		}
		if prev != nil && b.id <= prev.id {
			problems = append(problems, fmt.Sprintf("barrier id %d (from %s at %s) received after barrier %d (from %s at %s)",
				b.id, b.coordinator, clock(b.at), prev.id, prev.coordinator, clock(prev.at)))
		}
		if prev != nil && b.version < prev.version {
			problems = append(problems, fmt.Sprintf("barrier %d carries config version %d after barrier %d carried %d",
				b.id, b.version, prev.id, prev.version))
		}
		prev = b
	}
	return problems
}

// eventTally sums the checkpoint events read back from the stream.
type eventTally struct {
	completed int
	aborted   map[string]int // by reason
	maxID     uint64
}

// checkEvents checks the checkpoint events in stream order: each checkpoint id ends at
// most once, completed ids strictly increase and so do not go back in config version.
func checkEvents(evs []messages.CheckpointEvent) (eventTally, []string) {
	tally := eventTally{aborted: map[string]int{}}
	var problems []string
	ended := map[uint64]messages.CheckpointEvent{}
	var last *messages.CheckpointEvent
	for _, e := range evs {
		if prev, ok := ended[e.CheckpointID]; ok {
			problems = append(problems, fmt.Sprintf("checkpoint %d ended twice: %s then %s", e.CheckpointID, describe(prev), describe(e)))
		}
		ended[e.CheckpointID] = e
		tally.maxID = max(tally.maxID, e.CheckpointID)
		if e.Outcome != messages.Completed {
			tally.aborted[e.Reason.String()]++
			continue
		}
		tally.completed++
		if last != nil && e.CheckpointID <= last.CheckpointID {
			problems = append(problems, fmt.Sprintf("completed checkpoint %d stored after completed checkpoint %d", e.CheckpointID, last.CheckpointID))
		}
		if last != nil && e.ConfigVersion < last.ConfigVersion {
			problems = append(problems, fmt.Sprintf("completed checkpoint %d ran under config version %d after checkpoint %d under %d",
				e.CheckpointID, e.ConfigVersion, last.CheckpointID, last.ConfigVersion))
		}
		last = &e
	}
	return tally, problems
}

// checkConfigs checks the job's config events in stream order against the changes the
// harness made: versions 1, 2, 3 … without gap or repeat, and every accepted version
// stored with the interval and timeout asked for.
func checkConfigs(stored []messages.ConfigEvent, accepted []configResult) []string {
	var problems []string
	byVersion := map[uint64]messages.ConfigEvent{}
	for i, e := range stored {
		if e.Version != uint64(i+1) {
			problems = append(problems, fmt.Sprintf("config event #%d of the stream has version %d; want %d", i+1, e.Version, i+1))
		}
		byVersion[e.Version] = e
	}
	for _, a := range accepted {
		if a.err != nil {
			continue
		}
		e, ok := byVersion[a.version]
		switch {
		case !ok:
			problems = append(problems, fmt.Sprintf("accepted config version %d is not in the config stream", a.version))
		case e.Config.Interval != a.interval || e.Config.Timeout != checkpointTimeout:
			problems = append(problems, fmt.Sprintf("config version %d stored interval %s timeout %s; asked for %s and %s",
				a.version, e.Config.Interval, e.Config.Timeout, a.interval, checkpointTimeout))
		}
	}
	return problems
}

func describe(e messages.CheckpointEvent) string {
	if e.Outcome == messages.Completed {
		return "completed"
	}
	return fmt.Sprintf("aborted (%s: %s)", e.Reason, e.Detail)
}

// clock formats a time of day to the millisecond, as the services' logs do.
func clock(t time.Time) string { return t.Format("15:04:05.000") }
