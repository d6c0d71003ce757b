package store

import (
	"context"
	"errors"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/cairn-stream/cairn/internal/retry"
	"github.com/cairn-stream/cairn/pkg/cairnjs"
	"github.com/cairn-stream/cairn/pkg/messages"
	"github.com/cairn-stream/cairn/services/coordinator/internal/loop"
)

// leaseKV is what the lease keeper needs of KV CAIRN_LEASES.
type leaseKV interface {
	cairnjs.KVWriter
	Delete(ctx context.Context, key string, opts ...jetstream.KVDeleteOpt) error
	Watch(ctx context.Context, keys string, opts ...jetstream.WatchOpt) (jetstream.KeyWatcher, error)
}

// Placement tells a lease keeper which replica should hold a job's lease.
type Placement interface {
	// Preferred returns the id of the replica that should hold the job's lease.
	Preferred(job string) string
	// Changes returns a channel closed at the next change of the placement.
	Changes() <-chan struct{}
}

// NewLeaseKeeper returns the keeper of job's lease in CAIRN_LEASES (kv, whose TTL is ttl)
// for coordinator holder. out receives every new lease state and must not block; place may
// be nil (always compete).
func NewLeaseKeeper(kv jetstream.KeyValue, nc *nats.Conn, job, holder string, ttl time.Duration, place Placement,
	out func(loop.Lease), log zerolog.Logger,
) *LeaseKeeper {
	return &LeaseKeeper{kv: kv, conn: nc, leader: nc, key: cairnjs.LeaseKey(job), job: job, holder: holder, ttl: ttl, out: out, log: log, place: place}
}

// LeaseKeeper competes for a job's lease and renews it while held. The bucket's TTL
// expires a lease whose holder stops renewing; the holder itself stops acting a margin
// before that (validUntil), so two coordinators never trigger at once.
//
// With a placement, it competes at once only when this replica is the job's preferred
// one; otherwise only when the lease has been free for a grace period, or unrenewed for a
// TTL and a grace period, so that a job is never left unled when its preferred replica
// cannot take it. A holder that is not the preferred replica hands the lease over.
type LeaseKeeper struct {
	kv   leaseKV
	conn statusNotifier
	// leader answers reads of the lease key, which go to the bucket stream's leader
	// (cairnjs.CurrentEntry), never to a replica that may lag.
	leader cairnjs.Requester
	key    string
	job    string
	holder string
	ttl    time.Duration
	// out hands a new lease state to the job's loop; it must not block (the loop's
	// mailbox), so that a stuck loop never delays a renewal.
	out func(loop.Lease)
	log zerolog.Logger
	// place says which replica should hold the lease; nil: always compete.
	place Placement

	rev   uint64
	state loop.Lease
	value []byte
	// seenRev is the revision of another holder's lease last seen, at seenAt: if it has not
	// changed a TTL later, the holder stopped renewing (and acting, a margin before).
	seenRev uint64
	seenAt  time.Time
	// free is true while the lease key is known to be absent, since freeSince.
	free      bool
	freeSince time.Time
	// sawEntry is true once the current watch delivered an entry.
	sawEntry bool
	// keepFrom is a preferred replica that did not take the lease within the grace
	// period; it is not handed the lease again before keepUntil. keepFails counts its
	// consecutive failures to take it.
	keepFrom  string
	keepUntil time.Time
	keepFails int
}

// grace is how long a replica that is not the job's preferred one leaves a free or
// unrenewed lease to the preferred one.
func (k *LeaseKeeper) grace() time.Duration { return k.ttl }

// keep records that preferred replica to did not take the lease within the grace period:
// the lease is not handed to it again for 2 TTLs, doubling with each consecutive failure
// up to 64 TTLs. A replica that was only slow (busy, or its watches behind) gets the lease
// soon; one that cannot take it costs the job a grace period ever more rarely.
func (k *LeaseKeeper) keep(to string, now time.Time) {
	if to == k.keepFrom {
		k.keepFails = min(k.keepFails+1, 6)
	} else {
		k.keepFrom, k.keepFails = to, 1
	}
	k.keepUntil = now.Add(retry.Doubling(k.ttl, k.keepFails, k.ttl<<6))
}

// renewEvery is how often a held lease is renewed, and margin how long before the
// bucket could expire it the holder stops acting.
func (k *LeaseKeeper) renewEvery() time.Duration { return k.ttl / 3 }
func (k *LeaseKeeper) margin() time.Duration     { return k.ttl / 5 }

func (k *LeaseKeeper) report(s loop.Lease) {
	k.state = s
	k.out(s)
}

