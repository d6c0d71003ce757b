package operator

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	cjs "github.com/cairn-stream/cairn/pkg/jetstream"
	"github.com/cairn-stream/cairn/pkg/messages"
)

// leaseStore is the part of the CAIRN_LEASES bucket the runtime uses.
type leaseStore interface {
	Get(ctx context.Context, key string) (jetstream.KeyValueEntry, error)
	Put(ctx context.Context, key string, value []byte) (uint64, error)
	Delete(ctx context.Context, key string, opts ...jetstream.KVDeleteOpt) error
	Status(ctx context.Context) (jetstream.KeyValueStatus, error)
}

// heartbeatInterval is Config.Heartbeat or, when 0, a third of the lease bucket's TTL.
func (r *Runtime) heartbeatInterval(ctx context.Context) (time.Duration, error) {
	st, err := r.leases.Status(ctx)
	if err != nil {
		if r.cfg.Heartbeat > 0 {
			r.log.Warn().Err(err).Msg("cannot read the lease TTL to check the heartbeat against it")
			return r.cfg.Heartbeat, nil
		}
		return 0, fmt.Errorf("read the TTL of bucket %s: %w", cjs.LeaseBucket, err)
	}
	ttl := st.TTL()
	if r.cfg.Heartbeat > 0 {
		if ttl > 0 && r.cfg.Heartbeat >= ttl {
			r.log.Warn().Dur("heartbeat", r.cfg.Heartbeat).Dur("ttl", ttl).Msg("heartbeat not shorter than the lease TTL: the registration will lapse between beats")
		}
		return r.cfg.Heartbeat, nil
	}
	if ttl <= 0 {
		ttl = cjs.DefaultLeaseTTL
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

// checkPredecessor warns when another incarnation of this instance is still registered:
// a process that did not shut down cleanly, or a second process with the same instance id.
func (r *Runtime) checkPredecessor(ctx context.Context) {
	e, err := r.leases.Get(ctx, cjs.RegistrationKey(r.cfg.Job, r.cfg.Instance))
	if err != nil {
		return
	}
	var cur messages.Registration
	if messages.Unmarshal(e.Value(), &cur) == nil && cur.Incarnation != r.incarnation {
		r.log.Warn().Str("other_incarnation", cur.Incarnation).Time("other_started_at", cur.StartedAt).
			Msg("replacing the registration of another incarnation of this instance; if it still runs, two processes share this instance id")
	}
}

// register puts the registration; every put renews its TTL.
func (r *Runtime) register(ctx context.Context, reg []byte) error {
	key := cjs.RegistrationKey(r.cfg.Job, r.cfg.Instance)
	if _, err := r.leases.Put(ctx, key, reg); err != nil {
		return fmt.Errorf("register %s in %s: %w", key, cjs.LeaseBucket, err)
	}
	return nil
}

// heartbeat renews the registration every interval, and at once after a reconnect, until
// ctx is done. A failed renewal is retried after a quarter of the interval, or a second
// if that is shorter.
func (r *Runtime) heartbeat(ctx context.Context, every time.Duration, reg []byte) {
	retry := max(min(every/4, time.Second), 10*time.Millisecond)
	reconnected := r.nc.StatusChanged(nats.CONNECTED)
	defer r.nc.RemoveStatusListener(reconnected)
	t := time.NewTimer(every)
	defer t.Stop()
	failing := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-reconnected:
			r.log.Info().Msg("reconnected: renewing the registration")
		}
		pctx, cancel := context.WithTimeout(ctx, min(every, cleanupTimeout))
		err := r.register(pctx, reg)
		cancel()
		switch {
		case err != nil && ctx.Err() == nil:
			r.log.Warn().Err(err).Msg("registration not renewed; retrying")
			failing = true
			t.Reset(retry)
			continue
		case failing:
			r.log.Info().Msg("registration renewed again")
			failing = false
		}
		t.Reset(every)
	}
}

// deregister deletes the registration, unless another incarnation of this instance has
// replaced it meanwhile. A heartbeat put abandoned on cancellation may still land after the
// read, so a revision mismatch reads again.
func (r *Runtime) deregister(ctx context.Context) {
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
	defer cancel()
	key := cjs.RegistrationKey(r.cfg.Job, r.cfg.Instance)
	for range 5 {
		e, err := r.leases.Get(dctx, key)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return
		}
		if err != nil {
			r.log.Warn().Err(err).Msg("read the registration to delete it; it expires with its TTL")
			return
		}
		var cur messages.Registration
		if err := messages.Unmarshal(e.Value(), &cur); err == nil && cur.Incarnation != r.incarnation {
			r.log.Warn().Str("other_incarnation", cur.Incarnation).Msg("registration belongs to another incarnation; left in place")
			return
		}
		err = r.leases.Delete(dctx, key, jetstream.LastRevision(e.Revision()))
		if err == nil {
			return
		}
		if !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			r.log.Warn().Err(err).Msg("delete the registration; it expires with its TTL")
			return
		}
	}
	r.log.Warn().Msg("registration kept changing; it expires with its TTL")
}
