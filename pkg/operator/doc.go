// Package operator is Cairn's operator runtime: the SDK a stateful stream service embeds
// to have its state checkpointed by Cairn.
//
// docs/operator-guide.md in Cairn's repository goes from an empty module to an operator
// of your own; examples/orders is its program.
//
// The common case is one call: Run(ctx, nc, cfg, machine). New returns the Runtime for
// the rest (AddEndpoint, Do, Position, Stats, Info). A Runtime drives one operator
// instance: it waits for the streams and buckets it uses to exist (CAIRN_MANIFESTS,
// CAIRN_LEASES, CAIRN_INSTANCES, CAIRN_CHECKPOINTS, the input stream and, for a Producer,
// the output stream; nothing else; the job's snapshot store CAIRN_SNAPSHOTS_<job>, which
// the coordinator creates, when it first stores or restores a snapshot), restores the instance's state from the newest
// completed checkpoint that holds a usable snapshot of it (or the one Config.RestoreFrom
// names), registers the instance in KV CAIRN_LEASES with a fresh incarnation id and keeps
// the registration alive, follows the input stream's subject filters with one ordered
// consumer, answers the coordinator's barriers (acking on cairn.ack.<job>.<instance>)
// with snapshots stored in the job's object store,
// and serves cairn.op.<job>.<instance>.info through the micro service "cairn-operator".
//
// The connection is the embedder's; New says which connect options keep an instance
// going when its server hangs or goes away, and warns when they are missing.
//
// The package's import graph is its promise to embedders: no nats-server and no logging
// library. It logs through the *slog.Logger in Config (nil: silent) and returns errors
// wrapping its sentinels.
//
// The stateful logic is a Machine, modelled on hashicorp/raft's FSM. Records, barriers and
// Do requests are handled by one goroutine, so a snapshot always sits between two input
// records and records the input stream sequence it includes. Persisting a snapshot runs on
// a second goroutine, in barrier order, so records keep flowing while a snapshot is
// written and uploaded.
//
// A Machine may implement optional interfaces, discovered as net/http discovers
// http.Flusher: Producer (outputs published in order with their input position, never
// stored twice after a restore however long the instance was down: see Producer),
// CheckpointSnapshotter (the checkpoint id at snapshot time) and CheckpointListener (the
// outcome of every checkpoint it took a snapshot for, in id order, on the processing
// goroutine: what a transactional sink needs). BytesSnapshot serves states that are one
// byte slice.
//
// # Keyed state
//
// A Machine whose state is a map of keys to values can instead be a KeyedMachine, run by
// NewKeyed: its Apply reads and writes a state.Store that the runtime owns, and it writes
// no Snapshot or Restore code. It may implement Producer, KeyedSnapshotter (the checkpoint
// id its changes go into) and CheckpointListener. The Keyed that NewKeyed returns is
// itself the Machine given to New or Run: a Machine that embeds or wraps it is refused
// (ErrWrappedKeyed), since its checkpoints could not be restored. Keyed checkpoints are
// incremental: each uploads one delta segment with the changes since the instance's last
// completed checkpoint, captured in O(keys changed); the manifest holds the instance's
// base and chain of deltas; a new base is written, from a frozen view while records go on,
// when the chain passes the bounds of KeyedConfig. See Keyed and docs/state-segments.md.
//
// # Restore
//
// On start the runtime reads <job>.latest from CAIRN_MANIFESTS. An instance that manifest
// does not hold is new: it starts empty and reads its input from the beginning. A member
// restores the newest usable snapshot: the object is downloaded, its SHA-256 is checked
// against the manifest, the Machine restores from it, and the input consumer resumes
// after the stream sequence the snapshot includes. A Keyed member's base and deltas are
// downloaded newest first, several at a time within a byte budget, each checked against
// the size and digest the manifest gives, while the store loads them. A missing or corrupt object is logged at
// error level and the retained manifests <job>.<id> are tried, newest first. A member with
// no usable snapshot refuses to start (ErrNoUsableSnapshot) unless Config.ResetState
// starts it empty on purpose. Before consuming, the input stream is checked for records
// after the restored position that its limits may have removed (ErrInputGap, unless
// Config.AcceptInputGap). A Producer's replayed outputs that the output stream already
// holds are not published again (Config.ReemitOutputs publishes them again on purpose).
// Resets, accepted gaps and re-emits are recorded as member events.
//
// Config.RestoreFrom restores a chosen checkpoint instead: a checkpoint id (manifest
// <job>.<id>) or a savepoint name (manifest <job>.savepoint.<name>), with no fallback;
// Run refuses with ErrRestoreFrom when the checkpoint, the instance's snapshot in it or
// the input after its position is gone, and resumes the input at its positions otherwise.
//
// # Fencing
//
// An instance id has one writer. Every Runtime is a new incarnation: before it restores it
// claims the instance's record in KV CAIRN_INSTANCES, which a clean stop marks and nothing
// deletes, and then registers, taking the key over from any older incarnation. An older
// incarnation that finds another one registered, or finds its registration gone while the
// record names a newer incarnation (it was paused while a newer one ran), stops at once,
// publishes nothing more and returns ErrReplaced. It publishes (outputs, acks, snapshots)
// only while its registration was confirmed within one and a half heartbeats, or after
// confirming it again. Snapshot objects are named after the incarnation, so no upload
// replaces another's. Barriers are followed only when their id and token are in line with
// the job's id counter and lease; others are ignored. A consumer that finds input removed
// under it stops (ErrInputRemoved) rather than skip it. A non-member whose record (or the
// job's last completed checkpoint) says it had state refuses to start as new
// (ErrNoUsableSnapshot) unless Config.ResetState.
//
// # Poison records and panics
//
// A record whose processing fails for good goes to the poison-record policy,
// Config.OnPoison: the Machine panics applying it (Apply or TakeOutputs), or one of its
// outputs can never be stored (larger than the server's max_payload with its headers,
// checked before publishing, or than the output stream's maximum message size; a subject
// with a wildcard; refused by JetStream with an error that is not transient three times
// in a row). Everything else, an outage first, is retried until the output is stored.
// PoisonDeadLetter (the default) stores the record, with headers naming its position,
// subject, reason, error and the incarnation, on <prefix>.deadletter.<job>.<instance> in
// CAIRN_DEADLETTER, and skips it. The dead letter is the record of the skip: a restore
// whose replay meets the record again reads it there (at start), applies the record again
// (the restored state predates it) and publishes none of its outputs, nor a second dead
// letter. PoisonStop stops processing at the record: the instance stays up, declines
// barriers naming it, and reports it in its info and Health. Panics elsewhere are
// recovered too and logged with their stack: in Snapshot, SnapshotFor or Persist the
// checkpoint is declined, in Restore the start is refused (ErrPanic), in a
// CheckpointListener the policy decides. docs/failure-model.md has the details.
//
// # Storage efficiency
//
// A Keyed machine's checkpoints cost about what changed (see Keyed). For other machines,
// snapshots are written into a spool (memory up to 8 MiB, a temporary file above) while
// their SHA-256 is computed, then streamed to the object store in 1 MiB chunks. When a
// snapshot's digest equals that of the last snapshot this instance acked (or restored) and
// that object still exists, the ack references the existing object and nothing is
// uploaded. A Machine whose Persist output is deterministic benefits from this.
//
// # Testing
//
// Package operatortest tests a Machine without Cairn's services: StartServer runs an
// embedded nats-server with Cairn's streams and buckets, and its Coordinator sends each
// barrier, reads each ack and completes or aborts each checkpoint when the test says.
package operator
