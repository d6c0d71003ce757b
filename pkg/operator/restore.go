package operator

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"hash"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cairn-stream/cairn/pkg/cairnjs"
	"github.com/cairn-stream/cairn/pkg/messages"
)

// manifestReader is the part of the CAIRN_MANIFESTS bucket the runtime uses; manifests
// themselves are read with readManifest, from the bucket stream's leader.
type manifestReader interface {
	Get(ctx context.Context, key string) (jetstream.KeyValueEntry, error)
	ListKeysFiltered(ctx context.Context, filters ...string) (jetstream.KeyLister, error)
}

// ErrNoUsableSnapshot is returned (wrapped) by Run when the instance is a member of its
// job but none of the retained checkpoints holds a snapshot of it that can be restored.
// Config.ResetState starts such a member empty on purpose.
var ErrNoUsableSnapshot = errors.New("member has no usable snapshot")

// errDigestMismatch is wrapped when a downloaded snapshot is not the one the manifest
// describes.
var errDigestMismatch = errors.New("snapshot does not match the manifest")

// restored is where a Runtime starts from.
type restored struct {
	// checkpoint is the id of the manifest restored, 0 for an empty start.
	checkpoint uint64
	// position is the last input sequence the restored state includes.
	position uint64
	// ref is the restored snapshot, nil for an empty start.
	ref *messages.SnapshotRef
	// from names what was restored ("latest", "checkpoint 7", "savepoint x"); empty for
	// an empty start.
	from string
}

// membership is what the retained manifests say about this instance.
type membership struct {
	// member reports whether the instance is a member of the job: <job>.latest holds it
	// or, when latest is missing or unreadable, a retained manifest does.
	member bool
	// manifests are the manifests that hold the instance, newest first.
	manifests []*messages.Manifest
	// unreadable describes the manifests that could not be decoded.
	unreadable []string
}

// restore decides where the instance starts. A non-member is a new instance: it starts
// empty and reads its input from the start. A member restores the newest manifest that
// holds a usable snapshot of it (latest first, then the retained ones, newest first;
// every unusable snapshot is logged at error level). A member with none fails with
// ErrNoUsableSnapshot, unless Config.ResetState starts it empty on purpose.
func (r *Runtime) restore(ctx context.Context, h history) (restored, error) {
	if r.cfg.RestoreFrom != "" {
		return r.restoreChosen(ctx)
	}
	ms, err := r.membership(ctx)
	if err != nil {
		return restored{}, err
	}
	if !ms.member {
		lost, err := r.lostHistory(ctx, h, ms)
		if err != nil {
			return restored{}, err
		}
		if lost == "" {
			r.log.Info("not a member of the job (no retained checkpoint holds this instance): new instance, starting empty and reading the input from the start")
			return restored{}, nil
		}
		if !r.cfg.ResetState {
			return restored{}, fmt.Errorf("%w: job %s, instance %s: no manifest holds it, but it had state: %s; its checkpoints are lost, and starting it as new would read only what is left of its input. Start it with --reset-state (Config.ResetState) to start empty on purpose",
				ErrNoUsableSnapshot, r.cfg.Job, r.cfg.Instance, lost)
		}
		r.log.Error("history lost: no manifest holds this member, which had state; resetting on purpose", "evidence", lost)
		return restored{}, r.resetState(ctx, ms, "its checkpoints are lost ("+lost+")")
	}
	if r.cfg.ResetState {
		return restored{}, r.resetState(ctx, ms, "")
	}
	var tried []string
	for _, mf := range ms.manifests {
		rs, err := r.restoreFrom(ctx, mf)
		if errors.Is(err, ErrPanic) {
			// The state may be half replaced: no older checkpoint can be restored into it.
			return restored{}, fmt.Errorf("job %s, instance %s: refusing to start: %w", r.cfg.Job, r.cfg.Instance, err)
		}
		if err == nil {
			rs.from = "latest"
			if mf != ms.manifests[0] {
				rs.from = fmt.Sprintf("checkpoint %d (fallback)", mf.CheckpointID)
			}
			return rs, nil
		}
		r.log.Error("snapshot unusable; falling back to an older checkpoint", "checkpoint", mf.CheckpointID, "error", err)
		tried = append(tried, err.Error())
	}
	tried = append(tried, ms.unreadable...)
	if len(tried) == 0 {
		tried = append(tried, "no retained manifest holds a snapshot of it")
	}
	return restored{}, fmt.Errorf("%w: job %s, instance %s is a member of the job but no retained checkpoint can restore it (tried: %s); start it with --reset-state (Config.ResetState) to start empty on purpose",
		ErrNoUsableSnapshot, r.cfg.Job, r.cfg.Instance, strings.Join(tried, "; "))
}

