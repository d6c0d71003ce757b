package coordinator

import (
	"context"
	"errors"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/cairn-stream/cairn/pkg/messages"
)

// leaseKV is what the lease keeper needs of KV CAIRN_LEASES.
type leaseKV interface {
	Get(ctx context.Context, key string) (jetstream.KeyValueEntry, error)
	Create(ctx context.Context, key string, value []byte, opts ...jetstream.KVCreateOpt) (uint64, error)
	Update(ctx context.Context, key string, value []byte, revision uint64) (uint64, error)
	Delete(ctx context.Context, key string, opts ...jetstream.KVDeleteOpt) error
	Watch(ctx context.Context, keys string, opts ...jetstream.WatchOpt) (jetstream.KeyWatcher, error)
}

// statusNotifier tells about connection state changes (*nats.Conn).
type statusNotifier interface {
	StatusChanged(statuses ...nats.Status) chan nats.Status
	RemoveStatusListener(ch chan nats.Status)
}

// leaseKeeper competes for a job's lease and renews it while held. The bucket's TTL
// expires a lease whose holder stops renewing; the holder itself stops acting a margin
// before that (validUntil), so two coordinators never trigger at once.
type leaseKeeper struct {
	kv     leaseKV
	conn   statusNotifier
	key    string
	job    string
	holder string
	ttl    time.Duration
	// out hands a new lease state to the job's loop; it must not block (the loop's
	// mailbox), so that a stuck loop never delays a renewal.
	out func(leaseState)
	log zerolog.Logger

	rev   uint64
	state leaseState
	value []byte
	// seenRev is the revision of another holder's lease last seen, at seenAt: if it has not
	// changed a TTL later, the holder stopped renewing (and acting, a margin before).
	seenRev uint64
	seenAt  time.Time
}

// renewEvery is how often a held lease is renewed, and margin how long before the
// bucket could expire it the holder stops acting.
func (k *leaseKeeper) renewEvery() time.Duration { return k.ttl / 3 }
func (k *leaseKeeper) margin() time.Duration     { return k.ttl / 5 }

func (k *leaseKeeper) report(s leaseState) {
	k.state = s
	k.out(s)
}

// run keeps the lease until ctx is done, then releases it if held. It watches the key to
// take the lease the moment it is released or expires, and after a reconnect restarts the
// watch (a KV watch notices a server restart only after missed heartbeats) and acts at once.
func (k *leaseKeeper) run(ctx context.Context) {
	var err error
	k.value, err = messages.Marshal(&messages.Lease{Schema: messages.SchemaVersion, Job: k.job, Holder: k.holder, AcquiredAt: time.Now().UTC()})
	if err != nil {
		k.log.Error().Err(err).Msg("cannot encode the lease")
		return
	}
	reconnected := k.conn.StatusChanged(nats.CONNECTED)
	defer k.conn.RemoveStatusListener(reconnected)
	var w jetstream.KeyWatcher
	watch := func() <-chan jetstream.KeyValueEntry {
		if w != nil {
			_ = w.Stop()
		}
		if w, err = k.kv.Watch(ctx, k.key); err != nil {
			k.log.Warn().Err(err).Msg("cannot watch the lease; relying on retries")
			w = nil
			return nil
		}
		return w.Updates()
	}
	updates := watch()
	defer func() {
		if w != nil {
			_ = w.Stop()
		}
	}()
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			k.release()
			return
		case <-reconnected:
			updates = watch()
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
func (k *leaseKeeper) observe(ctx context.Context, e jetstream.KeyValueEntry, timer *time.Timer) {
	if e == nil || k.state.held {
		return
	}
	if e.Operation() != jetstream.KeyValuePut {
		k.seenRev = 0
		k.report(leaseState{})
		timer.Reset(0)
		return
	}
	var l messages.Lease
	if messages.Unmarshal(e.Value(), &l) != nil || l.Holder == k.holder {
		return
	}
	k.seen(e.Revision())
	if l.Holder != k.state.holder {
		k.report(leaseState{holder: l.Holder})
	}
	timer.Reset(k.ttl)
}

// seen records another holder's lease revision, timing it from its first sighting.
func (k *leaseKeeper) seen(rev uint64) {
	if rev != k.seenRev {
		k.seenRev, k.seenAt = rev, time.Now()
	}
}

// step takes or renews the lease once and returns when to try next.
func (k *leaseKeeper) step(ctx context.Context) time.Duration {
	start := time.Now()
	cctx, cancel := context.WithTimeout(ctx, k.renewEvery())
	defer cancel()
	var rev uint64
	var err error
	switch {
	case k.state.held:
		rev, err = k.kv.Update(cctx, k.key, k.value, k.rev)
	case k.seenRev != 0 && time.Since(k.seenAt) >= k.ttl:
		// The holder has not renewed for a TTL: it stopped acting a margin ago. Take the
		// lease from the revision last seen, without waiting for the server to expire it;
		// the compare-and-set fails if the holder renewed after all.
		rev, err = k.kv.Update(cctx, k.key, k.value, k.seenRev)
		k.seenRev = 0
		if err == nil {
			k.log.Info().Msg("took over a lease its holder stopped renewing")
		}
	default:
		rev, err = k.kv.Create(cctx, k.key, k.value)
	}
	if errors.Is(err, jetstream.ErrKeyRevisionMismatch) || errors.Is(err, jetstream.ErrKeyExists) {
		// A write of ours whose reply was lost (a timeout across a reconnect) may have
		// landed after all: if the key still names this coordinator, adopt its revision.
		// Otherwise note the other holder's revision.
		if holder, r, ok := k.current(cctx); ok && holder == k.holder {
			rev, err = k.kv.Update(cctx, k.key, k.value, r)
		} else if ok && !k.state.held {
			k.seen(r)
		}
	}
	switch {
	case err == nil:
		k.rev = rev
		tenure := k.state.tenure
		if !k.state.held {
			tenure = rev
		}
		k.report(leaseState{held: true, validUntil: start.Add(k.ttl - k.margin()), holder: k.holder, rev: rev, tenure: tenure})
		return k.renewEvery()
	case k.state.held && (errors.Is(err, jetstream.ErrKeyRevisionMismatch) || errors.Is(err, jetstream.ErrKeyNotFound)):
		k.log.Warn().Err(err).Msg("lease lost")
		k.report(leaseState{})
		return 0
	case k.state.held:
		k.log.Warn().Err(err).Msg("lease renewal failed; retrying")
		return max(min(k.renewEvery()/4, time.Until(k.state.validUntil)), 10*time.Millisecond)
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

// current reads who holds the lease and at which revision; ok is false when it cannot tell.
func (k *leaseKeeper) current(ctx context.Context) (holder string, rev uint64, ok bool) {
	e, err := k.kv.Get(ctx, k.key)
	if err != nil {
		return "", 0, false
	}
	var l messages.Lease
	if messages.Unmarshal(e.Value(), &l) != nil {
		return "", 0, false
	}
	return l.Holder, e.Revision(), true
}

// release deletes the lease if held, so a standby takes it at once.
func (k *leaseKeeper) release() {
	if !k.state.held {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := k.kv.Delete(ctx, k.key, jetstream.LastRevision(k.rev)); err != nil {
		k.log.Debug().Err(err).Msg("lease not released; it expires by TTL")
	}
}
