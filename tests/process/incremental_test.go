package process

import (
	"encoding/json"
	"fmt"
	"maps"
	"testing"
	"time"

	"github.com/cairn-stream/cairn/internal/proctest"
	"github.com/cairn-stream/cairn/pkg/cairnjs"
	"github.com/cairn-stream/cairn/pkg/messages"
)

// TestIncrementalCheckpointAfterSmallChange is acceptance 1 of issue 10: the reference
// operator (on the keyed state store) holds 20 000 distinct keys, then 200 of them are
// updated: the next completed checkpoint writes at most 5 % of the bytes it references,
// in its completed event and in the job's status. After a SIGKILL, with the input trimmed
// below the retained checkpoints, the restarted instance restores base and deltas and
// every key's totals are exact.
func TestIncrementalCheckpointAfterSmallChange(t *testing.T) {
	const (
		inst     = "inc-0"
		distinct = 20000
		updated  = 200
	)
	s := newStack(t, stackOptions{instances: []string{inst}})
	ctx := ctxFor(t, 120*time.Second)
	want := map[string]messages.KeyTotals{}
	publish := func(first, n int, value int64) uint64 {
		t.Helper()
		var last uint64
		for i := first; i < first+n; i++ {
			key := fmt.Sprintf("key-%05d", i)
			data, err := json.Marshal(messages.InputEvent{Key: key, Value: value})
			if err != nil {
				t.Fatal(err)
			}
			ack, err := s.js.Publish(ctx, subjects.Input(s.job, inst), data)
			if err != nil {
				t.Fatal(err)
			}
			kt := want[key]
			want[key] = messages.KeyTotals{Count: kt.Count + 1, Sum: kt.Sum + value}
			last = ack.Sequence
		}
		return last
	}
	// Checkpoints are taken by hand, so that the 20 000 keys are in one base whatever the
	// machine's speed: on a 200 ms schedule the load would be spread over several deltas,
	// and whether the checkpoint after the update wrote a new base (the chain passing
	// its bounds) would depend on how the load fell.
	var v messages.ConfigView
	if err := s.request(ctx, subjects.ConfigSet(s.job), []byte(`{"interval":"1h"}`), &v); err != nil {
		t.Fatal(err)
	}
	checkpoint := func(last uint64) messages.Manifest {
		t.Helper()
		if _, err := s.waitApplied(ctx, inst, last); err != nil {
			t.Fatal(err)
		}
		var r messages.CheckpointResult
		if err := s.request(ctx, subjects.CheckpointTrigger(s.job), nil, &r); err != nil || r.Outcome != "completed" {
			t.Fatalf("manual checkpoint: %+v, %v", r, err)
		}
		m, err := s.waitCovered(ctx, inst, last)
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	last := publish(0, distinct, 1)
	checkpoint(last)
	last = publish(5000, updated, 7)
	m := checkpoint(last)
	var ev messages.CheckpointEvent
	if err := s.waitEvents(ctx, fmt.Sprintf("the completed event of checkpoint %d", m.CheckpointID), func(evs []messages.CheckpointEvent) bool {
		for _, e := range evs {
			if e.CheckpointID == m.CheckpointID {
				ev = e
				return true
			}
		}
		return false
	}); err != nil {
		t.Fatal(err)
	}
	is := m.Instances[inst]
	t.Logf("checkpoint %d: %d bytes referenced (base %d, %d deltas), %d written", ev.CheckpointID, ev.Bytes, is.Snapshot.Size, len(is.Deltas), ev.Written)
	if ev.Bytes < distinct*20 || ev.Written*20 > ev.Bytes {
		t.Errorf("the checkpoint after %d updates wrote %d of %d bytes; want at most 5 %%", updated, ev.Written, ev.Bytes)
	}
	if err := proctest.Poll(ctx, 20*time.Millisecond, "the status to show the checkpoint", func() (bool, error) {
		st, err := s.status(ctx)
		if err != nil || st.LastCompleted == nil || st.LastCompleted.ID < m.CheckpointID {
			return false, err
		}
		if lc := st.LastCompleted; lc.Bytes < distinct*20 || lc.BytesWritten*20 > lc.Bytes {
			return false, fmt.Errorf("status: checkpoint %d wrote %d of %d bytes; want at most 5 %%", lc.ID, lc.BytesWritten, lc.Bytes)
		}
		return true, nil
	}); err != nil {
		t.Fatal(err)
	}

	if _, err := s.ops[inst].Kill(); err != nil {
		t.Fatal(err)
	}
	// Retention drops checkpoint 1 (taken before any input) after checkpoint 3 completed,
	// in the background: trim once every retained checkpoint holds some input.
	if err := proctest.Poll(ctx, 20*time.Millisecond, "retention to drop the checkpoint taken before any input", func() (bool, error) {
		ms, err := s.retained(ctx)
		if err != nil || len(ms) == 0 {
			return false, err
		}
		for _, m := range ms {
			if is, ok := m.Instances[inst]; ok && is.Positions[cairnjs.InputStream] == 0 {
				return false, nil
			}
		}
		return true, nil
	}); err != nil {
		t.Fatal(err)
	}
	first, err := s.trimBelowRetained(ctx, inst)
	if err != nil {
		t.Fatal(err)
	}
	if first <= 1 {
		t.Fatalf("the input still starts at sequence %d: a replay from the start could pass", first)
	}
	last = publish(19900, 150, 3) // 100 keys updated, 50 new, after the kill
	if err := s.ops[inst].Start(); err != nil {
		t.Fatal(err)
	}
	if err := s.ops[inst].WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	st, err := s.waitApplied(ctx, inst, last)
	if err != nil {
		t.Fatal(err)
	}
	if st.Rejected != 0 || !maps.Equal(st.Keys, want) {
		var wrong []string
		for k, w := range want {
			if st.Keys[k] != w {
				wrong = append(wrong, fmt.Sprintf("%s: %+v, want %+v", k, st.Keys[k], w))
			}
		}
		t.Fatalf("after SIGKILL and restart: %d keys (want %d), %d rejected, %d keys wrong, e.g. %v", len(st.Keys), len(want), st.Rejected, len(wrong), wrong[:min(len(wrong), 5)])
	}
}
