package messages

import (
	"errors"
	"fmt"
	"time"
)

// Outcome is how a checkpoint ended. Append-only.
type Outcome int

// Outcome values.
const (
	// Completed: every expected instance acked and the manifest is written.
	Completed Outcome = 1
	// Aborted: the checkpoint ended without a manifest; see AbortReason.
	Aborted Outcome = 2
)

// String returns the outcome's name, as used in subjects.
func (o Outcome) String() string {
	switch o {
	case Completed:
		return "completed"
	case Aborted:
		return "aborted"
	}
	return fmt.Sprintf("Outcome(%d)", int(o))
}

// AbortReason says why a checkpoint was aborted. Append-only.
type AbortReason int

// AbortReason values.
const (
	// AbortTimeout: not every expected instance acked within the timeout.
	AbortTimeout AbortReason = 1
	// AbortDeclined: an instance declined the barrier.
	AbortDeclined AbortReason = 2
	// AbortInstanceLost: an expected instance's registration vanished or its incarnation
	// changed.
	AbortInstanceLost AbortReason = 3
	// AbortStorage: the manifest or the snapshot could not be stored.
	AbortStorage AbortReason = 4
	// AbortSubsumed: a newer checkpoint completed first.
	AbortSubsumed AbortReason = 5
	// AbortCoordinatorChange: the coordinator that triggered it lost its lease or stopped.
	AbortCoordinatorChange AbortReason = 6
	// AbortStorageFull: an instance could not upload its snapshot because CAIRN_SNAPSHOTS
	// (or the server's store) is full. Retention frees space and checkpointing resumes.
	AbortStorageFull AbortReason = 7
)

// String returns the reason's name.
func (r AbortReason) String() string {
	switch r {
	case AbortTimeout:
		return "timeout"
	case AbortDeclined:
		return "declined"
	case AbortInstanceLost:
		return "instance_lost"
	case AbortStorage:
		return "storage_error"
	case AbortSubsumed:
		return "subsumed"
	case AbortCoordinatorChange:
		return "coordinator_change"
	case AbortStorageFull:
		return "storage_full"
	}
	return fmt.Sprintf("AbortReason(%d)", int(r))
}

// Counted reports whether the reason counts toward tolerable_failures (as in Flink: only
// timeouts, declines and storage errors, a full store included). A reason newer than this
// build does not count.
func (r AbortReason) Counted() bool {
	return r == AbortTimeout || r == AbortDeclined || r == AbortStorage || r == AbortStorageFull
}

// CheckpointEvent is published on cairn.checkpoints.<job>.completed or .aborted when a
// checkpoint ends.
type CheckpointEvent struct {
	Schema        int       `msgpack:"schema"`
	Job           string    `msgpack:"job"`
	CheckpointID  uint64    `msgpack:"id"`
	ConfigVersion uint64    `msgpack:"config_version"`
	Outcome       Outcome   `msgpack:"outcome"`
	TriggeredAt   time.Time `msgpack:"triggered_at"`
	FinishedAt    time.Time `msgpack:"finished_at"`
	// Participants are the instances expected to ack.
	Participants []string `msgpack:"participants"`
	// Bytes is the total size of the snapshots the manifest references (completed only).
	Bytes uint64 `msgpack:"bytes,omitempty"`
	// Written is how many of those bytes this checkpoint uploaded; unchanged snapshots
	// are referenced, not written again (completed only).
	Written uint64 `msgpack:"written,omitempty"`
	// Reason and Detail explain an abort.
	Reason AbortReason `msgpack:"reason,omitempty"`
	Detail string      `msgpack:"detail,omitempty"`
	// Failed is true when, after this event, the job's consecutive counted failures exceed
	// tolerable_failures.
	Failed bool `msgpack:"failed,omitempty"`
}

// SchemaVersion implements Message.
func (e *CheckpointEvent) SchemaVersion() int { return e.Schema }

