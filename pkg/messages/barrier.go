package messages

import (
	"errors"
	"fmt"
	"time"
)

// Barrier is sent by the coordinator on cairn.barrier.<job> to trigger a checkpoint.
type Barrier struct {
	Schema int `msgpack:"schema"`
	// Job the checkpoint belongs to.
	Job string `msgpack:"job"`
	// CheckpointID is 1, 2, 3 … per job, strictly increasing.
	CheckpointID uint64 `msgpack:"id"`
	// ConfigVersion is the config version the checkpoint runs under.
	ConfigVersion uint64 `msgpack:"config_version"`
	// TriggeredAt is when the coordinator triggered the checkpoint: the moment its
	// schedule fired and it sent the barrier (the id was taken from the counter shortly
	// before, see docs/semantics.md "Ids and leases").
	TriggeredAt time.Time `msgpack:"triggered_at"`
	// Coordinator identifies the coordinator (lease holder) that triggered it.
	Coordinator string `msgpack:"coordinator"`
	// Token is the fencing token: the revision of the coordinator's job lease when it
	// triggered the checkpoint. Lease revisions only grow, so a later lease holder's
	// barriers carry higher tokens; operators ignore a barrier whose token is below the
	// highest they have seen. 0 (absent) comes from a coordinator before tokens and is
	// accepted.
	Token uint64 `msgpack:"token,omitempty"`
	// MaxDeltas bounds the delta segments a member's chain may hold in this checkpoint's
	// manifest: fewer than MaxDeltas, the coordinator's share, per member, of the
	// manifest size the server accepts (half its max_payload). An instance whose chain
	// would reach it writes a new base instead. 0 (absent) sets no limit.
	MaxDeltas int `msgpack:"max_deltas,omitempty"`
}

// SchemaVersion implements Message.
func (b *Barrier) SchemaVersion() int { return b.Schema }

// Validate implements Message.
func (b *Barrier) Validate() error {
	if err := ValidateName("job", b.Job); err != nil {
		return err
	}
	if b.CheckpointID == 0 {
		return errors.New("barrier: checkpoint id 0; allowed: 1 and up")
	}
	if b.MaxDeltas < 0 {
		return fmt.Errorf("barrier: max deltas %d; allowed: 0 (no limit) and up", b.MaxDeltas)
	}
	return nil
}

// AckKind says whether an instance took its snapshot. Append-only.
type AckKind int

// AckKind values.
const (
	// AckDone: the snapshot is stored and described by the ack.
	AckDone AckKind = 1
	// AckDeclined: the instance could not snapshot; Reason says why.
	AckDeclined AckKind = 2
	// AckChain: the snapshot is stored as a base (Snapshot) and a chain of deltas
	// (Deltas) to restore in order. It is a kind of its own so that a reader older than
	// chains refuses the ack instead of completing a checkpoint with the base alone.
	AckChain AckKind = 3
)

// String returns the kind's name.
func (k AckKind) String() string {
	switch k {
	case AckDone:
		return "ack"
	case AckDeclined:
		return "decline"
	case AckChain:
		return "chain"
	}
	return fmt.Sprintf("AckKind(%d)", int(k))
}

// SnapshotRef locates one instance's snapshot in an object store.
type SnapshotRef struct {
	// Store is the object store that holds it: the job's own (CAIRN_SNAPSHOTS_<job>),
	// written by operators since snapshots are stored per job; empty for an object in the
	// store shared by every job before (CAIRN_SNAPSHOTS), where older operators put them.
	Store string `msgpack:"store,omitempty"`
	// Object is the object name, <job>/<checkpoint>/<instance> of the checkpoint that
	// uploaded it (an unchanged snapshot keeps referencing the older object).
	Object string `msgpack:"object"`
	// Size in bytes.
	Size uint64 `msgpack:"size"`
	// Digest is the object store's digest, "SHA-256=<base64url>".
	Digest string `msgpack:"digest"`
}

// maxStoreLen bounds SnapshotRef.Store: a JetStream stream name is at most 255 bytes, and
// an object store's stream is OBJ_<store>.
const maxStoreLen = 251

