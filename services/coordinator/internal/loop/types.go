package loop

import (
	"time"

	"github.com/cairn-stream/cairn/pkg/messages"
)

// Registration reports an instance's registration (an empty Incarnation means it is gone),
// or, with Sync, the job's full set of registered instances in All (instance → incarnation).
type Registration struct {
	// Instance is the instance registered or gone.
	Instance string
	// Incarnation is the registered process of the instance; empty when it is gone.
	Incarnation string
	// Sync marks a full set, All, which replaces every registration the loop knows.
	Sync bool
	// All is the full set (instance → incarnation) when Sync is set.
	All map[string]string
}

// Lease is what the lease keeper tells the loop: whether this coordinator holds the job's
// lease, until when it may act on it, and who holds it. Rev is the lease key's revision at
// the last take or renewal: the fencing token of barriers and manifests (KV revisions only
// grow, so a later holder's token is always higher). Tenure is the revision at which this
// holder acquired the lease; a different tenure is a new take-over.
type Lease struct {
	// Held is set while this coordinator holds the lease.
	Held bool
	// ValidUntil is when this coordinator must stop acting on the lease: a margin before
	// the bucket could expire it.
	ValidUntil time.Time
	// Holder is the coordinator that holds the lease, when known.
	Holder string
	// Rev is the fencing token; Tenure the revision the lease was acquired at.
	Rev, Tenure uint64
}

// RetainRequest asks the backend's retention worker for one pass.
type RetainRequest struct {
	// Keep is how many of the newest manifests stay.
	Keep int
	// Live are snapshots acked for checkpoints still pending.
	Live []messages.SnapshotRef
	// Dropped are snapshots acked for checkpoints aborted since the last request.
	Dropped []messages.SnapshotRef
	// Freed are dropped snapshots that no checkpoint can reference any more (the instance
	// that uploaded them has acked a newer object since): deleted at once, even during a
	// failure streak in which no newer manifest is written.
	Freed []messages.SnapshotRef
	// Scan asks for a full scan of the snapshot store in this pass (the store was full).
	Scan bool
	// List asks the pass to list the job's keys: they may have changed in a way the loop
	// did not hand over (a take-over, a savepoint written or deleted).
	List bool
	// Written are the manifests the job's loop wrote since the last request. A manifest
	// under <job>.<id> never changes (ids are never reused), so the worker keeps them
	// instead of reading them back.
	Written []*messages.Manifest
}
