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
	// HeaderDeadLetterSequence carries, on a dead letter in CAIRN_DEADLETTER, the input
	// stream sequence of the record (decimal): its position.
	HeaderDeadLetterSequence = "Cairn-Deadletter-Sequence"
	// HeaderDeadLetterStream carries, on a dead letter, the input stream of the record.
	HeaderDeadLetterStream = "Cairn-Deadletter-Stream"
	// HeaderDeadLetterSubject carries, on a dead letter, the subject the record was
	// published on: the subject to publish it to again.
	HeaderDeadLetterSubject = "Cairn-Deadletter-Subject"
	// HeaderDeadLetterReason carries, on a dead letter, why the record could not be
	// processed: a PoisonReason.
	HeaderDeadLetterReason = "Cairn-Deadletter-Reason"
	// HeaderDeadLetterError carries, on a dead letter, the error, on one line, cut to
	// MaxDeadLetterError bytes.
	HeaderDeadLetterError = "Cairn-Deadletter-Error"
	// HeaderDeadLetterIncarnation carries, on a dead letter, the incarnation of the
	// operator instance that wrote it.
	HeaderDeadLetterIncarnation = "Cairn-Deadletter-Incarnation"
	// HeaderDeadLetterSize carries, on a dead letter, the size of the record's payload in
	// bytes (decimal); the dead letter's payload is the record's.
	HeaderDeadLetterSize = "Cairn-Deadletter-Size"
	// HeaderDeadLetterTruncated is set on a dead letter that does not hold the whole
	// record, to what was left out: the record's own headers, the end of its payload, or
	// both ("headers dropped; payload: 1047900 of 1048570 bytes kept"). A dead letter
	// with the whole record does not carry it.
	HeaderDeadLetterTruncated = "Cairn-Deadletter-Truncated"
	// MaxDeadLetterError is the most bytes of the error HeaderDeadLetterError holds.
	MaxDeadLetterError = 4096
	// ContentTypeMsgpack is the Content-Type value that makes a set request msgpack.
	ContentTypeMsgpack = "application/msgpack"
)
