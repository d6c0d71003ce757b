package operator

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cairn-stream/cairn/pkg/cairnjs"
	"github.com/cairn-stream/cairn/pkg/messages"
)

// ErrReplaced is returned (wrapped) by Run when a newer incarnation of the instance took
// over its registration: the runtime stopped consuming at once and published nothing
// more (no ack, decline or output), and left the registration to its successor.
var ErrReplaced = errors.New("instance replaced by a newer incarnation")

// leaseStore is the part of the CAIRN_LEASES bucket the runtime uses. The registration is
// read with registrationOf, from the bucket stream's leader.
type leaseStore interface {
	Create(ctx context.Context, key string, value []byte, opts ...jetstream.KVCreateOpt) (uint64, error)
	Update(ctx context.Context, key string, value []byte, revision uint64) (uint64, error)
	Delete(ctx context.Context, key string, opts ...jetstream.KVDeleteOpt) error
	Status(ctx context.Context) (jetstream.KeyValueStatus, error)
}

// registerAttempts bounds the compare-and-set rounds of one registration when other
// writers keep changing the key.
const registerAttempts = 5

// heartbeatInterval is Config.Heartbeat or, when 0, a third of the lease bucket's TTL.
func (r *Runtime) heartbeatInterval(ctx context.Context) (time.Duration, error) {
	st, err := r.leases.Status(ctx)
	if err != nil {
		if r.cfg.Heartbeat > 0 {
			r.log.Warn("cannot read the lease TTL to check the heartbeat against it", "error", err)
			return r.cfg.Heartbeat, nil
		}
		return 0, fmt.Errorf("read the TTL of bucket %s: %w", cairnjs.LeaseBucket, err)
	}
	ttl := st.TTL()
	if r.cfg.Heartbeat > 0 {
		if ttl > 0 && r.cfg.Heartbeat >= ttl {
			r.log.Warn("heartbeat not shorter than the lease TTL: the registration will lapse between beats", "heartbeat", r.cfg.Heartbeat, "ttl", ttl)
		}
		return r.cfg.Heartbeat, nil
	}
	if ttl <= 0 {
		ttl = cairnjs.DefaultLeaseTTL
	}
	return ttl / 3, nil
}

// registration encodes this instance's registration.
func (r *Runtime) registration(startedAt time.Time) ([]byte, error) {
	data, err := messages.Marshal(&messages.Registration{
		Schema:      messages.SchemaVersion,
		Job:         r.cfg.Job,
		Instance:    r.cfg.Instance,
		Incarnation: r.incarnation,
		StartedAt:   startedAt,
	})
	if err != nil {
		return nil, fmt.Errorf("encode registration: %w", err)
	}
	return data, nil
}

// incarnationOf returns the incarnation a registration names; an unreadable one names
// none this runtime could be.
func incarnationOf(value []byte) string {
	var reg messages.Registration
	if err := messages.Unmarshal(value, &reg); err != nil {
		return "(unreadable registration)"
	}
	return reg.Incarnation
}

// registrationOf reads the instance's registration and its revision from the bucket
// stream's leader (cairnjs.CurrentEntry), never from a replica that may lag: a stale read
// could show an incarnation this one has already replaced, and stop it as replaced.
// jetstream.ErrKeyNotFound when there is none.
func (r *Runtime) registrationOf(ctx context.Context, key string) ([]byte, uint64, error) {
	return cairnjs.CurrentEntry(ctx, r.nc, cairnjs.LeaseBucket, key)
}

// register claims the instance's key with compare-and-set: it creates it when absent and
// otherwise replaces whatever incarnation holds it (the newer incarnation wins; the older
// one notices at its next heartbeat and stops). It returns the revision written.
func (r *Runtime) register(ctx context.Context, reg []byte) (uint64, error) {
	key := cairnjs.RegistrationKey(r.cfg.Job, r.cfg.Instance)
	for range registerAttempts {
		value, cur, err := r.registrationOf(ctx, key)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			rev, err := r.leases.Create(ctx, key, reg)
			if err == nil {
				return rev, nil
			}
			if !errors.Is(err, jetstream.ErrKeyExists) {
				return 0, fmt.Errorf("register %s in %s: %w", key, cairnjs.LeaseBucket, err)
			}
			continue
		}
		if err != nil {
			return 0, fmt.Errorf("read registration %s in %s: %w", key, cairnjs.LeaseBucket, err)
		}
		if other := incarnationOf(value); other != r.incarnation {
			r.log.Warn("replacing the registration of another incarnation of this instance: the newer incarnation wins, and the other one stops if it still runs",
				"replaced_incarnation", other)
		}
		rev, err := r.leases.Update(ctx, key, reg, cur)
		if err == nil {
			return rev, nil
		}
		if !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			return 0, fmt.Errorf("register %s in %s: %w", key, cairnjs.LeaseBucket, err)
		}
	}
	return 0, fmt.Errorf("register %s in %s: the key changed under %d compare-and-set attempts", key, cairnjs.LeaseBucket, registerAttempts)
}

