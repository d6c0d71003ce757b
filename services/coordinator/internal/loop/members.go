package loop

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/cairn-stream/cairn/pkg/messages"
)

// removal is a member removal recorded by the loop, waiting for a manifest without the
// member.
type removal struct {
	// checkpoint is the checkpoint triggered for the removal; 0 until it is triggered.
	checkpoint uint64
	// dropped is the member's state in the predecessor manifest.
	dropped messages.Member
	waiters []func(*messages.MemberRemoval, *Error)
}

// members returns the job's members, sorted: every instance of the newest manifest plus
// the registered ones.
func (j *Job) members() []messages.Member {
	names := map[string]bool{}
	for inst := range j.roster.instances {
		names[inst] = true
	}
	if j.stored.prev != nil {
		for inst := range j.stored.prev.Instances {
			names[inst] = true
		}
	}
	out := make([]messages.Member, 0, len(names))
	for _, inst := range slices.Sorted(maps.Keys(names)) {
		out = append(out, j.member(inst))
	}
	return out
}

// member describes one member: registered or not, and the state the newest manifest holds.
func (j *Job) member(inst string) messages.Member {
	m := messages.Member{Instance: inst}
	inc, active := j.roster.instances[inst]
	m.Active, m.Incarnation = active, inc
	var absent time.Time
	if j.stored.prev != nil {
		if s, ok := j.stored.prev.Instances[inst]; ok {
			m.Checkpoint, m.Positions = s.From(j.stored.prev.CheckpointID), s.Positions
			if !active {
				m.Incarnation = s.Incarnation
			}
			absent = s.AbsentSince
		}
	}
	if t, ok := j.roster.left[inst]; ok && !active && absent.IsZero() {
		absent = t
	}
	if !active && !absent.IsZero() {
		t := absent.UTC()
		m.AbsentSince = &t
	}
	return m
}

// memberNames lists the job's members for error messages.
func (j *Job) memberNames() string {
	var names []string
	for _, m := range j.members() {
		names = append(names, m.Instance)
	}
	if len(names) == 0 {
		return "none"
	}
	return strings.Join(names, ", ")
}

// requestRemoval records a member removal and lets the next checkpoint, triggered at once,
// write the manifest without it; the request is answered when that manifest is written.
func (j *Job) requestRemoval(ctx context.Context, req removeRequest) {
	if e := j.refusal(ctx, "try again", "nothing was removed"); e != nil {
		req.done(nil, e)
		return
	}
	inst := req.instance
	if _, active := j.roster.instances[inst]; active {
		req.done(nil, &Error{Conflict, fmt.Sprintf("instance %s of job %s is registered (active): stop it first, then remove it", inst, j.name)})
		return
	}
	if r, ok := j.roster.removals[inst]; ok {
		r.waiters = append(r.waiters, req.done)
		return
	}
	if j.stored.prev == nil || !hasInstance(j.stored.prev, inst) {
		req.done(nil, &Error{NotFound, fmt.Sprintf("instance %s is not a member of job %s; members: %s", inst, j.name, j.memberNames())})
		return
	}
	j.roster.removals[inst] = &removal{dropped: j.member(inst), waiters: []func(*messages.MemberRemoval, *Error){req.done}}
	j.log.Warn().Str("instance", inst).Uint64("state_checkpoint", j.roster.removals[inst].dropped.Checkpoint).
		Msg("member removal requested: the next checkpoint drops its state")
}

func hasInstance(m *messages.Manifest, inst string) bool {
	_, ok := m.Instances[inst]
	return ok
}

// removalDue reports whether a removal waits for a checkpoint to be triggered.
func (j *Job) removalDue() bool {
	for _, r := range j.roster.removals {
		if r.checkpoint == 0 {
			return true
		}
	}
	return false
}

// finishRemovals answers the removals that manifest m, just written, completes: m no
// longer holds the member. It publishes each removal's audit event.
func (j *Job) finishRemovals(ctx context.Context, m *messages.Manifest) {
	for inst, r := range j.roster.removals {
		if hasInstance(m, inst) {
			// The instance registered again and took part before the removal completed.
			j.failRemovals(func(x *removal) bool { return x == r }, Conflict,
				fmt.Sprintf("instance %s of job %s registered again and took part in checkpoint %d before its removal completed; it stays a member", inst, j.name, m.CheckpointID))
			continue
		}
		delete(j.roster.removals, inst)
		delete(j.roster.left, inst)
		delete(j.roster.marked, inst)
		cctx, cancel := j.callCtx(ctx)
		if err := j.b.ClearMember(cctx, inst); err != nil {
			j.log.Error().Err(err).Str("instance", inst).
				Msg("member removed, but its instance record still says it is a member: a new start of the instance is refused as one whose state was lost until started with --reset-state")
		}
		cancel()
		d := r.dropped
		detail := fmt.Sprintf("state of checkpoint %d dropped (positions %v)", d.Checkpoint, d.Positions)
		ev := &messages.MemberEvent{
			Schema: messages.SchemaVersion, Job: j.name, Instance: inst, Kind: messages.MemberRemoved, At: m.CompletedAt,
			Incarnation: d.Incarnation, Checkpoint: m.CheckpointID, By: j.coordID, Detail: detail,
		}
		cctx, cancel = j.callCtx(ctx)
		err := j.b.PublishMemberEvent(cctx, ev)
		cancel()
		if err != nil {
			j.log.Error().Err(err).Str("instance", inst).Msg("cannot publish the member removal event")
		}
		j.log.Warn().Str("instance", inst).Uint64("checkpoint", m.CheckpointID).Uint64("state_checkpoint", d.Checkpoint).
			Interface("positions", d.Positions).Msg("member removed: manifests no longer hold it")
		reply := &messages.MemberRemoval{Job: j.name, Instance: inst, Checkpoint: m.CheckpointID, RemovedAt: m.CompletedAt, Dropped: d}
		for _, w := range r.waiters {
			w(reply, nil)
		}
	}
}

