// Package operator is Cairn's operator runtime: the SDK a stateful stream service embeds
// to have its state checkpointed by Cairn.
//
// A Runtime drives one operator instance: it restores the instance's state from the newest
// completed checkpoint that holds a usable snapshot of it, registers the instance in KV CAIRN_LEASES with a fresh incarnation
// id and keeps the registration alive, follows the instance's input subject with an ordered
// consumer, and answers the coordinator's barriers with snapshots stored in the object
// store.
//
// The stateful logic is a Machine, modelled on hashicorp/raft's FSM. Records, barriers and
// Do requests are handled by one goroutine, so a snapshot always sits between two input
// records and records the input stream sequence it includes. Persisting a snapshot runs on
// a second goroutine, in barrier order, so records keep flowing while a snapshot is
// written and uploaded.
//
// # Restore
//
// On start the runtime reads <job>.latest from CAIRN_MANIFESTS. An instance that manifest
// does not hold is new: it starts empty and reads its input from the beginning. A member
// restores the newest usable snapshot: the object is downloaded, its SHA-256 is checked
// against the manifest, the Machine restores from it, and the input consumer resumes
// after the stream sequence the snapshot includes. A missing or corrupt object is logged at
// error level and the retained manifests <job>.<id> are tried, newest first. A member with
// no usable snapshot refuses to start (ErrNoUsableSnapshot) unless Config.ResetState
// starts it empty on purpose. Before consuming, the input stream is checked for records
// after the restored position that its limits may have removed (ErrInputGap, unless
// Config.AcceptInputGap). Resets and accepted gaps are recorded as member events.
//
// # Fencing
//
// The registration is compare-and-set: the newest incarnation of an instance id takes the
// key over, and an older one that finds another incarnation there at its next heartbeat
// stops at once, publishes nothing more and returns ErrReplaced.
//
// # Storage efficiency
//
// Snapshots are written into a spool (memory up to 8 MiB, a temporary file above) while
// their SHA-256 is computed, then streamed to the object store in 1 MiB chunks. When a
// snapshot's digest equals that of the last snapshot this instance acked (or restored) and
// that object still exists, the ack references the existing object and nothing is
// uploaded. A Machine whose Persist output is deterministic benefits from this.
package operator