// ErrRestoreFrom is returned (wrapped) by Run when the checkpoint or savepoint that
// Config.RestoreFrom names cannot be restored: it does not exist, it holds no snapshot of
// this instance, the snapshot is gone or corrupt, or input after its position is gone.
var ErrRestoreFrom = errors.New("cannot restore the chosen checkpoint")

// restoreTarget is a parsed Config.RestoreFrom: a checkpoint id or a savepoint name.
type restoreTarget struct {
	id        uint64
	savepoint string
}

// parseRestoreFrom reads a checkpoint id (a positive number) or a savepoint name (a token
// [A-Za-z0-9_-]{1,64}).
func parseRestoreFrom(s string) (restoreTarget, error) {
	if id, err := strconv.ParseUint(s, 10, 64); err == nil {
		if id == 0 {
			return restoreTarget{}, errors.New("restore from checkpoint 0: checkpoint ids start at 1")
		}
		return restoreTarget{id: id}, nil
	}
	if err := messages.ValidateName("savepoint", s); err != nil {
		return restoreTarget{}, fmt.Errorf("restore from %q: neither a checkpoint id (a positive number) nor a savepoint name: %w", s, err)
	}
	return restoreTarget{savepoint: s}, nil
}

// key is the target's key in CAIRN_MANIFESTS.
func (t restoreTarget) key(job string) string {
	if t.savepoint != "" {
		return cairnjs.SavepointKey(job, t.savepoint)
	}
	return cairnjs.ManifestKey(job, t.id)
}

func (t restoreTarget) String() string {
	if t.savepoint != "" {
		return "savepoint " + t.savepoint
	}
	return fmt.Sprintf("checkpoint %d", t.id)
}

// restoreChosen restores the checkpoint or savepoint Config.RestoreFrom names, with no
// fallback: every failure wraps ErrRestoreFrom and says what is gone.
func (r *Runtime) restoreChosen(ctx context.Context) (restored, error) {
	t, err := parseRestoreFrom(r.cfg.RestoreFrom)
	if err != nil {
		return restored{}, fmt.Errorf("%w: %w", ErrRestoreFrom, err)
	}
	key := t.key(r.cfg.Job)
	mf, err := r.readManifest(ctx, key)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		retained := "none"
		if ids, lerr := r.retainedIDs(ctx); lerr == nil && len(ids) > 0 {
			retained = strings.Trim(strings.Join(strings.Fields(fmt.Sprint(ids)), ", "), "[]")
		}
		return restored{}, fmt.Errorf("%w: job %s: %s does not exist (no key %s in %s; retained checkpoints: %s)",
			ErrRestoreFrom, r.cfg.Job, t, key, cairnjs.ManifestBucket, retained)
	case err != nil:
		return restored{}, fmt.Errorf("%w: job %s: %s: %w", ErrRestoreFrom, r.cfg.Job, t, err)
	}
	if _, ok := mf.Instances[r.cfg.Instance]; !ok {
		return restored{}, fmt.Errorf("%w: job %s: %s (checkpoint %d) holds no snapshot of instance %s",
			ErrRestoreFrom, r.cfg.Job, t, mf.CheckpointID, r.cfg.Instance)
	}
	rs, err := r.restoreFrom(ctx, mf)
	if err != nil {
		return restored{}, fmt.Errorf("%w: job %s, instance %s: %s: %w", ErrRestoreFrom, r.cfg.Job, r.cfg.Instance, t, err)
	}
	rs.from = t.String()
	r.log.Warn("restored a chosen checkpoint instead of the newest", "restore_from", t.String(), "checkpoint", rs.checkpoint, "position", rs.position)
	return rs, nil
}

