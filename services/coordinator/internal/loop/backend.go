package loop

import (
	"context"

	"github.com/cairn-stream/cairn/pkg/messages"
)

// Backend is everything one job's loop does to the outside world; it is used only by that
// loop's goroutine. The JetStream implementation is store.Backend; unit tests use a fake.
type Backend interface {
	// NextID advances the job's checkpoint id counter with compare-and-set and returns
	// the new id; an id is never returned twice, across restarts and fail-overs, and is
	// always above the newest manifest's, even when the counter key was lost.
	NextID(ctx context.Context) (uint64, error)
	// SendBarrier publishes the barrier.
	SendBarrier(b *messages.Barrier) error
	// WriteManifest stores the manifest under <job>.<id> and moves <job>.latest to it from
	// the predecessor prev (0: none); ErrFenced when <job>.latest holds another manifest
	// than prev (another coordinator wrote one: m would drop its members), ErrManifestsLost
	// when it holds none though prev is not 0.
	WriteManifest(ctx context.Context, m *messages.Manifest, prev uint64) error
	// LatestManifest returns the job's newest manifest, or nil when there is none;
	// ErrManifestsLost when there is none though a checkpoint of the job completed before.
	LatestManifest(ctx context.Context) (*messages.Manifest, error)
	// MarkMember records in the instance's record in CAIRN_INSTANCES that it is a member as
	// of checkpoint id (incarnation took the snapshot), unless the record says so already.
	MarkMember(ctx context.Context, instance, incarnation string, id uint64) error
	// ClearMember records in the instance's record that it is no longer a member (removed
	// on purpose), so that it may start again as a new instance.
	ClearMember(ctx context.Context, instance string) error
	// Unfinished returns the ids a previous coordinator issued after completed (the
	// newest manifest's id) that ended neither completed nor aborted (at most
	// MaxMaxConcurrent of the newest), and the last id it issued (at least the newest
	// ended one, when the counter key was lost).
	Unfinished(ctx context.Context, completed uint64) (ids []uint64, last uint64, err error)
	// PublishEvent publishes a checkpoint event; a completed event without waiting for
	// JetStream's ack.
	PublishEvent(ctx context.Context, e *messages.CheckpointEvent) error
	// PublishMemberEvent publishes a member audit event.
	PublishMemberEvent(ctx context.Context, e *messages.MemberEvent) error
	// PublishAlarm publishes an alarm event.
	PublishAlarm(ctx context.Context, e *messages.AlarmEvent) error
	// Retain deletes, in the background, the job's manifests beyond the newest req.Keep
	// and the snapshot objects that neither a retained manifest nor req.Live references:
	// those of dropped manifests and req.Dropped (acked for aborted checkpoints) once older
	// than the newest manifest, req.Freed at once, and with req.Scan any of the job's.
	Retain(req RetainRequest)
	// Savepoints returns the job's savepoints (<job>.savepoint.<name>), by name.
	Savepoints(ctx context.Context) (map[string]*messages.Manifest, error)
	// WriteSavepoint stores m, a written manifest, under <job>.savepoint.<m.Savepoint>;
	// ErrSavepointExists when the name is in use.
	WriteSavepoint(ctx context.Context, m *messages.Manifest) error
	// DeleteSavepoint deletes savepoint name and returns its manifest; nil when there is
	// none.
	DeleteSavepoint(ctx context.Context, name string) (*messages.Manifest, error)
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
