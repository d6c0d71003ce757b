// Command keyedsink is a transactional sink on Cairn's keyed state store: examples/txsink
// with its state in the runtime's state.Store, checkpointed incrementally, and with writes
// that stay exactly-once however long the sink is down. It keeps a running sum per key
// of the events {"key":"...","value":N} on stream KSINK_IN, subject
// ksink.in.<instance>, and for every event writes {"key","value","sum"} to stream
// KSINK_OUT, subject ksink.out.<instance> — only once the checkpoint whose state holds
// the event has completed.
//
// How: Apply adds the event to sum/<key> and stores the write under
// pending/<input sequence>. As a KeyedSnapshotter, the sink is told the id of each
// checkpoint before its changes are captured, and tags the untagged pending writes with
// it: the tags go into that checkpoint. As a CheckpointListener it hears each completion
// and publishes, in input order, the writes tagged with that id or an older one, each with
// its input sequence in the header Sink-Input-Sequence, then deletes them from the store
// (the deletes go into the next checkpoint). The listener reaches the store through
// Keyed.Store, which it keeps: CheckpointListener's methods do not carry it, and they run
// on the processing goroutine, where the store may be used.
//
// A sink that dies before a completion restores an older checkpoint and replays the
// events, writing the same writes again (still pending). One that dies after it published
// restores a checkpoint whose state still holds the writes, and the runtime reports that
// checkpoint completed again: before its first publish in a run, the sink reads the last
// write KSINK_OUT holds on its subject (from the stream leader) and skips every write up
// to its input sequence. So no write is stored twice whatever the downtime, as Cairn's
// own outputs (docs/semantics.md); the duplicate window only drops retried publishes.
//
//	NATS_URL=nats://localhost:4222 INSTANCE=ksink-0 go run ./examples/keyedsink
package main
