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
	}
	return fmt.Sprintf("AbortReason(%d)", int(r))
}

// Counted reports whether the reason counts toward tolerable_failures (as in Flink: only
// timeouts, declines and storage errors).
func (r AbortReason) Counted() bool {
	return r == AbortTimeout || r == AbortDeclined || r == AbortStorage
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
	switch e.Outcome {
	case Completed:
	case Aborted:
		if e.Reason < AbortTimeout || e.Reason > AbortCoordinatorChange {
			return fmt.Errorf("checkpoint event: abort reason %d; allowed: %d-%d", int(e.Reason), int(AbortTimeout), int(AbortCoordinatorChange))
		}
	default:
		return fmt.Errorf("checkpoint event: outcome %d; allowed: %d (completed) or %d (aborted)", int(e.Outcome), int(Completed), int(Aborted))
	}
	return nil
}

// InstanceSnapshot is one instance's part of a manifest.
type InstanceSnapshot struct {
	Incarnation string            `msgpack:"incarnation"`
	Snapshot    SnapshotRef       `msgpack:"snapshot"`
	Positions   map[string]uint64 `msgpack:"positions"`
}

// Manifest records a completed checkpoint; it is stored in KV CAIRN_MANIFESTS under
// <job>.<id> and <job>.latest.
type Manifest struct {
	Schema        int                         `msgpack:"schema"`
	Job           string                      `msgpack:"job"`
	CheckpointID  uint64                      `msgpack:"id"`
	ConfigVersion uint64                      `msgpack:"config_version"`
	TriggeredAt   time.Time                   `msgpack:"triggered_at"`
	CompletedAt   time.Time                   `msgpack:"completed_at"`
	Instances     map[string]InstanceSnapshot `msgpack:"instances"`
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
	}
	return nil
}

// Bytes is the total size of the snapshots the manifest references.
func (m *Manifest) Bytes() uint64 {
	var n uint64
	for _, s := range m.Instances {
		n += s.Snapshot.Size
	}
	return n
}
