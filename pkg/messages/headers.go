package messages

// NATS header names Cairn sets on its messages.
const (
	// HeaderCheckpointID carries the checkpoint id (decimal) on barriers and checkpoint events.
	HeaderCheckpointID = "Cairn-Checkpoint-Id"
	// HeaderConfigVersion carries the config version (decimal) on config events, barriers
	// and checkpoint events.
	HeaderConfigVersion = "Cairn-Config-Version"
	// HeaderInputSequence carries, on an operator's output, the input stream sequence of
	// the record it came from (decimal).
	HeaderInputSequence = "Cairn-Input-Sequence"
	// HeaderOutputIndex carries, on an operator's output, its index among the outputs of
	// that record (decimal, from 0).
	HeaderOutputIndex = "Cairn-Output-Index"
	// ContentTypeMsgpack is the Content-Type value that makes a set request msgpack.
	ContentTypeMsgpack = "application/msgpack"
)
