package operator

import (
	"io"

	"github.com/nats-io/nats.go"
)

// Machine is an operator's stateful logic, modelled on hashicorp/raft's FSM. The runtime
// calls Apply, Snapshot and Restore on one goroutine, never concurrently.
type Machine interface {
	// Apply applies one input record. An error means the record is malformed: it is
	// counted as rejected and skipped, never retried. A panic is recovered: the record
	// goes to the poison-record policy (Config.OnPoison), and the changes Apply made
	// before it panicked stay, as those of a rejected record do.
	Apply(rec Record) error
	// Snapshot captures the state quickly, between two records. The Snapshot must not
	// share mutable data with the Machine: Apply keeps running while it is persisted. An
	// error or a panic declines the checkpoint.
	Snapshot() (Snapshot, error)
	// Restore replaces all state with the one read from r. It must leave the state
	// unchanged when it returns an error, so that the runtime can fall back to an older
	// snapshot. A panic refuses the start (Run returns an error wrapping ErrPanic): the
	// state may be half replaced.
	Restore(r io.Reader) error
}

// Snapshot is a captured state, written by Persist off the processing goroutine.
type Snapshot interface {
	// Persist writes the state to w. Equal states should give equal bytes, so that an
	// unchanged state is not uploaded again. It must return: Run waits for the Persist in
	// progress when it stops. An error or a panic declines the checkpoint.
	Persist(w io.Writer) error
	// Release is called once when the runtime is done with the snapshot, persisted or not.
	Release()
}

// Record is one input message handed to Machine.Apply.
type Record struct {
	// Subject the message was published on.
	Subject string
	// Data is the message payload.
	Data []byte
	// Header holds the message headers, if any.
	Header nats.Header
	// Sequence is the message's sequence in the input stream.
	Sequence uint64
}

// Output is a record a Machine emits while applying an input record.
type Output struct {
	// Subject to publish on. It must be stored by Config.OutputStream, and should be
	// published to by this instance only (see Producer).
	Subject string
	// Data is the payload.
	Data []byte
}

// Producer is implemented by a Machine that emits outputs. After each Apply the runtime
// takes the outputs and publishes them one at a time, in order, to JetStream, each with
// the Nats-Msg-Id "<job>.<instance>.<input sequence>.<n>" and the headers
// Cairn-Input-Sequence (the input sequence) and Cairn-Output-Index (n, its index among the
// record's outputs), retrying until it is stored.
//
// A restarted instance replays the input after its restored snapshot. The outputs of the
// replayed records that the output stream already holds are not published again,
// however long the instance was down and however old the checkpoint it restored: before
// publishing on a subject for the first time after the start, the runtime reads the
// subject's last message from the stream leader, and an output at or below the position
// it carries is suppressed (counted in Stats.Suppressed). Since outputs are stored in
// order, the first output above its subject's mark ends the checks. The stream's
// duplicate window only drops publishes retried after a lost reply. Config.ReemitOutputs
// publishes the suppressed outputs again on purpose.
//
// This holds when the outputs depend only on the state and the input record (replaying a
// record emits the same outputs on the same subjects), each of the instance's output
// subjects is published to by this instance alone, and the output stream still holds the
// last output of each subject. Otherwise it does not: docs/semantics.md says what happens
// then.
type Producer interface {
	// TakeOutputs returns the outputs of the last Apply and forgets them.
	TakeOutputs() []Output
}