// Run keeps the lease until ctx is done, then releases it if held. While the lease is not
// held it watches the key, to take the lease the moment it is released or expires, and
// after a reconnect restarts the watch (a KV watch notices a server restart only after
// missed heartbeats) and acts at once. While the lease is held there is no watch: the
// renewals' compare-and-set finds out when the lease is lost, and a watch would only echo
// each renewal back (and cost the server a consumer per job).
func (k *LeaseKeeper) Run(ctx context.Context) {
	var err error
	k.value, err = messages.Marshal(&messages.Lease{Schema: messages.SchemaVersion, Job: k.job, Holder: k.holder, AcquiredAt: time.Now().UTC()})
	if err != nil {
		k.log.Error().Err(err).Msg("cannot encode the lease")
		return
	}
	f := NewFollow(k.kv, k.conn, k.key)
	defer f.Close()
	watch := func() <-chan jetstream.KeyValueEntry {
		k.sawEntry = false
		updates, err := f.Start(ctx)
		if err != nil {
			k.log.Warn().Err(err).Msg("cannot watch the lease; relying on retries")
		}
		return updates
	}
	updates := watch()
	watching := true
	timer := time.NewTimer(0)
	defer timer.Stop()
	var moved <-chan struct{}
	if k.place != nil {
		moved = k.place.Changes()
	}
	for {
		switch {
		case k.state.Held && watching:
			f.Stop()
			updates, watching = nil, false
		case !k.state.Held && !watching:
			updates, watching = watch(), true
		}
		select {
		case <-ctx.Done():
			k.release()
			return
		case <-moved:
			moved = k.place.Changes()
			k.reconsider(timer)
		case <-f.Reconnected():
			if watching {
				updates = watch()
			}
			timer.Reset(0)
		case e, ok := <-updates:
			if !ok {
				updates = nil
				continue
			}
			k.observe(ctx, e, timer)
		case <-timer.C:
			timer.Reset(k.step(ctx))
		}
	}
}

// observe reacts to a change of the lease key seen by the watch. Every renewal by
// another holder pushes the take-over attempt a TTL further out.
func (k *LeaseKeeper) observe(ctx context.Context, e jetstream.KeyValueEntry, timer *time.Timer) {
	if e == nil {
		// The end of the watch's initial values: none means the lease is free.
		if !k.sawEntry && !k.state.Held {
			k.freed()
			timer.Reset(0)
		}
		return
	}
	k.sawEntry = true
	if k.state.Held {
		return
	}
	if e.Operation() != jetstream.KeyValuePut {
		k.seenRev = 0
		k.freed()
		k.report(loop.Lease{})
		timer.Reset(0)
		return
	}
	k.free = false
	var l messages.Lease
	if messages.Unmarshal(e.Value(), &l) != nil || l.Holder == k.holder {
		return
	}
	k.seen(e.Revision())
	if l.Holder != k.state.Holder {
		k.report(loop.Lease{Holder: l.Holder})
	}
	timer.Reset(k.ttl)
}

// seen records another holder's lease revision, timing it from its first sighting.
func (k *LeaseKeeper) seen(rev uint64) {
	if rev != k.seenRev {
		k.seenRev, k.seenAt = rev, time.Now()
	}
}

// freed records that the lease key is absent, timing it from the first sighting.
func (k *LeaseKeeper) freed() {
	if !k.free {
		k.free, k.freeSince = true, time.Now()
	}
}

// reconsider reacts to a change of the placement: a holder that is no longer the
// preferred replica, and a replica that just became it, act at once.
func (k *LeaseKeeper) reconsider(timer *time.Timer) {
	preferred := k.place.Preferred(k.job) == k.holder
	if k.state.Held && !preferred && k.handOverTo() != "" || !k.state.Held && preferred {
		timer.Reset(0)
	}
}

// holdOff returns how long this replica, not holding the lease, leaves it to the
// preferred replica; 0 means compete now.
func (k *LeaseKeeper) holdOff(now time.Time) time.Duration {
	if k.place == nil || k.place.Preferred(k.job) == k.holder {
		return 0
	}
	switch {
	case k.seenRev != 0:
		return k.seenAt.Add(k.ttl + k.grace()).Sub(now)
	case k.free:
		return k.freeSince.Add(k.grace()).Sub(now)
	default:
		// Nothing known yet (no watch): count the grace period from now.
		k.free, k.freeSince = true, now
		return k.grace()
	}
}

// handOverTo returns the replica to hand the held lease to, or "" to keep it.
func (k *LeaseKeeper) handOverTo() string {
	if k.place == nil {
		return ""
	}
	to := k.place.Preferred(k.job)
	if to == k.holder || to == k.keepFrom && time.Now().Before(k.keepUntil) {
		return ""
	}
	return to
}

