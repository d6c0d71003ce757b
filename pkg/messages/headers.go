package messages

// NATS header names Cairn sets on its messages.
const (
	// HeaderCheckpointID carries the checkpoint id (decimal) on barriers and checkpoint events.
	HeaderCheckpointID = "Cairn-Checkpoint-Id"
	// HeaderConfigVersion carries the config version (decimal) on config events, barriers
	// and checkpoint events.
	HeaderConfigVersion = "Cairn-Config-Version"
	// ContentTypeMsgpack is the Content-Type value that makes a set request msgpack.
	ContentTypeMsgpack = "application/msgpack"
)
