package operator

import (
	"io"

	"github.com/nats-io/nats.go"
)

// Machine is an operator's stateful logic, modelled on hashicorp/raft's FSM. The runtime
// calls Apply, Snapshot and Restore on one goroutine, never concurrently.
type Machine interface {
	// Apply applies one input record. An error means the record is malformed: it is
	// counted as rejected and skipped, never retried.
	Apply(rec Record) error
	// Snapshot captures the state quickly, between two records. The Snapshot must not
	// share mutable data with the Machine: Apply keeps running while it is persisted.
	Snapshot() (Snapshot, error)
	// Restore replaces all state with the one read from r. It must leave the state
	// unchanged when it returns an error, so that the runtime can fall back to an older
	// snapshot.
	Restore(r io.Reader) error
}

// Snapshot is a captured state, written by Persist off the processing goroutine.
type Snapshot interface {
	// Persist writes the state to w. Equal states should give equal bytes, so that an
	// unchanged state is not uploaded again. It must return: Run waits for the Persist in
	// progress when it stops.
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
	// Subject to publish on; it must be captured by a stream with a duplicate window.
	Subject string
	// Data is the payload.
	Data []byte
}

// Producer is implemented by a Machine that emits outputs. After each Apply the runtime
// takes the outputs and publishes each to JetStream with the Nats-Msg-Id
// "<job>.<instance>.<input sequence>.<n>", retrying until it is stored. A restored
// instance replays the records after its snapshot and publishes the same ids again, which
// the stream's duplicate window drops: exactly-once output within that window.
type Producer interface {
	// TakeOutputs returns the outputs of the last Apply and forgets them.
	TakeOutputs() []Output
}