// validateStore checks that Store is empty or an object store name: 1-251 characters from
// [A-Za-z0-9_-].
func (r SnapshotRef) validateStore() error {
	if r.Store == "" {
		return nil
	}
	ok := len(r.Store) <= maxStoreLen
	for i := 0; ok && i < len(r.Store); i++ {
		c := r.Store[i]
		ok = c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-'
	}
	if !ok {
		return fmt.Errorf("snapshot %s: store %q is not an object store name; allowed: empty or 1-%d characters from [A-Za-z0-9_-]", r.Object, r.Store, maxStoreLen)
	}
	return nil
}

// bytesOf is the total size of refs.
func bytesOf(refs []SnapshotRef) uint64 {
	var n uint64
	for _, r := range refs {
		n += r.Size
	}
	return n
}

// Ack is an instance's answer to a barrier on cairn.ack.<job>.<instance> (before acks
// were per instance, on cairn.ack.<job>).
type Ack struct {
	Schema int    `msgpack:"schema"`
	Job    string `msgpack:"job"`
	// CheckpointID is the barrier's checkpoint id.
	CheckpointID uint64 `msgpack:"id"`
	// Instance is the acking instance's id.
	Instance string `msgpack:"instance"`
	// Incarnation is the instance process's incarnation id, new at every start.
	Incarnation string `msgpack:"incarnation"`
	// Kind says ack or decline.
	Kind AckKind `msgpack:"kind"`
	// Reason explains a decline.
	Reason string `msgpack:"reason,omitempty"`
	// StorageFull marks a decline caused by a full snapshot store: the coordinator aborts
	// with AbortStorageFull instead of AbortDeclined. Readers that do not know the field
	// skip it and see a plain decline.
	StorageFull bool `msgpack:"storage_full,omitempty"`
	// Snapshot is set for AckDone and AckChain: the state, or for AckChain its base.
	Snapshot SnapshotRef `msgpack:"snapshot"`
	// Deltas, set for AckChain only, are the delta segments to apply to the base, oldest
	// first (a keyed state store's incremental checkpoint).
	Deltas []SnapshotRef `msgpack:"deltas,omitempty"`
	// Written is how many bytes this checkpoint uploaded: the snapshot's size, or 0 when
	// it references an earlier, identical object; for a chain, the segments it uploaded.
	Written uint64 `msgpack:"written,omitempty"`
	// Positions maps each input stream to the last sequence included in the snapshot.
	Positions map[string]uint64 `msgpack:"positions"`
	// Filters maps each input stream to the subject filters the instance reads from it;
	// the coordinator trims those subjects below the positions of the oldest retained
	// checkpoint (CAIRN_INPUT always, other streams when configured to).
	Filters map[string][]string `msgpack:"filters,omitempty"`
}

// SchemaVersion implements Message.
func (a *Ack) SchemaVersion() int { return a.Schema }

// Validate implements Message.
func (a *Ack) Validate() error {
	if err := ValidateName("job", a.Job); err != nil {
		return err
	}
	if err := ValidateName("instance", a.Instance); err != nil {
		return err
	}
	if a.CheckpointID == 0 {
		return errors.New("ack: checkpoint id 0; allowed: 1 and up")
	}
	if a.Incarnation == "" {
		return errors.New("ack: incarnation is empty")
	}
	for _, ref := range a.Refs() {
		if err := ref.validateStore(); err != nil {
			return fmt.Errorf("ack: %w", err)
		}
	}
	switch a.Kind {
	case AckDone, AckChain:
		if a.Snapshot.Object == "" || a.Snapshot.Digest == "" {
			return errors.New("ack: snapshot object and digest are required for an ack")
		}
		if a.Kind == AckDone && len(a.Deltas) > 0 {
			return errors.New("ack: deltas need kind 3 (chain)")
		}
		for i, d := range a.Deltas {
			if d.Object == "" || d.Digest == "" {
				return fmt.Errorf("ack: delta %d has no object or digest", i)
			}
		}
	case AckDeclined:
		if a.Reason == "" {
			return errors.New("ack: a decline needs a reason")
		}
	default:
		// Not safe to accept: the coordinator cannot tell whether an unknown kind means
		// the snapshot is stored, so the ack is dropped and the checkpoint times out.
		return fmt.Errorf("ack: kind %d; allowed: %d (ack), %d (decline) or %d (chain)", int(a.Kind), int(AckDone), int(AckDeclined), int(AckChain))
	}
	return nil
}

// Refs returns every object the ack references: the snapshot, then the deltas.
func (a *Ack) Refs() []SnapshotRef { return append([]SnapshotRef{a.Snapshot}, a.Deltas...) }