// membership reads <job>.latest and the retained manifests <job>.<id>.
func (r *Runtime) membership(ctx context.Context) (membership, error) {
	var ms membership
	latestKey := cairnjs.LatestKey(r.cfg.Job)
	latest, err := r.readManifest(ctx, latestKey)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
	case errors.Is(err, errUnreadableManifest):
		r.log.Error("latest manifest unreadable: membership is decided by the retained ones", "error", err)
		ms.unreadable = append(ms.unreadable, err.Error())
	case err != nil:
		return ms, err
	}
	ids, err := r.retainedIDs(ctx)
	if err != nil {
		return ms, err
	}
	if latest != nil {
		if _, ok := latest.Instances[r.cfg.Instance]; !ok {
			return ms, nil
		}
		ms.member = true
		ms.manifests = append(ms.manifests, latest)
	}
	for _, id := range ids {
		if latest != nil && id >= latest.CheckpointID {
			continue
		}
		mf, err := r.readManifest(ctx, cairnjs.ManifestKey(r.cfg.Job, id))
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
			continue
		case errors.Is(err, errUnreadableManifest):
			r.log.Error("retained manifest unreadable; skipped", "error", err)
			ms.unreadable = append(ms.unreadable, err.Error())
			continue
		case err != nil:
			return ms, err
		}
		if _, ok := mf.Instances[r.cfg.Instance]; ok {
			ms.member = true
			ms.manifests = append(ms.manifests, mf)
		}
	}
	return ms, nil
}

// errUnreadableManifest is wrapped when a manifest cannot be decoded.
var errUnreadableManifest = errors.New("manifest unreadable")

// readManifest reads and decodes the manifest under key with a KV get by the key's
// subject, which a job's permissions can scope to its own keys. A replica that lags may
// answer: an older <job>.latest restores an older retained checkpoint and replays more
// input (exact); one without a member that joined since would make it look new, which the
// instance record and the job's last completed event, read from their leaders, refuse
// (lostHistory).
func (r *Runtime) readManifest(ctx context.Context, key string) (*messages.Manifest, error) {
	e, err := r.manifests.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, err
	}
	if err != nil {
		return nil, fmt.Errorf("read manifest %s: %w", key, err)
	}
	var mf messages.Manifest
	if err := messages.Unmarshal(e.Value(), &mf); err != nil {
		return nil, fmt.Errorf("%w: %s: %w", errUnreadableManifest, key, err)
	}
	return &mf, nil
}

// resetState starts a member empty on purpose: it logs at warn level and records a
// reset_state member event, which must be stored for the start to go on. why, when set,
// says why the member's state could not be restored.
func (r *Runtime) resetState(ctx context.Context, ms membership, why string) error {
	var dropped uint64
	detail := "started empty on purpose (reset state); input is read from the start of what remains"
	if len(ms.manifests) > 0 {
		mf := ms.manifests[0]
		dropped = mf.CheckpointID
		detail = fmt.Sprintf("started empty on purpose (reset state), dropping the state of checkpoint %d (snapshot %s, from checkpoint %d); input is read from the start of what remains",
			mf.CheckpointID, mf.Instances[r.cfg.Instance].Snapshot.Object, mf.Instances[r.cfg.Instance].From(mf.CheckpointID))
	}
	if why != "" {
		detail += "; " + why
	}
	r.log.Warn("reset state: member starting empty on purpose, reading the input from the start of what remains", "dropped_checkpoint", dropped)
	return r.memberEvent(ctx, messages.MemberResetState, dropped, detail)
}

// history is what tells, outside the manifests, whether the instance had state: its
// instance record as this incarnation found it.
type history struct {
	// record is the instance record before this incarnation claimed it; nil when there was
	// none.
	record *messages.InstanceRecord
	// unreadable is set when the record could not be decoded.
	unreadable error
}

// lostHistory says why an instance that no manifest holds had state nonetheless (its
// checkpoints were lost: the manifests bucket or its keys deleted, or unreadable), or ""
// when nothing says so and it is new. The evidence: its instance record says it became a
// member (only a member removal clears that) or cannot be read, a manifest of the job could
// not be read, or the job's last completed checkpoint event lists it as a participant.
func (r *Runtime) lostHistory(ctx context.Context, h history, ms membership) (string, error) {
	var why []string
	switch {
	case h.unreadable != nil:
		why = append(why, "its instance record in "+cairnjs.InstanceBucket+" is unreadable ("+h.unreadable.Error()+")")
	case h.record != nil && h.record.Member != 0:
		why = append(why, fmt.Sprintf("its instance record in %s says it became a member at checkpoint %d and was not removed since", cairnjs.InstanceBucket, h.record.Member))
	}
	if len(ms.unreadable) > 0 {
		why = append(why, "manifests of the job are unreadable: "+strings.Join(ms.unreadable, "; "))
	}
	subject := r.cfg.subjects().CheckpointEvent(r.cfg.Job, messages.Completed.String())
	m, err := cairnjs.LastMsgCurrent(ctx, r.nc, cairnjs.CheckpointStream, subject)
	switch {
	case errors.Is(err, jetstream.ErrMsgNotFound):
	case err != nil:
		return "", fmt.Errorf("read the last completed checkpoint event of job %s: %w", r.cfg.Job, err)
	default:
		var ev messages.CheckpointEvent
		if messages.Unmarshal(m.Data, &ev) == nil && slices.Contains(ev.Participants, r.cfg.Instance) {
			why = append(why, fmt.Sprintf("the job's last completed checkpoint %d lists it as a participant (%s)", ev.CheckpointID, subject))
		}
	}
	return strings.Join(why, "; "), nil
}

