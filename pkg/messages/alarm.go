package messages

import (
	"errors"
	"fmt"
	"time"
)

// AlarmKind says whether an alarm was raised or cleared. Append-only.
type AlarmKind int

// AlarmKind values.
const (
	// AlarmRaised: the same abort reason ended several checkpoints in a row.
	AlarmRaised AlarmKind = 1
	// AlarmCleared: a checkpoint completed after an alarm was raised.
	AlarmCleared AlarmKind = 2
)

// String returns the kind's name.
func (k AlarmKind) String() string {
	switch k {
	case AlarmRaised:
		return "raised"
	case AlarmCleared:
		return "cleared"
	}
	return fmt.Sprintf("AlarmKind(%d)", int(k))
}

// AlarmEvent is published on cairn.checkpoints.<job>.alarms (stream CAIRN_CHECKPOINTS)
// when the coordinator raises or clears a job's alarm: an abort reason that repeated
// several times in a row, whatever tolerable_failures says, until a checkpoint completes.
type AlarmEvent struct {
	Schema int       `msgpack:"schema"`
	Job    string    `msgpack:"job"`
	Kind   AlarmKind `msgpack:"kind"`
	At     time.Time `msgpack:"at"`
	// Reason is the abort reason that repeated.
	Reason AbortReason `msgpack:"reason"`
	// Count is how many checkpoints in a row it aborted: when raised, the threshold; when
	// cleared, the whole run.
	Count int `msgpack:"count"`
	// Since is when the first of them aborted.
	Since time.Time `msgpack:"since"`
	// Checkpoint is the checkpoint whose abort raised the alarm, or whose completion
	// cleared it.
	Checkpoint uint64 `msgpack:"checkpoint"`
	// Detail is the last abort's detail.
	Detail string `msgpack:"detail,omitempty"`
	// Coordinator is the id of the coordinator that raised or cleared it.
	Coordinator string `msgpack:"coordinator,omitempty"`
}

// SchemaVersion implements Message.
func (e *AlarmEvent) SchemaVersion() int { return e.Schema }

// Validate implements Message.
func (e *AlarmEvent) Validate() error {
	if err := ValidateName("job", e.Job); err != nil {
		return err
	}
	// Kinds and reasons newer than this build are accepted: alarm events are shown,
	// never acted on.
	if e.Kind < AlarmRaised {
		return fmt.Errorf("alarm event: kind %d; allowed: %d-%d or a newer one", int(e.Kind), int(AlarmRaised), int(AlarmCleared))
	}
	if e.Reason < AbortTimeout {
		return fmt.Errorf("alarm event: abort reason %d; allowed: %d-%d or a newer one", int(e.Reason), int(AbortTimeout), int(AbortStorageFull))
	}
	if e.Count < 1 {
		return errors.New("alarm event: count below 1")
	}
	if e.Checkpoint == 0 {
		return errors.New("alarm event: checkpoint id 0; allowed: 1 and up")
	}
	return nil
}

// Alarm is a job's active alarm in Status: the same abort reason ended Count checkpoints
// in a row, the last of them LastCheckpoint. It stays until a checkpoint completes.
type Alarm struct {
	Reason string `json:"reason"`
	// Count is how many checkpoints in a row the reason aborted, so far.
	Count int `json:"count"`
	// Since is when the first of them aborted, RaisedAt when the alarm was raised.
	Since    time.Time `json:"since"`
	RaisedAt time.Time `json:"raised_at"`
	// LastCheckpoint is the newest checkpoint it aborted, Detail that abort's detail.
	LastCheckpoint uint64 `json:"last_checkpoint"`
	Detail         string `json:"detail,omitempty"`
}
