package operator_test

import (
	"fmt"
	"io"
	"slices"
	"strconv"
	"testing"

	"github.com/cairn-stream/cairn/internal/natstest"
	"github.com/cairn-stream/cairn/pkg/messages"
	"github.com/cairn-stream/cairn/pkg/operator"
)

// listenerMachine counts records and records, in order, the checkpoint ids SnapshotFor
// was given and the outcomes it was told about. Read it through Runtime.Do.
type listenerMachine struct {
	n         uint64
	snapshots []uint64
	calls     []string
}

var (
	_ operator.CheckpointListener    = (*listenerMachine)(nil)
	_ operator.CheckpointSnapshotter = (*listenerMachine)(nil)
)

func (m *listenerMachine) Apply(operator.Record) error {
	m.n++
	m.calls = append(m.calls, "record")
	return nil
}

func (m *listenerMachine) Snapshot() (operator.Snapshot, error) {
	return nil, fmt.Errorf("Snapshot called; the runtime must call SnapshotFor")
}

func (m *listenerMachine) SnapshotFor(id uint64) (operator.Snapshot, error) {
	m.snapshots = append(m.snapshots, id)
	return operator.BytesSnapshot(strconv.AppendUint(nil, m.n, 10)), nil
}

func (m *listenerMachine) Restore(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	n, err := strconv.ParseUint(string(b), 10, 64)
	if err != nil {
		return err
	}
	m.n = n
	return nil
}

func (m *listenerMachine) CheckpointCompleted(id uint64) {
	m.calls = append(m.calls, fmt.Sprintf("completed %d", id))
}

func (m *listenerMachine) CheckpointAborted(id uint64, reason string) {
	m.calls = append(m.calls, fmt.Sprintf("aborted %d: %s", id, reason))
}

// waitCalls waits until the machine's listener calls (records left out) are want.
func waitCalls(t *testing.T, rt *operator.Runtime, m *listenerMachine, want ...string) {
	t.Helper()
	var got []string
	natstest.Eventually(t, waitLong, fmt.Sprintf("listener calls never became %q", want), func() bool {
		if err := rt.Do(t.Context(), func() {
			got = slices.DeleteFunc(slices.Clone(m.calls), func(c string) bool { return c == "record" })
		}); err != nil {
			t.Fatal(err)
		}
		return slices.Equal(got, want)
	})
}

func TestCheckpointListener(t *testing.T) {
	e := newEnv(t)
	m := &listenerMachine{}
	r := e.start("counter-0", m)
	last := e.publish("counter-0", []byte("1"), []byte("2"))
	waitPosition(t, r.rt, last)
	var acks []messages.Ack
	for id := uint64(1); id <= 3; id++ {
		acks = append(acks, e.checkpoint(id))
	}

	// 2 is aborted before 1 is decided: nothing is said until 1 is, then both, in order.
	e.coord.Event(2, messages.Aborted, messages.AbortDeclined)
	e.coord.Event(9, messages.Completed, 0) // no snapshot of this instance: ignored
	e.coord.Event(1, messages.Completed, 0)
	waitCalls(t, r.rt, m, "completed 1", "aborted 2: "+messages.AbortDeclined.String())

	// 5 completes while 3 is undecided and 4 aborted: 3 is subsumed, 4 keeps its reason.
	e.checkpoint(4)
	acks = append(acks, e.checkpoint(5))
	e.coord.Event(4, messages.Aborted, messages.AbortTimeout)
	e.coord.Event(5, messages.Completed, 0)
	e.coord.Event(3, messages.Completed, 0) // late: already reported
	want := []string{"completed 1", "aborted 2: " + messages.AbortDeclined.String(),
		"aborted 3: subsumed by checkpoint 5", "aborted 4: " + messages.AbortTimeout.String(), "completed 5"}
	waitCalls(t, r.rt, m, want...)
	var snaps []uint64
	if err := r.rt.Do(e.ctx(), func() { snaps = slices.Clone(m.snapshots) }); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(snaps, []uint64{1, 2, 3, 4, 5}) {
		t.Fatalf("SnapshotFor got %v, want 1 to 5", snaps)
	}
	r.stop(t)

	// A restored instance hears first that the restored checkpoint completed, before any
	// record.
	e.writeManifest(5, acks[3])
	m2 := &listenerMachine{}
	r2 := e.start("counter-0", m2)
	last = e.publish("counter-0", []byte("3"))
	waitPosition(t, r2.rt, last)
	var calls []string
	var n uint64
	if err := r2.rt.Do(e.ctx(), func() { calls, n = slices.Clone(m2.calls), m2.n }); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(calls, []string{"completed 5", "record"}) || n != 3 {
		t.Fatalf("after the restore: calls %q and %d records, want [completed 5 record] and 3", calls, n)
	}
}
