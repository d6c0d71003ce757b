package operator_test

import (
	"errors"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/cairn-stream/cairn/internal/natstest"
	"github.com/cairn-stream/cairn/pkg/messages"
	"github.com/cairn-stream/cairn/pkg/operator"
	"github.com/cairn-stream/cairn/pkg/operator/state"
)

// embeddingKeyed is the trap of issue 14: a Machine that embeds a Keyed to add the
// checkpoint id.
type embeddingKeyed struct {
	operator.Keyed
	ids []uint64
}

func (m *embeddingKeyed) SnapshotFor(id uint64) (operator.Snapshot, error) {
	m.ids = append(m.ids, id)
	return m.Keyed.Snapshot()
}

// wrappingKeyed is a decorator that holds a Keyed and forwards the Machine methods.
type wrappingKeyed struct{ k operator.Keyed }

func (w wrappingKeyed) Apply(rec operator.Record) error      { return w.k.Apply(rec) }
func (w wrappingKeyed) Snapshot() (operator.Snapshot, error) { return w.k.Snapshot() }
func (w wrappingKeyed) Restore(r io.Reader) error            { return w.k.Restore(r) }

// TestMachineEmbeddingKeyedIsRefused is acceptance 5 of issue 14: New refuses a Machine
// that embeds a Keyed, before anything touches the server, with an error that says what
// to do.
func TestMachineEmbeddingKeyedIsRefused(t *testing.T) {
	e := newEnv(t)
	m := &embeddingKeyed{Keyed: newKeyed(t, operator.KeyedConfig{})}
	_, err := operator.New(e.nc, operator.DefaultConfig(testJob, "kv-0"), m)
	if !errors.Is(err, operator.ErrWrappedKeyed) {
		t.Fatalf("New = %v, want ErrWrappedKeyed", err)
	}
	for _, want := range []string{"*operator_test.embeddingKeyed embeds an operator.Keyed", "give the Keyed from NewKeyed itself to New or Run", "KeyedSnapshotter"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	if err := operator.Run(t.Context(), e.nc, operator.DefaultConfig(testJob, "kv-0"), m); !errors.Is(err, operator.ErrWrappedKeyed) {
		t.Fatalf("Run = %v, want ErrWrappedKeyed", err)
	}
	if len(m.ids) != 0 {
		t.Fatalf("SnapshotFor called for %v", m.ids)
	}
}

// TestMachineWrappingKeyedStopsAtTheFirstBarrier: a decorator New cannot see through is
// stopped by Run at the first barrier, which it declines saying why: no checkpoint of it
// is ever taken.
func TestMachineWrappingKeyedStopsAtTheFirstBarrier(t *testing.T) {
	e := newEnv(t)
	const inst = "kv-0"
	r := e.start(inst, wrappingKeyed{k: newKeyed(t, operator.KeyedConfig{})})
	last := e.publish(inst, []byte("p a 1"))
	waitPosition(t, r.rt, last)
	e.barrier(1)
	a := e.nextAck()
	if a.Kind != messages.AckDeclined || !strings.Contains(a.Reason, "wraps") {
		t.Fatalf("ack %+v, want a decline saying the Machine wraps a Keyed", a)
	}
	if err := r.result(t, waitLong); !errors.Is(err, operator.ErrWrappedKeyed) {
		t.Fatalf("Run = %v, want ErrWrappedKeyed", err)
	}
}

// snapshotterKV is a kvMachine that wrongly implements the whole-state
// CheckpointSnapshotter.
type snapshotterKV struct{ kvMachine }

func (snapshotterKV) SnapshotFor(uint64) (operator.Snapshot, error) { return nil, nil }

func TestNewKeyedRefusesACheckpointSnapshotter(t *testing.T) {
	_, err := operator.NewKeyed(snapshotterKV{}, operator.KeyedConfig{})
	if err == nil || !strings.Contains(err.Error(), "implement KeyedSnapshotter") {
		t.Fatalf("NewKeyed = %v, want a refusal pointing to KeyedSnapshotter", err)
	}
}

// taggingKV is a kvMachine that learns the checkpoint ids and outcomes: SnapshotFor puts
// tag/<id>, and the listener records the outcomes and puts done/<id> on completion,
// through the store it keeps.
type taggingKV struct {
	kvMachine
	st    *state.Store
	calls []string
}

func (m *taggingKV) SnapshotFor(id uint64, st *state.Store) error {
	m.calls = append(m.calls, "snapshot "+itoa(id))
	st.Put([]byte("tag/"+itoa(id)), []byte("1"))
	return nil
}

func (m *taggingKV) CheckpointCompleted(id uint64) {
	m.calls = append(m.calls, "completed "+itoa(id))
	m.st.Put([]byte("done/"+itoa(id)), []byte("1"))
}

func (m *taggingKV) CheckpointAborted(id uint64, reason string) {
	m.calls = append(m.calls, "aborted "+itoa(id)+": "+reason)
}

func newTaggingKV(t *testing.T) (*taggingKV, operator.Keyed) {
	t.Helper()
	m := &taggingKV{}
	k, err := operator.NewKeyed(m, operator.KeyedConfig{})
	if err != nil {
		t.Fatal(err)
	}
	m.st = k.Store()
	return m, k
}

// TestKeyedMachineLearnsCheckpointsAndOutcomes: a KeyedMachine is told the id of each
// checkpoint before its changes are captured (and what it writes then goes into that
// checkpoint), and the outcome of each, on the processing goroutine; after a restore it
// hears the restored checkpoint completed first.
func TestKeyedMachineLearnsCheckpointsAndOutcomes(t *testing.T) {
	e := newEnv(t)
	const inst = "kv-0"
	m, k := newTaggingKV(t)
	r := e.start(inst, k)
	last := e.publish(inst, []byte("p a 1"))
	waitPosition(t, r.rt, last)
	ack1 := e.checkpoint(1)
	e.coord.Complete(1, ack1)
	e.checkpoint(2)
	e.coord.Event(2, messages.Aborted, messages.AbortTimeout)
	last = e.publish(inst, []byte("p b 2"))
	waitPosition(t, r.rt, last)
	ack3 := e.checkpoint(3)
	e.coord.Complete(3, ack3)
	var calls []string
	waitCalls := func(n int) {
		t.Helper()
		natstest.Eventually(t, waitLong, "the KeyedMachine was not told", func() bool {
			if err := r.rt.Do(e.ctx(), func() { calls = slices.Clone(m.calls) }); err != nil {
				t.Fatal(err)
			}
			return len(calls) >= n
		})
	}
	waitCalls(6)
	want := []string{"snapshot 1", "completed 1", "snapshot 2", "aborted 2: timeout", "snapshot 3", "completed 3"}
	if !slices.Equal(calls, want) {
		t.Fatalf("calls %q, want %q", calls, want)
	}
	r.stop(t)

	// Checkpoint 3 holds the tags written for checkpoints 1 to 3 and done/1 (written after
	// checkpoint 1's capture, so in aborted checkpoint 2's changes, carried into 3's).
	// done/3 came after checkpoint 3's capture: the restored instance writes it again,
	// hearing that checkpoint 3 completed before any record.
	m, k = newTaggingKV(t)
	r = e.start(inst, k)
	got := storeContents(t, r.rt, k)
	wantState := map[string]string{"a": "1", "b": "2", "tag/1": "1", "tag/2": "1", "tag/3": "1", "done/1": "1", "done/3": "1"}
	if !maps.Equal(got, wantState) {
		t.Fatalf("restored store %v, want %v", got, wantState)
	}
	calls = nil
	waitCalls(1)
	if calls[0] != "completed 3" {
		t.Fatalf("first call after the restore %q, want completed 3", calls[0])
	}
}

func itoa(n uint64) string { return strconv.FormatUint(n, 10) }
