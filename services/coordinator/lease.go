package coordinator

import (
	"context"
	"errors"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/cairn-stream/cairn/pkg/messages"
)

// leaseKV is what the lease keeper needs of KV CAIRN_LEASES.
type leaseKV interface {
	Create(ctx context.Context, key string, value []byte, opts ...jetstream.KVCreateOpt) (uint64, error)
	Update(ctx context.Context, key string, value []byte, revision uint64) (uint64, error)
	Delete(ctx context.Context, key string, opts ...jetstream.KVDeleteOpt) error
	Watch(ctx context.Context, keys string, opts ...jetstream.WatchOpt) (jetstream.KeyWatcher, error)
}

// leaseKeeper competes for a job's lease and renews it while held. The bucket's TTL
// expires a lease whose holder stops renewing; the holder itself stops acting a margin
// before that (validUntil), so two coordinators never trigger at once.
type leaseKeeper struct {
	kv     leaseKV
	key    string
	job    string
	holder string
	ttl    time.Duration
	out    chan<- leaseState
	log    zerolog.Logger
}

// renewEvery is how often a held lease is renewed, and margin how long before the
// bucket could expire it the holder stops acting.
func (k *leaseKeeper) renewEvery() time.Duration { return k.ttl / 3 }
func (k *leaseKeeper) margin() time.Duration     { return k.ttl / 5 }

func (k *leaseKeeper) run(ctx context.Context) {
	value, err := messages.Marshal(&messages.Lease{Schema: messages.SchemaVersion, Job: k.job, Holder: k.holder, AcquiredAt: time.Now().UTC()})
	if err != nil {
		k.log.Error().Err(err).Msg("cannot encode the lease")
		return
	}
	var updates <-chan jetstream.KeyValueEntry
	if w, err := k.kv.Watch(ctx, k.key); err == nil {
		defer func() { _ = w.Stop() }()
		updates = w.Updates()
	} else {
		k.log.Warn().Err(err).Msg("cannot watch the lease; falling back to retries")
	}
	var (
		rev    uint64
		state  leaseState
		timer  = time.NewTimer(0)
		report = func(s leaseState) {
			state = s
			send(ctx, k.out, s)
		}
	)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			if state.held {
				dctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				if err := k.kv.Delete(dctx, k.key, jetstream.LastRevision(rev)); err != nil {
					k.log.Debug().Err(err).Msg("lease not released; it expires by TTL")
				}
				cancel()
			}
			return
		case e, ok := <-updates:
			if !ok {
				updates = nil
				continue
			}
			if e == nil {
				continue
			}
			if e.Operation() != jetstream.KeyValuePut {
				if !state.held {
					report(leaseState{})
					timer.Reset(0)
				}
				continue
			}
			var l messages.Lease
			if messages.Unmarshal(e.Value(), &l) == nil && l.Holder != state.holder && !state.held {
				report(leaseState{holder: l.Holder})
			}
		case <-timer.C:
			start := time.Now()
			if state.held {
				cctx, cancel := context.WithTimeout(ctx, k.renewEvery())
				nrev, err := k.kv.Update(cctx, k.key, value, rev)
				cancel()
				switch {
				case err == nil:
					rev = nrev
					report(leaseState{held: true, validUntil: start.Add(k.ttl - k.margin()), holder: k.holder})
					timer.Reset(k.renewEvery())
				case errors.Is(err, jetstream.ErrKeyRevisionMismatch) || errors.Is(err, jetstream.ErrKeyNotFound):
					k.log.Warn().Err(err).Msg("lease lost")
					report(leaseState{})
					timer.Reset(0)
				default:
					k.log.Warn().Err(err).Msg("lease renewal failed; retrying")
					timer.Reset(max(min(k.renewEvery()/4, time.Until(state.validUntil)), 10*time.Millisecond))
				}
				continue
			}
			cctx, cancel := context.WithTimeout(ctx, k.renewEvery())
			nrev, err := k.kv.Create(cctx, k.key, value)
			cancel()
			switch {
			case err == nil:
				rev = nrev
				report(leaseState{held: true, validUntil: start.Add(k.ttl - k.margin()), holder: k.holder})
				timer.Reset(k.renewEvery())
			case errors.Is(err, jetstream.ErrKeyExists):
				timer.Reset(k.ttl / 2)
			default:
				k.log.Debug().Err(err).Msg("cannot take the lease yet")
				timer.Reset(k.renewEvery())
			}
		}
	}
}
