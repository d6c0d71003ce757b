package messages

import "time"

// TriggerRequest is the optional JSON body of cairn.checkpoint.trigger.<job>: an empty
// body (or {}) asks for a plain manual checkpoint; Savepoint also keeps the checkpoint as
// the named savepoint.
type TriggerRequest struct {
	// Savepoint names the savepoint, a token [A-Za-z0-9_-]{1,64} unused in the job.
	Savepoint string `json:"savepoint,omitempty"`
}

// CheckpointResult is the JSON reply to cairn.checkpoint.trigger.<job>, sent when the
// checkpoint triggered for the request has ended.
type CheckpointResult struct {
	Job string `json:"job"`
	// ID is the checkpoint's id.
	ID uint64 `json:"id"`
	// Outcome is "completed" or "aborted".
	Outcome string `json:"outcome"`
	// Reason and Detail say why an aborted checkpoint ended (AbortReason's names).
	Reason string `json:"reason,omitempty"`
	Detail string `json:"detail,omitempty"`
	// Savepoint is the savepoint's name, for a savepoint request; the savepoint exists
	// only when the outcome is completed.
	Savepoint     string    `json:"savepoint,omitempty"`
	ConfigVersion uint64    `json:"config_version"`
	TriggeredAt   time.Time `json:"triggered_at"`
	FinishedAt    time.Time `json:"finished_at"`
	// Duration is from trigger to end.
	Duration string `json:"duration"`
	// Bytes is the total size of the snapshots the manifest references; BytesWritten how
	// many of them this checkpoint uploaded (completed only).
	Bytes        uint64 `json:"bytes"`
	BytesWritten uint64 `json:"bytes_written"`
	// Participants are the instances the checkpoint waited for.
	Participants []string `json:"participants"`
}

// SavepointRequest is the JSON body of cairn.checkpoint.delete.<job>.
type SavepointRequest struct {
	Savepoint string `json:"savepoint"`
}

// SavepointDeleted is the JSON reply to cairn.checkpoint.delete.<job>.
type SavepointDeleted struct {
	Job       string `json:"job"`
	Savepoint string `json:"savepoint"`
	// ID is the checkpoint the savepoint held.
	ID        uint64    `json:"id"`
	DeletedAt time.Time `json:"deleted_at"`
}

// CheckpointList is the JSON reply to cairn.checkpoint.list.<job>: the retained
// checkpoints, newest first, and the savepoints, by name.
type CheckpointList struct {
	Job         string           `json:"job"`
	Checkpoints []CheckpointInfo `json:"checkpoints"`
	Savepoints  []CheckpointInfo `json:"savepoints"`
}

// CheckpointInfo describes a completed checkpoint in CheckpointList.
type CheckpointInfo struct {
	ID uint64 `json:"id"`
	// Savepoint is the savepoint's name, for a savepoint or a retained checkpoint that was
	// taken as one.
	Savepoint     string    `json:"savepoint,omitempty"`
	ConfigVersion uint64    `json:"config_version"`
	TriggeredAt   time.Time `json:"triggered_at"`
	CompletedAt   time.Time `json:"completed_at"`
	Bytes         uint64    `json:"bytes"`
	// Instances holds every member's snapshot object and input positions.
	Instances map[string]CheckpointInstance `json:"instances"`
}

// CheckpointInstance is one member's part of a CheckpointInfo.
type CheckpointInstance struct {
	// Store is the object store that holds Object: the job's own, CAIRN_SNAPSHOTS_<job>,
	// or "" for the store every job shared before (CAIRN_SNAPSHOTS). A member's chain
	// whose base is in the job's store has its deltas there too.
	Store  string `json:"store"`
	Object string `json:"object"`
	Size   uint64 `json:"size"`
	// Checkpoint is the checkpoint the state comes from (older than the checkpoint's own
	// id when the member was absent and its state carried forward).
	Checkpoint uint64            `json:"checkpoint"`
	Positions  map[string]uint64 `json:"positions,omitempty"`
}

// NewCheckpointInfo describes manifest m.
func NewCheckpointInfo(m *Manifest) CheckpointInfo {
	ci := CheckpointInfo{
		ID: m.CheckpointID, Savepoint: m.Savepoint, ConfigVersion: m.ConfigVersion,
		TriggeredAt: m.TriggeredAt.UTC(), CompletedAt: m.CompletedAt.UTC(), Bytes: m.Bytes(),
		Instances: make(map[string]CheckpointInstance, len(m.Instances)),
	}
	for inst, s := range m.Instances {
		ci.Instances[inst] = CheckpointInstance{Store: s.Snapshot.Store, Object: s.Snapshot.Object, Size: s.Snapshot.Size, Checkpoint: s.From(m.CheckpointID), Positions: s.Positions}
	}
	return ci
}

// SavepointHold is a savepoint in Status: which checkpoint it holds and the input it keeps
// from being trimmed.
type SavepointHold struct {
	Name        string    `json:"name"`
	ID          uint64    `json:"id"`
	CompletedAt time.Time `json:"completed_at"`
	// Instances maps each member the savepoint holds to its input positions and how far
	// behind the newest checkpoint they are.
	Instances map[string]SavepointInput `json:"instances"`
}

// SavepointInput is what a savepoint holds of one member's input.
type SavepointInput struct {
	// Positions maps each input stream to the savepoint's position: trimming keeps every
	// message after it.
	Positions map[string]uint64 `json:"positions"`
	// Behind maps each input stream to the stream sequences between the savepoint's
	// position and the newest checkpoint's: an upper bound on the member's input messages
	// the savepoint keeps beyond what the newest checkpoint needs.
	Behind map[string]uint64 `json:"behind,omitempty"`
}
