package operator

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/cairn-stream/cairn/pkg/messages"
	"github.com/cairn-stream/cairn/pkg/operator/state"
)

// KeyedMachine is an operator's stateful logic whose state lives in a keyed state store
// that the runtime owns and checkpoints incrementally: it writes no Snapshot or Restore
// code. Wrap it with NewKeyed and give the Keyed it returns to New or Run as it is (a
// Machine that wraps or embeds the Keyed is refused, ErrWrappedKeyed). It may also
// implement, and the runtime discovers on it: Producer (outputs), KeyedSnapshotter (the
// checkpoint id its changes go into) and CheckpointListener (the outcome of each
// checkpoint). All are called on the processing goroutine, where the store may be used: a
// listener keeps the store Keyed.Store returns, since CheckpointListener's methods do not
// carry it.
type KeyedMachine interface {
	// Apply applies one input record to st, on the processing goroutine. An error means
	// the record is malformed: it is counted as rejected and skipped, never retried. The
	// changes it made to st before returning the error stay.
	Apply(rec Record, st *state.Store) error
}

// KeyedSnapshotter is implemented by a KeyedMachine that needs the id of the checkpoint
// its changes go into, as a transactional sink tags the writes a checkpoint covers: the
// keyed form of CheckpointSnapshotter.
type KeyedSnapshotter interface {
	// SnapshotFor is called when checkpoint id's barrier arrives, before the store's
	// changes are captured: the changes since the last capture, and those SnapshotFor
	// makes to st, go into checkpoint id (and, when it aborts, into the next one). An
	// error declines the barrier; the changes stay and go into the next checkpoint.
	SnapshotFor(id uint64, st *state.Store) error
}

// Defaults of KeyedConfig.
const (
	// DefaultMaxDeltas is the default KeyedConfig.MaxDeltas.
	DefaultMaxDeltas = 512
	// DefaultDeltaRatio is the default KeyedConfig.DeltaRatio.
	DefaultDeltaRatio = 3.0
)

// KeyedConfig bounds the chain of delta segments behind an instance's base; the zero
// value means the defaults. A checkpoint writes a new base (materialization) instead of a
// delta once the chain would reach MaxDeltas deltas (or the lower limit the checkpoint's
// barrier sets, so that a manifest of every member fits the server's max_payload) or the
// deltas' total size would reach DeltaRatio times the base's. Every checkpoint then
// costs its changes, plus the base once per materialization: about (1 + 1/DeltaRatio)
// times the changed bytes over a long run, while a restore reads at most
// (1 + DeltaRatio) times the state's size.
type KeyedConfig struct {
	// MaxDeltas is the chain length that is never reached: a chain holds at most
	// MaxDeltas-1 deltas (0: DefaultMaxDeltas).
	MaxDeltas int
	// DeltaRatio is the deltas' total size, relative to the base's, that makes the next
	// checkpoint write a new base (0: DefaultDeltaRatio).
	DeltaRatio float64
}

// Validate checks the bounds.
func (c KeyedConfig) Validate() error {
	if c.MaxDeltas < 0 {
		return fmt.Errorf("keyed state: max deltas %d; allowed: 0 (default %d) or more", c.MaxDeltas, DefaultMaxDeltas)
	}
	if c.DeltaRatio < 0 {
		return fmt.Errorf("keyed state: delta ratio %g; allowed: 0 (default %g) or more", c.DeltaRatio, DefaultDeltaRatio)
	}
	return nil
}

func (c KeyedConfig) withDefaults() KeyedConfig {
	if c.MaxDeltas == 0 {
		c.MaxDeltas = DefaultMaxDeltas
	}
	if c.DeltaRatio == 0 {
		c.DeltaRatio = DefaultDeltaRatio
	}
	return c
}

// chain is a checkpointed keyed state: a base and the deltas to apply to it in order.
type chain struct {
	base   *messages.SnapshotRef
	deltas []messages.SnapshotRef
}

// size is the total size of the chain's deltas.
func (c chain) deltaSize() uint64 {
	var n uint64
	for _, d := range c.deltas {
		n += d.Size
	}
	return n
}

// capture is the changes a snapshot for checkpoint id captured.
type capture struct {
	id      uint64
	changes *state.Changes
}