// handOver stops acting on the lease (the job's loop aborts its pending checkpoints with
// coordinator_change) and releases it, so that the preferred replica takes it at once.
func (k *LeaseKeeper) handOver(ctx context.Context, to string) {
	k.log.Info().Str("to", to).Msg("handing the lease over to the job's preferred replica")
	rev := k.rev
	k.report(loop.Lease{})
	k.delete(rev)
	k.seenRev = 0
	k.free, k.freeSince = true, time.Now()
}

// step takes or renews the lease once and returns when to try next.
func (k *LeaseKeeper) step(ctx context.Context) time.Duration {
	start := time.Now()
	if !k.state.Held {
		if wait := k.holdOff(start); wait > 0 {
			return wait
		}
	} else if to := k.handOverTo(); to != "" {
		k.handOver(ctx, to)
		return k.grace()
	}
	// graced: competing although another replica is preferred, its grace period over.
	graced := !k.state.Held && k.place != nil && k.place.Preferred(k.job) != k.holder
	cctx, cancel := context.WithTimeout(ctx, k.renewEvery())
	defer cancel()
	var from uint64 // the revision the write expects; 0: the key must be absent
	takeOver := !k.state.Held && k.seenRev != 0 && time.Since(k.seenAt) >= k.ttl
	switch {
	case k.state.Held:
		from = k.rev
	case takeOver:
		// The holder has not renewed for a TTL: it stopped acting a margin ago. Take the
		// lease from the revision last seen, without waiting for the server to expire it;
		// the compare-and-set fails if the holder renewed after all.
		from, k.seenRev = k.seenRev, 0
	}
	rev, err := cairnjs.CompareAndSet(cctx, k.kv, k.key, k.value, from)
	if takeOver && err == nil {
		k.log.Info().Msg("took over a lease its holder stopped renewing")
	}
	if cairnjs.IsConflict(err) {
		// A write of ours whose reply was lost (a timeout across a reconnect) may have
		// landed after all: if the key still names this coordinator, adopt its revision.
		// Otherwise note the other holder's revision.
		if holder, r, ok := k.current(cctx); ok && holder == k.holder {
			rev, err = cairnjs.CompareAndSet(cctx, k.kv, k.key, k.value, r)
		} else if ok && !k.state.Held {
			k.seen(r)
		}
	}
	switch {
	case err == nil:
		k.rev = rev
		tenure := k.state.Tenure
		if !k.state.Held {
			tenure = rev
		}
		if to := k.handOverTo(); graced && to != "" {
			k.keep(to, start)
			k.log.Info().Str("preferred", to).Msg("took the lease, which the job's preferred replica did not take within the grace period")
		}
		k.report(loop.Lease{Held: true, ValidUntil: start.Add(k.ttl - k.margin()), Holder: k.holder, Rev: rev, Tenure: tenure})
		return k.renewEvery()
	case k.state.Held && (errors.Is(err, jetstream.ErrKeyRevisionMismatch) || errors.Is(err, jetstream.ErrKeyNotFound)):
		k.log.Warn().Err(err).Msg("lease lost")
		k.report(loop.Lease{})
		return 0
	case k.state.Held:
		k.log.Warn().Err(err).Msg("lease renewal failed; retrying")
		return max(min(k.renewEvery()/4, time.Until(k.state.ValidUntil)), 10*time.Millisecond)
	case errors.Is(err, jetstream.ErrKeyExists) && k.seenRev != 0:
		return max(time.Until(k.seenAt.Add(k.ttl)), 0)
	case errors.Is(err, jetstream.ErrKeyExists):
		return k.ttl / 2
	case errors.Is(err, jetstream.ErrKeyRevisionMismatch):
		return 0 // the lease moved on or expired: try again at once
	default:
		k.log.Debug().Err(err).Msg("cannot take the lease yet")
		return k.renewEvery()
	}
}

// current reads who holds the lease and at which revision, from the bucket stream's
// leader; ok is false when it cannot tell.
func (k *LeaseKeeper) current(ctx context.Context) (holder string, rev uint64, ok bool) {
	value, rev, err := cairnjs.CurrentEntry(ctx, k.leader, k.kv.Bucket(), k.key)
	if err != nil {
		return "", 0, false
	}
	var l messages.Lease
	if messages.Unmarshal(value, &l) != nil {
		return "", 0, false
	}
	return l.Holder, rev, true
}

// release deletes the lease if held, so a standby takes it at once.
func (k *LeaseKeeper) release() {
	if k.state.Held {
		k.delete(k.rev)
	}
}

// delete deletes the lease at revision rev (ours).
func (k *LeaseKeeper) delete(rev uint64) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := k.kv.Delete(ctx, k.key, jetstream.LastRevision(rev)); err != nil {
		k.log.Debug().Err(err).Msg("lease not released; it expires by TTL")
	}
}