// failRemovals answers the removals that match with an error; they are forgotten and
// their members stay.
func (j *Job) failRemovals(match func(*removal) bool, kind ErrorKind, msg string) {
	for inst, r := range j.roster.removals {
		if !match(r) {
			continue
		}
		delete(j.roster.removals, inst)
		j.log.Warn().Str("instance", inst).Str("why", msg).Msg("member removal failed")
		for _, w := range r.waiters {
			w(nil, &Error{kind, msg})
		}
	}
}

// markMembers records, in the instance record of each member of manifest m whose
// incarnation it has not recorded yet, that the instance is a member: a member whose
// manifests are lost later finds it there and refuses to start as new. A failure is logged
// and the member tried again at the next completion.
func (j *Job) markMembers(ctx context.Context, m *messages.Manifest) {
	for inst, s := range m.Instances {
		if j.roster.marked[inst] == s.Incarnation {
			continue
		}
		if err := j.b.MarkMember(ctx, inst, s.Incarnation, s.From(m.CheckpointID)); err != nil {
			j.log.Warn().Err(err).Str("instance", inst).Msg("cannot record the membership in the instance record; trying again at the next completion")
			continue
		}
		j.roster.marked[inst] = s.Incarnation
	}
}

// latest reads the job's newest manifest. Lost manifests (ErrManifestsLost) raise the
// manifests_lost alarm and read as none: the next manifest starts the job's history again,
// carrying forward what this coordinator still holds of its members.
func (j *Job) latest(ctx context.Context) (*messages.Manifest, error) {
	m, err := j.b.LatestManifest(ctx)
	if errors.Is(err, ErrManifestsLost) {
		j.manifestsLost(err)
		return nil, nil
	}
	return m, err
}

// manifestsLost raises the manifests_lost alarm, logged at error level once per tenure.
func (j *Job) manifestsLost(err error) {
	if j.stored.lost != nil {
		return
	}
	j.stored.lost = &messages.Alarm{
		Kind:  messages.AlarmManifestsLost,
		Since: time.Now().UTC(),
		Detail: err.Error() + ": CAIRN_MANIFESTS or the job's keys were deleted, or the bucket was created again. " +
			"Checkpoints go on for the registered instances; a member whose state no manifest holds refuses to start until started with --reset-state.",
	}
	j.log.Error().Err(err).Msg("the job's manifests are lost: checkpoints go on for the registered instances; members whose state no manifest holds refuse to start until reset on purpose")
}

func (j *Job) register(ctx context.Context, r Registration) {
	if r.Sync {
		for inst := range j.roster.instances {
			if _, ok := r.All[inst]; !ok {
				j.register(ctx, Registration{Instance: inst})
			}
		}
		for inst, inc := range r.All {
			j.register(ctx, Registration{Instance: inst, Incarnation: inc})
		}
		return
	}
	old, had := j.roster.instances[r.Instance]
	if old == r.Incarnation {
		j.resend(r.Instance, r.Incarnation)
		return
	}
	if r.Incarnation == "" {
		delete(j.roster.instances, r.Instance)
		if had {
			j.roster.left[r.Instance] = time.Now()
		}
		j.log.Info().Str("instance", r.Instance).Msg("instance left")
	} else {
		j.roster.instances[r.Instance] = r.Incarnation
		j.log.Info().Str("instance", r.Instance).Str("incarnation", r.Incarnation).Msg("instance registered")
	}
	if !had {
		return
	}
	// A pending checkpoint that already holds the instance's ack keeps it: the snapshot
	// was taken before the instance left or restarted and is still exact.
	for _, p := range slices.Clone(j.inflight.pending) {
		_, acked := p.acks[r.Instance]
		if inc, ok := p.expected[r.Instance]; ok && inc == old && !acked {
			detail := fmt.Sprintf("instance %s left", r.Instance)
			if r.Incarnation != "" {
				detail = fmt.Sprintf("instance %s restarted (incarnation %s → %s)", r.Instance, old, r.Incarnation)
			}
			j.abort(ctx, p, messages.AbortInstanceLost, detail)
		}
	}
}

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