// Keyed is the handle NewKeyed returns: the Machine that runs a KeyedMachine, to give to
// New or Run as it is, and the owner of the machine's state.Store. Only this package
// implements it. Its Machine methods are the runtime's: the runtime checkpoints and
// restores the store itself and never calls Snapshot or Restore (Snapshot fails with
// ErrWrappedKeyed, for a Machine that wraps the Keyed and calls it).
//
// The runtime checkpoints the store incrementally: each checkpoint uploads one delta
// segment holding the puts and deletes since the instance's last completed checkpoint
// (the changes of aborted checkpoints are carried into the next delta), and the manifest
// references the instance's base plus its chain of deltas. Capturing costs O(keys
// changed) on the processing goroutine: the store's dirty keys are swapped out and no
// value is copied (a stored value is never changed in place). When the chain passes the
// bounds of KeyedConfig, the next checkpoint writes a new base instead: the store is
// frozen in O(1), the persister writes the frozen map as a base off the processing
// goroutine while records go on into an overlay, which is folded back at the next
// capture. A restore loads the base and every delta in order, each checked against its
// size and SHA-256; a missing or corrupt segment falls back to an older checkpoint.
// Segments use the format of docs/state-segments.md.
type Keyed interface {
	Machine
	// Store returns the state store. Use it only on the processing goroutine: in
	// KeyedMachine.Apply, in the KeyedMachine's optional interfaces, or through
	// Runtime.Do.
	Store() *state.Store
	checkpointer
}

// keyed is the Keyed NewKeyed returns.
type keyed struct {
	m     KeyedMachine
	cfg   KeyedConfig
	store *state.Store

	// completed is the chain of the newest completed (or restored) checkpoint, and
	// pending the captures taken since, in id order; both belong to the processing
	// goroutine.
	completed chain
	pending   []capture
	// limit is the newest barrier's MaxDeltas (0: none), which lowers cfg.MaxDeltas so
	// that the manifest fits the server's max_payload; processing goroutine only.
	limit int

	// mu guards results: the chain each stored snapshot was acked with, by checkpoint id,
	// written by the persister before the ack and taken by the processing goroutine when
	// the outcome arrives.
	mu      sync.Mutex
	results map[uint64]chain
}

var _ Keyed = (*keyed)(nil)