// renew renews the registration written at revision rev and returns the new revision.
// When the key changed meanwhile it reads it from the bucket's leader: another incarnation
// there fences this runtime (ErrReplaced); its own incarnation there (a renewal that landed
// after its call gave up) is renewed on that revision. A key that is gone (it expired while
// this process was paused or cut off, or a newer incarnation stopped and deleted it) is
// created again only while the instance record still names this incarnation as the newest:
// otherwise a newer one has started since, and this one is fenced.
func (r *Runtime) renew(ctx context.Context, reg []byte, rev uint64) (uint64, error) {
	key := cairnjs.RegistrationKey(r.cfg.Job, r.cfg.Instance)
	next, err := r.leases.Update(ctx, key, reg, rev)
	if err == nil {
		return next, nil
	}
	if !errors.Is(err, jetstream.ErrKeyRevisionMismatch) && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return rev, fmt.Errorf("renew registration %s: %w", key, err)
	}
	value, cur, err := r.registrationOf(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		if err := r.newest(ctx); err != nil {
			return rev, err
		}
		r.log.Warn("registration gone (it expired while this process was paused or cut off) and no newer incarnation has claimed the instance: registering again")
		next, err := r.leases.Create(ctx, key, reg)
		if err != nil {
			return rev, fmt.Errorf("register %s again: %w", key, err)
		}
		return next, nil
	}
	if err != nil {
		return rev, fmt.Errorf("read registration %s: %w", key, err)
	}
	if other := incarnationOf(value); other != r.incarnation {
		r.fence(other)
		return rev, r.replacedError()
	}
	next, err = r.leases.Update(ctx, key, reg, cur)
	if err != nil {
		return cur, fmt.Errorf("renew registration %s: %w", key, err)
	}
	return next, nil
}

// selfLease is what an incarnation knows of its own registration: when a renewal that
// succeeded was sent last. An incarnation publishes (outputs, acks, declines, snapshots)
// only while that is recent; after a longer gap (the process was paused, or starved) it
// first has the heartbeat confirm the registration, which finds out if a newer incarnation
// took over meanwhile. See docs/semantics.md, "One writer per instance".
type selfLease struct {
	// origin is the reference of confirmed, read on the monotonic clock.
	origin time.Time
	// confirmed is when the last successful renewal was sent, in nanoseconds since origin;
	// 0 before the first.
	confirmed atomic.Int64
	// every is the heartbeat interval; set before the heartbeat starts.
	every time.Duration
	// confirm carries a request for a renewal now to the heartbeat.
	confirm chan confirmRequest
	// done is closed when the heartbeat ends; set before it starts.
	done chan struct{}
}

// fresh reports whether the registration was confirmed within one and a half heartbeat
// intervals.
func (l *selfLease) fresh() bool {
	c := l.confirmed.Load()
	return c != 0 && time.Since(l.origin)-time.Duration(c) < l.every*3/2
}

// renewed records a successful renewal sent at sent.
func (l *selfLease) renewed(sent time.Time) {
	l.confirmed.Store(max(int64(sent.Sub(l.origin)), 1))
}

// confirmRequest asks the heartbeat to renew the registration now, unless force is false
// and it was confirmed recently; the result goes to reply.
type confirmRequest struct {
	force bool
	reply chan error
}

// errHeartbeatStopped is returned by mayPublish once the heartbeat has ended.
var errHeartbeatStopped = errors.New("registration no longer kept: the runtime is stopping")

// mayPublish returns nil when this incarnation may publish: its registration was confirmed
// recently, or the heartbeat confirms it now. It returns an error wrapping ErrReplaced when
// a newer incarnation took over, and another error when the registration cannot be
// confirmed (the caller retries, or declines).
func (r *Runtime) mayPublish(ctx context.Context) error {
	if r.isFenced() {
		return r.replacedError()
	}
	if r.lease.fresh() {
		return nil
	}
	return r.confirm(ctx, false)
}

