package messages

import "time"

// Status is the JSON reply to cairn.status.<job>.
type Status struct {
	Job string `json:"job"`
	// Coordinator is the id of the coordinator answering.
	Coordinator string `json:"coordinator"`
	// Holder is the id of the coordinator holding the job's lease (the one triggering).
	Holder string `json:"holder"`
	// Preferred is the coordinator replica that should hold the job's lease (rendezvous
	// hashing over the live replicas), as the answering coordinator sees it.
	Preferred string `json:"preferred,omitempty"`
	// Replicas are the live coordinator replicas the answering coordinator sees, sorted.
	Replicas []string `json:"replicas,omitempty"`
	// Idle is true while the job has no registered instance: no coordinator holds its
	// lease or runs its schedule, and the status comes from a lightweight view.
	Idle bool `json:"idle,omitempty"`
	// Config is the config in force; Config.Version is the applied version.
	Config ConfigView `json:"config"`
	// AppliedAt is when the coordinator applied that version (zero for the defaults).
	AppliedAt *time.Time `json:"applied_at,omitempty"`
	// EffectiveInterval is the interval the schedule runs on now.
	EffectiveInterval string `json:"effective_interval"`
	// NextTrigger is when the next barrier is due; absent while none can be sent
	// (max_concurrent reached or no registered instance).
	NextTrigger *time.Time `json:"next_trigger,omitempty"`
	// Waiting says why no trigger is scheduled, when NextTrigger is absent.
	Waiting string `json:"waiting,omitempty"`
	// Instances are the registered instances of the job.
	Instances []string `json:"instances"`
	// Members are the job's members: every instance the newest manifest holds plus the
	// registered ones, sorted by instance.
	Members []Member `json:"members"`
	// Pending are the checkpoints triggered and not yet ended, oldest first.
	Pending []PendingCheckpoint `json:"pending"`
	// LastCompleted is the newest completed checkpoint, if any.
	LastCompleted *CompletedCheckpoint `json:"last_completed,omitempty"`
	// LastAborted is the newest aborted checkpoint, if any.
	LastAborted *AbortedCheckpoint `json:"last_aborted,omitempty"`
	// Counts since this coordinator took the job.
	Completed uint64 `json:"completed"`
	Aborted   uint64 `json:"aborted"`
	// LateAcks counts acks dropped because their checkpoint had already ended.
	LateAcks uint64 `json:"late_acks"`
	// StaleConfigEvents counts config events ignored because their version was not newer
	// than the applied one (duplicates, redeliveries).
	StaleConfigEvents uint64 `json:"stale_config_events"`
	// ConsecutiveFailures counts timeouts, declines and storage errors since the last success.
	ConsecutiveFailures int `json:"consecutive_failures"`
	// Failed is true while ConsecutiveFailures exceeds tolerable_failures.
	Failed bool `json:"failed"`
	// Savepoints are the job's savepoints, by name, and the input they keep.
	Savepoints []SavepointHold `json:"savepoints,omitempty"`
	// DroppedAcks counts acks dropped because their instance or incarnation was not the
	// one registered when their checkpoint was triggered (a replaced process, a stranger).
	DroppedAcks uint64 `json:"dropped_acks,omitempty"`
	// Alarms are conditions of the job that need a person's attention, oldest first.
	Alarms []Alarm `json:"alarms,omitempty"`
}

// AlarmKind names a condition in Alarm. Append-only.
type AlarmKind string

// AlarmKind values.
const (
	// AlarmManifestsLost: the job's newest manifest was gone though checkpoints had
	// completed (CAIRN_MANIFESTS or its keys deleted, or the bucket created again). Members
	// whose state no manifest holds any more refuse to start until reset on purpose.
	AlarmManifestsLost AlarmKind = "manifests_lost"
	// AlarmAbortsRepeated: one abort reason ended several checkpoints in a row (the
	// coordinator's threshold, 5), whatever tolerable_failures says. It clears when a
	// checkpoint completes.
	AlarmAbortsRepeated AlarmKind = "aborts_repeated"
)

