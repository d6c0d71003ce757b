package operator

import (
	"context"
	"errors"
	"fmt"

	"github.com/cairn-stream/cairn/pkg/messages"
)

// ErrWrappedKeyed is returned (wrapped) by New for a Machine that embeds a Keyed, and by Run
// at the first barrier for a Machine that wraps one (calls its Snapshot): a keyed state
// store is checkpointed, and its checkpoints restored, only when the Keyed that NewKeyed
// returned is itself the Machine given to New or Run. A wrapper or an embedding type
// would checkpoint it as it cannot restore it. Give the Keyed to New or Run, and
// implement what the wrapper added on the KeyedMachine it runs: KeyedSnapshotter (the
// checkpoint id), CheckpointListener (outcomes), Producer (outputs).
var ErrWrappedKeyed = errors.New("a Machine that wraps or embeds an operator.Keyed cannot checkpoint it")

// checkpointer takes, stores and restores a Machine's snapshots and hands the runtime the
// Machine's optional interfaces. The runtime reaches every Machine through one, never
// through the Machine's concrete type, so that a decorator cannot change how a
// checkpoint is taken or restored. The Keyed NewKeyed returns implements it with its own
// methods; every other Machine runs behind plainCheckpointer.
type checkpointer interface {
	// machine returns the Machine this checkpointer checkpoints; for a type that embeds a
	// Keyed, the embedded Keyed, not the type itself.
	machine() Machine
	// snapshot captures the state for checkpoint id, between two records. maxDeltas is the
	// barrier's limit on a keyed chain (0: none).
	snapshot(id uint64, maxDeltas int) (Snapshot, error)
	// save stores a snapshot that snapshot returned; written is the bytes uploaded (0 when
	// an object already stored is referenced).
	save(ctx context.Context, p *persister, j persistJob) (ref messages.SnapshotRef, deltas []messages.SnapshotRef, written uint64, err error)
	// restore replaces the state with the instance's snapshot in a manifest.
	restore(ctx context.Context, r *Runtime, inst messages.InstanceSnapshot) error
	// listener returns what hears checkpoint outcomes, nil for none.
	listener() CheckpointListener
	// producer returns what emits outputs, nil for none.
	producer() Producer
}

// checkpointerOf returns the checkpointer of m, refusing a Machine that embeds a Keyed.
func checkpointerOf(m Machine) (checkpointer, error) {
	cp, ok := m.(checkpointer)
	if !ok {
		return plainCheckpointer{m}, nil
	}
	if cp.machine() != m {
		return nil, fmt.Errorf("operator runtime: %w: %T embeds an operator.Keyed; give the Keyed from NewKeyed itself to New or Run, and implement KeyedSnapshotter, CheckpointListener or Producer on the KeyedMachine it runs",
			ErrWrappedKeyed, m)
	}
	return cp, nil
}

// plainCheckpointer checkpoints a Machine whole: one object per snapshot, written by
// Snapshot.Persist and read back by Machine.Restore.
type plainCheckpointer struct{ m Machine }

func (c plainCheckpointer) machine() Machine { return c.m }

// snapshot calls CheckpointSnapshotter.SnapshotFor when m implements it, Snapshot
// otherwise.
func (c plainCheckpointer) snapshot(id uint64, _ int) (Snapshot, error) {
	if cs, ok := c.m.(CheckpointSnapshotter); ok {
		return cs.SnapshotFor(id)
	}
	return c.m.Snapshot()
}

func (c plainCheckpointer) save(ctx context.Context, p *persister, j persistJob) (messages.SnapshotRef, []messages.SnapshotRef, uint64, error) {
	ref, uploaded, err := p.store(ctx, j)
	var written uint64
	if uploaded {
		written = ref.Size
	}
	return ref, nil, written, err
}

func (c plainCheckpointer) restore(ctx context.Context, r *Runtime, inst messages.InstanceSnapshot) error {
	if len(inst.Deltas) > 0 {
		return fmt.Errorf("snapshot %s has %d delta segments: it was taken by a keyed state store (operator.Keyed), and this Machine is not one", inst.Snapshot.Object, len(inst.Deltas))
	}
	return r.fetchAndRestore(ctx, inst.Snapshot)
}

func (c plainCheckpointer) listener() CheckpointListener {
	l, _ := c.m.(CheckpointListener)
	return l
}

func (c plainCheckpointer) producer() Producer {
	p, _ := c.m.(Producer)
	return p
}