// confirm has the heartbeat renew the registration now (with force, even if it was
// confirmed recently) and returns the outcome as mayPublish does.
func (r *Runtime) confirm(ctx context.Context, force bool) error {
	req := confirmRequest{force: force, reply: make(chan error, 1)}
	select {
	case r.lease.confirm <- req:
	case <-r.lease.done:
		return errHeartbeatStopped
	case <-r.fencedCh:
		return r.replacedError()
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-req.reply:
		return err
	case <-r.fencedCh:
		return r.replacedError()
	case <-ctx.Done():
		return ctx.Err()
	}
}

// heartbeat renews the registration written at revision rev every interval, at once after
// a reconnect, and when a publisher asks for it (mayPublish), until ctx is done or the
// runtime is replaced. A failed renewal is retried after a quarter of the interval, or a
// second if that is shorter.
func (r *Runtime) heartbeat(ctx context.Context, reg []byte, rev uint64) {
	every := r.lease.every
	retry := max(min(every/4, time.Second), 10*time.Millisecond)
	reconnected := r.nc.StatusChanged(nats.CONNECTED)
	defer r.nc.RemoveStatusListener(reconnected)
	t := time.NewTimer(every)
	defer t.Stop()
	failing := false
	for {
		var asked chan error
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-reconnected:
			r.log.Info("reconnected: renewing the registration")
		case req := <-r.lease.confirm:
			if !req.force && r.lease.fresh() {
				req.reply <- nil
				continue
			}
			asked = req.reply
		}
		sent := time.Now()
		pctx, cancel := context.WithTimeout(ctx, min(every, cleanupTimeout))
		var err error
		rev, err = r.renew(pctx, reg, rev)
		cancel()
		if err == nil {
			r.lease.renewed(sent)
		}
		if asked != nil {
			asked <- err
		}
		switch {
		case errors.Is(err, ErrReplaced):
			r.log.Error("replaced by a newer incarnation of this instance: stopping at once, publishing nothing more", "replaced_by", r.replacedBy)
			return
		case err != nil && ctx.Err() == nil:
			r.log.Warn("registration not renewed; retrying", "error", err)
			failing = true
			t.Reset(retry)
			continue
		case failing:
			r.log.Info("registration renewed again")
			failing = false
		}
		t.Reset(every)
	}
}

// fence marks the runtime as replaced by incarnation by: every publish is refused from
// now on and the processing goroutine stops.
func (r *Runtime) fence(by string) {
	r.fenceOnce.Do(func() {
		r.replacedBy = by
		r.fenced.Store(true)
		close(r.fencedCh)
	})
}

// isFenced reports whether the runtime has been replaced.
func (r *Runtime) isFenced() bool { return r.fenced.Load() }

// replacedError is the error Run returns once the runtime is fenced.
func (r *Runtime) replacedError() error {
	return fmt.Errorf("%w: job %s, instance %s: incarnation %s was replaced by incarnation %s, which registered the same instance id",
		ErrReplaced, r.cfg.Job, r.cfg.Instance, r.incarnation, r.replacedBy)
}

// deregister deletes the registration, unless another incarnation of this instance has
// replaced it meanwhile, and records the stop in the instance record (which it never
// deletes). A heartbeat put abandoned on cancellation may still land after the read, so a
// revision mismatch reads again.
func (r *Runtime) deregister(ctx context.Context) {
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
	defer cancel()
	defer r.markStopped(dctx)
	key := cairnjs.RegistrationKey(r.cfg.Job, r.cfg.Instance)
	for range 5 {
		value, rev, err := r.registrationOf(dctx, key)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return
		}
		if err != nil {
			r.log.Warn("read the registration to delete it; it expires with its TTL", "error", err)
			return
		}
		var cur messages.Registration
		if err := messages.Unmarshal(value, &cur); err == nil && cur.Incarnation != r.incarnation {
			r.log.Warn("registration belongs to another incarnation; left in place", "other_incarnation", cur.Incarnation)
			return
		}
		err = r.leases.Delete(dctx, key, jetstream.LastRevision(rev))
		if err == nil {
			return
		}
		if !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			r.log.Warn("delete the registration; it expires with its TTL", "error", err)
			return
		}
	}
	r.log.Warn("registration kept changing; it expires with its TTL")
}
