package coordinator

import (
	"context"
	"errors"

	"github.com/cairn-stream/cairn/pkg/messages"
)

// ErrFenced is returned by a backend when a write shows that another coordinator has
// moved the job past this one: this coordinator must stop coordinating the job at once.
var ErrFenced = errors.New("coordinator fenced: another coordinator has moved the job on")

// errManifestsLost is returned (wrapped) by a backend when the job's newest manifest is gone
// though checkpoints of the job completed before: CAIRN_MANIFESTS or its keys were deleted,
// or the bucket was created again. Nothing was written.
var errManifestsLost = errors.New("the job's manifests are lost")

// backend is everything one job's loop does to the outside world; it is used only by that
// loop's goroutine. The NATS implementation is natsBackend; unit tests use a fake.
type backend interface {
	// nextID advances the job's checkpoint id counter with compare-and-set and returns
	// the new id; an id is never returned twice, across restarts and fail-overs, and is
	// always above the newest manifest's, even when the counter key was lost.
	nextID(ctx context.Context) (uint64, error)
	// sendBarrier publishes the barrier.
	sendBarrier(b *messages.Barrier) error
	// writeManifest stores the manifest under <job>.<id> and moves <job>.latest to it from
	// the predecessor prev (0: none); ErrFenced when <job>.latest holds another manifest
	// than prev (another coordinator wrote one: m would drop its members), errManifestsLost
	// when it holds none though prev is not 0.
	writeManifest(ctx context.Context, m *messages.Manifest, prev uint64) error
	// latestManifest returns the job's newest manifest, or nil when there is none;
	// errManifestsLost when there is none though a checkpoint of the job completed before.
	latestManifest(ctx context.Context) (*messages.Manifest, error)
	// markMember records in the instance's record in CAIRN_INSTANCES that it is a member as
	// of checkpoint id (incarnation took the snapshot), unless the record says so already.
	markMember(ctx context.Context, instance, incarnation string, id uint64) error
	// clearMember records in the instance's record that it is no longer a member (removed
	// on purpose), so that it may start again as a new instance.
	clearMember(ctx context.Context, instance string) error
	// unfinished returns the ids a previous coordinator issued after completed (the
	// newest manifest's id) that ended neither completed nor aborted (at most
	// MaxMaxConcurrent of the newest), and the last id it issued (at least the newest
	// ended one, when the counter key was lost).
	unfinished(ctx context.Context, completed uint64) (ids []uint64, last uint64, err error)
	// publishEvent publishes a checkpoint event; a completed event without waiting for
	// JetStream's ack.
	publishEvent(ctx context.Context, e *messages.CheckpointEvent) error
	// publishMemberEvent publishes a member audit event.
	publishMemberEvent(ctx context.Context, e *messages.MemberEvent) error
	// publishAlarm publishes an alarm event.
	publishAlarm(ctx context.Context, e *messages.AlarmEvent) error
	// retain deletes, in the background, the job's manifests beyond the newest req.keep
	// and the snapshot objects that neither a retained manifest nor req.live references:
	// those of dropped manifests and req.dropped (acked for aborted checkpoints) once older
	// than the newest manifest, req.freed at once, and with req.scan any of the job's.
	retain(req retainRequest)
	// savepoints returns the job's savepoints (<job>.savepoint.<name>), by name.
	savepoints(ctx context.Context) (map[string]*messages.Manifest, error)
	// writeSavepoint stores m, a written manifest, under <job>.savepoint.<m.Savepoint>;
	// errSavepointExists when the name is in use.
	writeSavepoint(ctx context.Context, m *messages.Manifest) error
	// deleteSavepoint deletes savepoint name and returns its manifest; nil when there is
	// none.
	deleteSavepoint(ctx context.Context, name string) (*messages.Manifest, error)
}
