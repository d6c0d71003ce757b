package operator

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cairn-stream/cairn/pkg/cairnjs"
	"github.com/cairn-stream/cairn/pkg/messages"
)

// errUnreadableRecord is wrapped when the instance record cannot be decoded.
var errUnreadableRecord = errors.New("instance record unreadable")

// decodeRecord decodes an instance record; nil data is no record.
func decodeRecord(data []byte) (*messages.InstanceRecord, error) {
	if data == nil {
		return nil, nil
	}
	var rec messages.InstanceRecord
	if err := messages.Unmarshal(data, &rec); err != nil {
		return nil, fmt.Errorf("%w: %w", errUnreadableRecord, err)
	}
	return &rec, nil
}

// claim makes this incarnation the instance's newest in its record in CAIRN_INSTANCES,
// keeping what the record says of membership, and returns the record as it was before (nil
// when there was none). From then on an older incarnation that lost its registration finds
// out that it was replaced instead of registering again. An unreadable record is replaced;
// the returned error then says so (wrapping errUnreadableRecord) alongside the claim.
func (r *Runtime) claim(ctx context.Context) (prev *messages.InstanceRecord, unreadable error, err error) {
	_, err = cairnjs.UpdateKey(ctx, r.nc, r.instances, cairnjs.InstanceKey(r.cfg.Job, r.cfg.Instance), func(cur []byte) ([]byte, error) {
		prev, unreadable = nil, nil
		old, derr := decodeRecord(cur)
		if derr != nil {
			r.log.Error("instance record unreadable: replacing it, and treating the instance as one that may have had state", "error", derr)
			unreadable = derr
		}
		next := messages.InstanceRecord{
			Schema: messages.SchemaVersion, Job: r.cfg.Job, Instance: r.cfg.Instance,
			Incarnation: r.incarnation, Claims: 1, ClaimedAt: time.Now().UTC(),
		}
		if old != nil {
			prev = old
			next.Claims, next.Member = old.Claims+1, old.Member
		}
		return messages.Marshal(&next)
	})
	if err != nil {
		return nil, nil, fmt.Errorf("claim instance %s of job %s in %s: %w", r.cfg.Instance, r.cfg.Job, cairnjs.InstanceBucket, err)
	}
	return prev, unreadable, nil
}

// updateRecord changes the instance record with change while this incarnation is the
// instance's newest. A record claimed by another incarnation fences this runtime and
// returns an error wrapping ErrReplaced; a missing one (the bucket or key was deleted) is
// claimed again.
func (r *Runtime) updateRecord(ctx context.Context, change func(*messages.InstanceRecord) bool) error {
	_, err := cairnjs.UpdateKey(ctx, r.nc, r.instances, cairnjs.InstanceKey(r.cfg.Job, r.cfg.Instance), func(cur []byte) ([]byte, error) {
		rec, err := decodeRecord(cur)
		if err != nil {
			return nil, err
		}
		if rec == nil {
			rec = &messages.InstanceRecord{Schema: messages.SchemaVersion, Job: r.cfg.Job, Instance: r.cfg.Instance,
				Incarnation: r.incarnation, Claims: 1, ClaimedAt: time.Now().UTC()}
		}
		if rec.Incarnation != r.incarnation {
			r.fence(rec.Incarnation)
			return nil, r.replacedError()
		}
		if !change(rec) {
			return nil, cairnjs.ErrNoChange
		}
		return messages.Marshal(rec)
	})
	return err
}

// newest reports whether the instance record still names this incarnation as the
// instance's newest, i.e. no newer incarnation has started since this one claimed it. When
// it names another incarnation, or is gone or unreadable (then nothing tells whether a newer
// incarnation started), it fences the runtime and returns an error wrapping ErrReplaced.
func (r *Runtime) newest(ctx context.Context) error {
	data, _, err := cairnjs.CurrentEntry(ctx, r.nc, cairnjs.InstanceBucket, cairnjs.InstanceKey(r.cfg.Job, r.cfg.Instance))
	if err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("read the record of instance %s in %s: %w", r.cfg.Instance, cairnjs.InstanceBucket, err)
	}
	rec, derr := decodeRecord(data)
	switch {
	case rec == nil && derr == nil:
		r.fence("unknown (the instance record is gone from " + cairnjs.InstanceBucket + ")")
		return r.replacedError()
	case derr != nil:
		r.fence("unknown (" + derr.Error() + ")")
		return r.replacedError()
	case rec.Incarnation != r.incarnation:
		r.fence(rec.Incarnation)
		return r.replacedError()
	}
	return nil
}

// markMember records in the instance record that the instance is a member as of checkpoint
// id (restored from it), unless the record says so already.
func (r *Runtime) markMember(ctx context.Context, id uint64) error {
	return r.updateRecord(ctx, func(rec *messages.InstanceRecord) bool {
		if rec.Member != 0 {
			return false
		}
		rec.Member = id
		return true
	})
}

// markStopped records a clean stop of this incarnation in the instance record. A record
// claimed by a newer incarnation is left alone.
func (r *Runtime) markStopped(ctx context.Context) {
	err := r.updateRecord(ctx, func(rec *messages.InstanceRecord) bool {
		rec.StoppedAt = time.Now().UTC()
		return true
	})
	if err != nil && !errors.Is(err, ErrReplaced) {
		r.log.Warn("record the clean stop in the instance record", "error", err)
	}
}