// Alarm is a condition of a job in Status that needs a person's attention. It stays
// while the coordinator answering holds the job's lease.
type Alarm struct {
	Kind AlarmKind `json:"kind"`
	// Since is when the coordinator first saw the condition.
	Since time.Time `json:"since"`
	// Detail says what was seen and what to do.
	Detail string `json:"detail"`
	// Reason, Count and Checkpoint describe an aborts_repeated alarm: the abort reason,
	// how many checkpoints in a row it ended so far, and the newest of them.
	Reason     string `json:"reason,omitempty"`
	Count      int    `json:"count,omitempty"`
	Checkpoint uint64 `json:"checkpoint,omitempty"`
}

// Member is one member of a job in Status.
type Member struct {
	Instance string `json:"instance"`
	// Active is true while the instance is registered.
	Active bool `json:"active"`
	// Incarnation is the registered process, or the one the member's state comes from
	// while it is absent.
	Incarnation string `json:"incarnation,omitempty"`
	// AbsentSince is since when an absent member has not taken part in checkpoints.
	AbsentSince *time.Time `json:"absent_since,omitempty"`
	// Checkpoint is the id of the checkpoint the member's state in the newest manifest
	// comes from (0: no completed checkpoint holds it yet).
	Checkpoint uint64 `json:"checkpoint"`
	// Positions are the input positions of that state.
	Positions map[string]uint64 `json:"positions,omitempty"`
}

// MemberRemoveRequest is the JSON body of cairn.job.members.remove.<job>.
type MemberRemoveRequest struct {
	Instance string `json:"instance"`
}

// MemberRemoval is the JSON reply to a member removal: the first checkpoint whose
// manifest no longer holds the member.
type MemberRemoval struct {
	Job        string    `json:"job"`
	Instance   string    `json:"instance"`
	Checkpoint uint64    `json:"checkpoint"`
	RemovedAt  time.Time `json:"removed_at"`
	// Dropped describes the state that was dropped (its checkpoint and positions).
	Dropped Member `json:"dropped"`
}

// PendingCheckpoint describes a checkpoint in flight.
type PendingCheckpoint struct {
	ID            uint64    `json:"id"`
	ConfigVersion uint64    `json:"config_version"`
	TriggeredAt   time.Time `json:"triggered_at"`
	Deadline      time.Time `json:"deadline"`
	Expected      []string  `json:"expected"`
	Acked         []string  `json:"acked"`
	// Resent counts how often the barrier was sent again to instances that had not acked.
	Resent int `json:"resent,omitempty"`
}

// CompletedCheckpoint summarises a completed checkpoint.
type CompletedCheckpoint struct {
	ID            uint64    `json:"id"`
	ConfigVersion uint64    `json:"config_version"`
	TriggeredAt   time.Time `json:"triggered_at"`
	CompletedAt   time.Time `json:"completed_at"`
	Duration      string    `json:"duration"`
	Bytes         uint64    `json:"bytes"`
	BytesWritten  uint64    `json:"bytes_written"`
	Participants  []string  `json:"participants"`
}

// AbortedCheckpoint summarises an aborted checkpoint.
type AbortedCheckpoint struct {
	ID            uint64    `json:"id"`
	ConfigVersion uint64    `json:"config_version"`
	AbortedAt     time.Time `json:"aborted_at"`
	Reason        string    `json:"reason"`
	Detail        string    `json:"detail,omitempty"`
}

// OperatorState is the JSON reply of the reference operator to cairn.op.<job>.<instance>.state.
type OperatorState struct {
	Instance string `json:"instance"`
	// Position is the last input stream sequence applied.
	Position uint64 `json:"position"`
	// Keys maps each key to its count and sum.
	Keys map[string]KeyTotals `json:"keys"`
	// Rejected counts malformed events skipped.
	Rejected uint64 `json:"rejected"`
}

