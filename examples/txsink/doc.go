// Command txsink is a transactional sink on Cairn's checkpoint lifecycle: it keeps a
// running sum per key of the events {"key":"...","value":N} on stream SINK_IN, subject
// sink.in.<instance>, and for every event writes {"key","value","sum"} to stream
// SINK_OUT, subject sink.out.<instance> — but only once the checkpoint whose snapshot
// covers the event has completed. Nothing becomes visible that a restore could undo, and
// nothing is written twice.
//
// How: Apply buffers each write. SnapshotFor tags the untagged writes with the checkpoint
// id and stores every buffered write in the snapshot. CheckpointCompleted publishes the
// writes tagged with that id or an older one, each with the Nats-Msg-Id
// "<instance>.<input sequence>", and drops them. A process that dies before the
// completion restores an older checkpoint and replays the events, writing the same
// writes again (still buffered); one that dies after the completion but before it
// published restores that checkpoint, whose snapshot still holds the writes, and the
// runtime calls CheckpointCompleted for it again: the writes are published again under
// the same ids, and SINK_OUT's duplicate window drops those already stored. Exactly-once
// therefore holds within the duplicate window of SINK_OUT (2 minutes by default);
// examples/keyedsink lifts that limit by reading the last write stored before publishing.
//
//	NATS_URL=nats://localhost:4222 INSTANCE=sink-0 go run ./examples/txsink
package main