// Validate implements Message.
func (e *CheckpointEvent) Validate() error {
	if err := ValidateName("job", e.Job); err != nil {
		return err
	}
	if e.CheckpointID == 0 {
		return errors.New("checkpoint event: checkpoint id 0; allowed: 1 and up")
	}
	// Outcomes and abort reasons newer than this build are accepted: a reader only shows
	// them (as their number) and never acts on them.
	if e.Outcome < Completed {
		return fmt.Errorf("checkpoint event: outcome %d; allowed: %d (completed), %d (aborted) or a newer one", int(e.Outcome), int(Completed), int(Aborted))
	}
	if e.Outcome == Aborted && e.Reason < AbortTimeout {
		return fmt.Errorf("checkpoint event: abort reason %d; allowed: %d-%d or a newer one", int(e.Reason), int(AbortTimeout), int(AbortStorageFull))
	}
	return nil
}

// InstanceSnapshot is one member's part of a manifest. Every manifest holds every member
// of the job: a member that was absent when the checkpoint was triggered keeps the
// snapshot and positions of the last checkpoint it acked (carried forward).
type InstanceSnapshot struct {
	// Incarnation is the process that took the snapshot.
	Incarnation string `msgpack:"incarnation"`
	// Snapshot is the member's state, or the base of its chain when Deltas is set.
	Snapshot SnapshotRef `msgpack:"snapshot"`
	// Deltas are the delta segments to apply to Snapshot in order (a keyed state store's
	// incremental checkpoints). A reader that ignores them restores a wrong state, which
	// is why the acks that carry them have kind AckChain; see docs/compatibility.md.
	Deltas []SnapshotRef `msgpack:"deltas,omitempty"`
	// Positions maps each input stream to the last sequence the snapshot includes.
	Positions map[string]uint64 `msgpack:"positions"`
	// Filters maps each input stream to the subject filters the member reads from it.
	Filters map[string][]string `msgpack:"filters,omitempty"`
	// Checkpoint is the id of the checkpoint whose barrier the snapshot answered: the
	// manifest's own id, or an older one when the member was absent and its state was
	// carried forward. 0 in manifests written before carry-forward existed (same as the
	// manifest's id).
	Checkpoint uint64 `msgpack:"checkpoint,omitempty"`
	// AbsentSince is set while the state is carried forward: since when the member has
	// not taken part in checkpoints.
	AbsentSince time.Time `msgpack:"absent_since,omitempty"`
}

// Refs returns every object the member's state needs: the snapshot (base), then the
// deltas in order. Retention keeps all of them.
func (s InstanceSnapshot) Refs() []SnapshotRef {
	return append([]SnapshotRef{s.Snapshot}, s.Deltas...)
}

// From is the id of the checkpoint the member's state comes from in manifest id.
func (s InstanceSnapshot) From(id uint64) uint64 {
	if s.Checkpoint == 0 {
		return id
	}
	return s.Checkpoint
}

// Manifest records a completed checkpoint; it is stored in KV CAIRN_MANIFESTS under
// <job>.<id> and <job>.latest, and a savepoint's also under <job>.savepoint.<name>.
type Manifest struct {
	Schema        int                         `msgpack:"schema"`
	Job           string                      `msgpack:"job"`
	CheckpointID  uint64                      `msgpack:"id"`
	ConfigVersion uint64                      `msgpack:"config_version"`
	TriggeredAt   time.Time                   `msgpack:"triggered_at"`
	CompletedAt   time.Time                   `msgpack:"completed_at"`
	Instances     map[string]InstanceSnapshot `msgpack:"instances"`
	// Token is the fencing token (lease revision) under which the coordinator wrote the
	// manifest; 0 (absent) from a coordinator before tokens. A coordinator does not move
	// <job>.latest from a manifest with a higher token than its own.
	Token uint64 `msgpack:"token,omitempty"`
	// Savepoint names the savepoint the checkpoint was taken as (its manifest is also
	// stored under <job>.savepoint.<name>); empty for other checkpoints.
	Savepoint string `msgpack:"savepoint,omitempty"`
}

// SchemaVersion implements Message.
func (m *Manifest) SchemaVersion() int { return m.Schema }