// NewKeyed returns the Keyed that runs m on a new, empty state.Store, with the chain
// bounds cfg (its zero value: the defaults). It refuses a KeyedMachine that implements
// CheckpointSnapshotter, which a keyed store would never call (KeyedSnapshotter is its
// keyed form).
func NewKeyed(m KeyedMachine, cfg KeyedConfig) (Keyed, error) {
	if m == nil {
		return nil, errors.New("keyed state: nil KeyedMachine")
	}
	if _, ok := m.(CheckpointSnapshotter); ok {
		return nil, fmt.Errorf("keyed state: %T implements CheckpointSnapshotter (SnapshotFor(id) (Snapshot, error)), which a keyed state store never calls: implement KeyedSnapshotter (SnapshotFor(id uint64, st *state.Store) error) instead", m)
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &keyed{m: m, cfg: cfg.withDefaults(), store: state.New(), results: map[uint64]chain{}}, nil
}

// Store implements Keyed.
func (k *keyed) Store() *state.Store { return k.store }

// Apply implements Machine.
func (k *keyed) Apply(rec Record) error { return k.m.Apply(rec, k.store) }

// Snapshot implements Machine. The runtime never calls it on a Keyed it runs (it takes
// incremental snapshots per checkpoint): it fails with ErrWrappedKeyed, for a Machine that
// wraps the Keyed and calls it.
func (k *keyed) Snapshot() (Snapshot, error) {
	return nil, fmt.Errorf("keyed state: Snapshot called on an operator.Keyed by a Machine that wraps it: %w; give the Keyed itself to New or Run", ErrWrappedKeyed)
}

// Restore implements Machine: it replaces the state with a single base segment read from
// r. The runtime restores a chain with restoreChain instead.
func (k *keyed) Restore(r io.Reader) error {
	if err := k.store.Load(r); err != nil {
		return err
	}
	k.completed, k.pending = chain{}, nil
	return nil
}

// machine implements checkpointer: a type that embeds the Keyed gets this method
// promoted, and returns the embedded Keyed, which New tells from the Machine it was given.
func (k *keyed) machine() Machine { return k }

// snapshot implements checkpointer: it takes the barrier's chain limit, lets a
// KeyedSnapshotter act first, captures the changes since the last snapshot and returns
// the snapshot of checkpoint id, which writes the changes since the last completed
// checkpoint as a delta, or a new base when the chain is past its bounds (or there is no
// base yet).
func (k *keyed) snapshot(id uint64, maxDeltas int) (Snapshot, error) {
	k.limit = maxDeltas
	if s, ok := k.m.(KeyedSnapshotter); ok {
		if err := s.SnapshotFor(id, k.store); err != nil {
			return nil, fmt.Errorf("keyed snapshot for checkpoint %d: %w", id, err)
		}
	}
	k.pending = append(k.pending, capture{id: id, changes: k.store.Capture()})
	snap := &keyedSnapshot{k: k, id: id, prev: k.completed}
	var size uint64
	for _, c := range k.pending {
		snap.captures = append(snap.captures, c.changes)
		size += uint64(c.changes.Size())
	}
	if k.completed.base != nil && k.pastBounds(size) {
		snap.view = k.store.Freeze() // nil while the last base is still being written
	}
	return snap, nil
}

// pastBounds reports whether a chain that grows by a delta of about size bytes passes
// the bounds, or has its base in the snapshot store shared before stores were per job (a
// new base in the job's store lets references to that store die out).
func (k *keyed) pastBounds(size uint64) bool {
	c := k.completed
	most := k.cfg.MaxDeltas
	if k.limit > 0 {
		most = min(most, k.limit)
	}
	return c.base.Store == "" || len(c.deltas)+1 >= most ||
		float64(c.deltaSize()+size) >= k.cfg.DeltaRatio*float64(c.base.Size)
}

// save implements checkpointer: see persister.storeKeyed.
func (k *keyed) save(ctx context.Context, p *persister, j persistJob) (messages.SnapshotRef, []messages.SnapshotRef, uint64, error) {
	s, ok := j.snap.(*keyedSnapshot)
	if !ok {
		return messages.SnapshotRef{}, nil, 0, fmt.Errorf("keyed state: snapshot %T was not taken by the keyed store", j.snap)
	}
	return p.storeKeyed(ctx, j, s)
}

// restore implements checkpointer: it loads the instance's base and deltas.
func (k *keyed) restore(ctx context.Context, r *Runtime, inst messages.InstanceSnapshot) error {
	return r.restoreChain(ctx, k, inst)
}

// listener implements checkpointer: the Keyed hears every outcome (its chain depends on
// them) and passes it on to a KeyedMachine that is a CheckpointListener.
func (k *keyed) listener() CheckpointListener { return keyedOutcomes{k} }

// producer implements checkpointer: the KeyedMachine, when it is a Producer.
func (k *keyed) producer() Producer {
	p, _ := k.m.(Producer)
	return p
}

// keyedOutcomes is a Keyed's CheckpointListener.
type keyedOutcomes struct{ k *keyed }

// CheckpointCompleted: the chain acked for id becomes the one the next deltas build on,
// the captures it covers are dropped, and the KeyedMachine hears of it.
func (o keyedOutcomes) CheckpointCompleted(id uint64) {
	k := o.k
	k.mu.Lock()
	c, ok := k.results[id]
	for i := range k.results {
		if i <= id {
			delete(k.results, i)
		}
	}
	k.mu.Unlock()
	if ok {
		k.completed = c
		i := 0
		for i < len(k.pending) && k.pending[i].id <= id {
			i++
		}
		k.pending = k.pending[i:]
	}
	if l, ok := k.m.(CheckpointListener); ok {
		l.CheckpointCompleted(id)
	}
}

// CheckpointAborted: the changes captured for id stay pending and go into the next delta,
// and the KeyedMachine hears of it.
func (o keyedOutcomes) CheckpointAborted(id uint64, reason string) {
	k := o.k
	k.mu.Lock()
	delete(k.results, id)
	k.mu.Unlock()
	if l, ok := k.m.(CheckpointListener); ok {
		l.CheckpointAborted(id, reason)
	}
}

// stored records the chain checkpoint id is acked with; the persister calls it before
// it publishes the ack.
func (k *keyed) stored(id uint64, c chain) {
	k.mu.Lock()
	k.results[id] = c
	k.mu.Unlock()
}

// restored makes c the chain of the restored, completed checkpoint.
func (k *keyed) restored(c chain) { k.completed, k.pending = c, nil }

// keyedSnapshot is a Keyed's snapshot for one checkpoint.
type keyedSnapshot struct {
	k  *keyed
	id uint64
	// prev is the chain of the last completed checkpoint at the capture, and captures
	// the changes since, oldest first.
	prev     chain
	captures []*state.Changes
	// view, when set, is the frozen state to write as a new base.
	view *state.View
}

// isBase reports whether the snapshot writes a base rather than a delta.
func (s *keyedSnapshot) isBase() bool { return s.view != nil || s.prev.base == nil }

// unchanged reports whether a delta would be empty: the last completed chain still holds.
func (s *keyedSnapshot) unchanged() bool {
	if s.isBase() {
		return false
	}
	for _, c := range s.captures {
		if c.Len() > 0 {
			return false
		}
	}
	return true
}

// Persist writes the new base, or the delta of the captured changes.
func (s *keyedSnapshot) Persist(w io.Writer) error {
	var err error
	switch {
	case s.view != nil:
		_, err = s.view.WriteBase(w)
		s.view.Release()
	case s.prev.base == nil:
		// No base yet: the state started empty, so the changes are the whole state.
		_, err = state.WriteSegment(w, state.Base, s.captures...)
	default:
		_, err = state.WriteSegment(w, state.Delta, s.captures...)
	}
	return err
}

// Release lets the store fold its overlay back if the base was not written.
func (s *keyedSnapshot) Release() {
	if s.view != nil {
		s.view.Release()
	}
	s.captures = nil
}