// retainedIDs lists the checkpoint ids of the job's retained manifests, newest first.
func (r *Runtime) retainedIDs(ctx context.Context) ([]uint64, error) {
	lctx, cancel := context.WithCancel(ctx)
	defer cancel()
	kl, err := r.manifests.ListKeysFiltered(lctx, r.cfg.Job+".*")
	if err != nil {
		return nil, fmt.Errorf("list the manifests of job %s: %w", r.cfg.Job, err)
	}
	var ids []uint64
	for k := range kl.Keys() {
		id, err := strconv.ParseUint(strings.TrimPrefix(k, r.cfg.Job+"."), 10, 64)
		if err == nil && id > 0 {
			ids = append(ids, id)
		}
	}
	if err := lctx.Err(); err != nil {
		return nil, fmt.Errorf("list the manifests of job %s: %w", r.cfg.Job, err)
	}
	slices.Sort(ids)
	slices.Reverse(ids)
	return slices.Compact(ids), nil
}

// restoreFrom restores this instance's snapshot of manifest mf, which holds it. The error
// names the checkpoint, the object and what is wrong with it.
func (r *Runtime) restoreFrom(ctx context.Context, mf *messages.Manifest) (restored, error) {
	inst := mf.Instances[r.cfg.Instance]
	pos, ok := inst.Positions[r.cfg.InputStream]
	if !ok {
		return restored{}, fmt.Errorf("checkpoint %d: snapshot %s has no position in input stream %s", mf.CheckpointID, inst.Snapshot.Object, r.cfg.InputStream)
	}
	start := time.Now()
	err := r.guard("Restore", func() error { return r.cp.restore(ctx, r, inst) }, "checkpoint", mf.CheckpointID, "object", inst.Snapshot.Object)
	if err != nil {
		return restored{}, fmt.Errorf("checkpoint %d: %w", mf.CheckpointID, err)
	}
	r.log.Info("state restored", "checkpoint", mf.CheckpointID, "state_from", inst.From(mf.CheckpointID),
		"object", inst.Snapshot.Object, "deltas", len(inst.Deltas), "position", pos, "size", inst.Snapshot.Size, "took", time.Since(start))
	ref := inst.Snapshot
	return restored{checkpoint: mf.CheckpointID, position: pos, ref: &ref}, nil
}

// fetchAndRestore downloads the object ref names into a spool, checked against ref's size
// and SHA-256 (verifiedObject), and only then restores the Machine from it. A cancelled
// ctx stops the download between reads.
func (r *Runtime) fetchAndRestore(ctx context.Context, ref messages.SnapshotRef) error {
	sp := newSpool(spoolMemLimit)
	defer func() {
		if err := sp.Close(); err != nil {
			r.log.Warn("remove restore spool", "error", err)
		}
	}()
	o := r.openSnapshot(ctx, ref)
	defer o.close()
	buf := make([]byte, fetchChunk)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		n, err := o.Read(buf)
		if _, werr := sp.Write(buf[:n]); werr != nil {
			return fmt.Errorf("spool object %s: %w", ref.Object, werr)
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
	}
	rd, err := sp.Reader()
	if err != nil {
		return err
	}
	if err := r.m.Restore(rd); err != nil {
		return fmt.Errorf("restore from object %s: %w", ref.Object, err)
	}
	return nil
}

// digest renders a SHA-256 the way the object store does: "SHA-256=" and the URL-safe
// base64 of the sum, padded.
func digest(h hash.Hash) string {
	return "SHA-256=" + base64.URLEncoding.EncodeToString(h.Sum(nil))
}

// transferBudget bounds one upload or download of size bytes: 30s plus a second per 4 MiB.
func transferBudget(size uint64) time.Duration {
	return 30*time.Second + time.Duration(size/(4<<20))*time.Second
}