// Validate implements Message.
func (m *Manifest) Validate() error {
	if err := ValidateName("job", m.Job); err != nil {
		return err
	}
	if m.CheckpointID == 0 {
		return errors.New("manifest: checkpoint id 0; allowed: 1 and up")
	}
	for name, s := range m.Instances {
		if err := ValidateName("instance", name); err != nil {
			return fmt.Errorf("manifest: %w", err)
		}
		if s.Snapshot.Object == "" || s.Snapshot.Digest == "" {
			return fmt.Errorf("manifest: instance %s has no snapshot object or digest", name)
		}
		for _, ref := range s.Refs() {
			if err := ref.validateStore(); err != nil {
				return fmt.Errorf("manifest: instance %s: %w", name, err)
			}
		}
		for i, d := range s.Deltas {
			if d.Object == "" || d.Digest == "" {
				return fmt.Errorf("manifest: instance %s: delta %d has no object or digest", name, i)
			}
		}
		if s.Checkpoint > m.CheckpointID {
			return fmt.Errorf("manifest: instance %s has state of checkpoint %d, newer than the manifest's %d", name, s.Checkpoint, m.CheckpointID)
		}
	}
	return nil
}

// Bytes is the total size of the snapshots the manifest references, deltas included.
func (m *Manifest) Bytes() uint64 {
	var n uint64
	for _, s := range m.Instances {
		n += bytesOf(s.Refs())
	}
	return n
}

// MemberEventKind says what happened to a job's member. Append-only.
type MemberEventKind int

// MemberEventKind values.
const (
	// MemberRemoved: the member was removed on request; manifests no longer hold it.
	MemberRemoved MemberEventKind = 1
	// MemberResetState: the member started empty on purpose (--reset-state), dropping
	// the state its checkpoints held.
	MemberResetState MemberEventKind = 2
	// MemberInputGapAccepted: the member restored a checkpoint whose input had been
	// partly removed, and was told to go on (--accept-input-gap).
	MemberInputGapAccepted MemberEventKind = 3
	// MemberOutputsReemitted: the member was told to publish again the outputs of the
	// input it replays after its restore that were already stored (--reemit-outputs),
	// under message ids no earlier output has.
	MemberOutputsReemitted MemberEventKind = 4
)

// String returns the kind's name.
func (k MemberEventKind) String() string {
	switch k {
	case MemberRemoved:
		return "removed"
	case MemberResetState:
		return "reset_state"
	case MemberInputGapAccepted:
		return "input_gap_accepted"
	case MemberOutputsReemitted:
		return "outputs_reemitted"
	}
	return fmt.Sprintf("MemberEventKind(%d)", int(k))
}

// MemberEvent is the audit record of a deliberate change to a member's state, published
// on cairn.checkpoints.<job>.members (stream CAIRN_CHECKPOINTS).
type MemberEvent struct {
	Schema   int             `msgpack:"schema"`
	Job      string          `msgpack:"job"`
	Instance string          `msgpack:"instance"`
	Kind     MemberEventKind `msgpack:"kind"`
	At       time.Time       `msgpack:"at"`
	// Incarnation is the operator process that reset, accepted a gap or re-emitted
	// outputs; for a removal, the
	// incarnation the member's last state came from.
	Incarnation string `msgpack:"incarnation,omitempty"`
	// Checkpoint is, for a removal, the first checkpoint whose manifest no longer holds
	// the member; for a reset, an accepted gap or re-emitted outputs, the checkpoint whose
	// state was dropped or restored (0: none).
	Checkpoint uint64 `msgpack:"checkpoint,omitempty"`
	// By names who asked (a coordinator id for a removal).
	By string `msgpack:"by,omitempty"`
	// Detail says what was dropped or skipped.
	Detail string `msgpack:"detail,omitempty"`
}

// SchemaVersion implements Message.
func (e *MemberEvent) SchemaVersion() int { return e.Schema }

// Validate implements Message.
func (e *MemberEvent) Validate() error {
	if err := ValidateName("job", e.Job); err != nil {
		return err
	}
	if err := ValidateName("instance", e.Instance); err != nil {
		return err
	}
	// Kinds newer than this build are accepted: member events are an audit record that
	// readers show, never act on.
	if e.Kind < MemberRemoved {
		return fmt.Errorf("member event: kind %d; allowed: %d-%d or a newer one", int(e.Kind), int(MemberRemoved), int(MemberOutputsReemitted))
	}
	return nil
}