// OperatorInfo is the JSON reply of every operator instance to
// cairn.op.<job>.<instance>.info, whatever its Machine.
type OperatorInfo struct {
	Schema      int    `json:"schema"`
	Job         string `json:"job"`
	Instance    string `json:"instance"`
	Incarnation string `json:"incarnation"`
	// InputStream and InputFilters are what the instance reads.
	InputStream  string   `json:"input_stream"`
	InputFilters []string `json:"input_filters"`
	// Position is the input stream sequence of the last record applied (or restored).
	Position uint64 `json:"position"`
	// RestoredCheckpoint is the id of the checkpoint the state was restored from, 0 for an
	// empty start; RestoredFrom names it ("checkpoint 7", "savepoint before-upgrade",
	// "latest") and is empty for an empty start.
	RestoredCheckpoint uint64 `json:"restored_checkpoint"`
	RestoredFrom       string `json:"restored_from,omitempty"`
	// Stats are the runtime's counters since the process started.
	Stats OperatorStats `json:"stats"`
	// PoisonPolicy is what the instance does with a record it cannot process:
	// "dead-letter" or "stop". Absent from operators older than the policy.
	PoisonPolicy string `json:"poison_policy,omitempty"`
	// Stopped is set when the instance stopped processing (the stop policy, or a dead
	// letter refused for good): it stays up, declines every barrier, and is unhealthy.
	Stopped *OperatorStopped `json:"stopped,omitempty"`
}

// OperatorStopped says where and why an operator instance stopped processing.
type OperatorStopped struct {
	// Reason says what failed.
	Reason PoisonReason `json:"reason"`
	// Sequence, Stream and Subject name the record it stopped at: the first record not
	// applied; absent when no record is to blame (a CheckpointListener panicked).
	Sequence uint64 `json:"sequence,omitempty"`
	Stream   string `json:"stream,omitempty"`
	Subject  string `json:"subject,omitempty"`
	// Position is the input sequence of the last record applied.
	Position uint64 `json:"position"`
	// Error is the error, or the panic's value.
	Error string `json:"error"`
	// At is when it stopped.
	At time.Time `json:"at"`
}

// PoisonReason says why an operator could not process a record, on a dead letter
// (HeaderDeadLetterReason) and in OperatorStopped. The values are append-only; a reader
// shows one it does not know as it is.
type PoisonReason string

// Reasons a record could not be processed.
const (
	// PoisonPanic: the Machine panicked applying the record (Apply or TakeOutputs).
	PoisonPanic PoisonReason = "panic"
	// PoisonOutputTooLarge: an output of the record exceeds the server's max_payload
	// (with its headers) or the output stream's maximum message size.
	PoisonOutputTooLarge PoisonReason = "output_too_large"
	// PoisonOutputRefused: an output of the record can never be stored: its subject is
	// not a subject to publish to, or JetStream refused it with an error that is not
	// transient, a few times in a row.
	PoisonOutputRefused PoisonReason = "output_refused"
	// PoisonListenerPanic: a CheckpointListener panicked (OperatorStopped only).
	PoisonListenerPanic PoisonReason = "listener_panic"
	// PoisonDeadLetterRefused: the record's dead letter itself could not be stored for
	// good, so the instance stopped at it instead (OperatorStopped only).
	PoisonDeadLetterRefused PoisonReason = "dead_letter_refused"
)

// OperatorStats are an operator instance's counters in OperatorInfo.
type OperatorStats struct {
	Applied  uint64 `json:"applied"`
	Rejected uint64 `json:"rejected"`
	Emitted  uint64 `json:"emitted"`
	// Suppressed counts outputs of replayed input records that were not published again
	// because the output stream already held them.
	Suppressed    uint64 `json:"suppressed"`
	Acked         uint64 `json:"acked"`
	Declined      uint64 `json:"declined"`
	Reused        uint64 `json:"reused"`
	BytesUploaded uint64 `json:"bytes_uploaded"`
	// DeadLettered counts records written to CAIRN_DEADLETTER and skipped.
	DeadLettered uint64 `json:"dead_lettered"`
	// DeadLettersReplayed counts replayed records that CAIRN_DEADLETTER already held:
	// applied again to the restored state, their outputs not published, not written
	// again.
	DeadLettersReplayed uint64 `json:"dead_letters_replayed"`
	// Panics counts the panics of the Machine's code the runtime recovered.
	Panics uint64 `json:"panics"`
}

// KeyTotals is one key's aggregate in OperatorState.
type KeyTotals struct {
	Count int64 `json:"count"`
	Sum   int64 `json:"sum"`
}

// InputEvent is the JSON form of a reference-operator input record.
type InputEvent struct {
	Key   string `json:"key"`
	Value int64  `json:"value"`
}
