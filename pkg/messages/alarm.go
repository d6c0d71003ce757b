package messages

import (
	"errors"
	"fmt"
	"time"
)

// AlarmState says whether an alarm was raised or cleared. Append-only.
type AlarmState int

// AlarmState values.
const (
	// AlarmRaised: the condition began.
	AlarmRaised AlarmState = 1
	// AlarmCleared: the condition ended.
	AlarmCleared AlarmState = 2
)

// String returns the state's name.
func (s AlarmState) String() string {
	switch s {
	case AlarmRaised:
		return "raised"
	case AlarmCleared:
		return "cleared"
	}
	return fmt.Sprintf("AlarmState(%d)", int(s))
}

// AlarmEvent is published on cairn.checkpoints.<job>.alarms (stream CAIRN_CHECKPOINTS)
// when the coordinator raises or clears an alarm of a job (Status.Alarms).
type AlarmEvent struct {
	Schema int        `msgpack:"schema"`
	Job    string     `msgpack:"job"`
	Kind   AlarmKind  `msgpack:"kind"`
	State  AlarmState `msgpack:"state"`
	At     time.Time  `msgpack:"at"`
	// Since is when the condition began.
	Since time.Time `msgpack:"since"`
	// Reason and Count are, for aborts_repeated, the abort reason and how many
	// checkpoints in a row it ended: when raised, the threshold; when cleared, the whole
	// run.
	Reason AbortReason `msgpack:"reason,omitempty"`
	Count  int         `msgpack:"count,omitempty"`
	// Checkpoint is the checkpoint whose end raised or cleared the alarm (0: none).
	Checkpoint uint64 `msgpack:"checkpoint,omitempty"`
	// Detail says what was seen.
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
	// Kinds, states and reasons newer than this build are accepted: alarm events are
	// shown, never acted on.
	if e.Kind == "" {
		return errors.New("alarm event: no kind")
	}
	if e.State < AlarmRaised {
		return fmt.Errorf("alarm event: state %d; allowed: %d-%d or a newer one", int(e.State), int(AlarmRaised), int(AlarmCleared))
	}
	if e.Reason < 0 {
		return fmt.Errorf("alarm event: abort reason %d; allowed: 0 (none), %d-%d or a newer one", int(e.Reason), int(AbortTimeout), int(AbortStorageFull))
	}
	if e.Count < 0 {
		return errors.New("alarm event: negative count")
	}
	return nil
}
