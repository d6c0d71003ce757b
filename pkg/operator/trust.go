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

// trusted reports whether barrier b, newer than every barrier handled, is in line with
// the job's lease and checkpoint id counter, read when b goes beyond what was read before:
//   - a fencing token above the highest one seen must be at most the revision of the
//     job's lease key (tokens are lease revisions, which only grow), read from the lease
//     bucket's leader;
//   - an id more than one above the last barrier's must be at most the id counter's value
//     (ids are taken from the counter before their barrier is sent), read with a direct
//     get of the job's own key (counterAtLeast), which a NATS permission can confine to
//     the job's keys.
//
// A barrier that is not is ignored: it does not come from the lease holder, and following
// it would make the instance ignore the real barriers below its id or token. The error is
// that of a read that failed.
func (r *Runtime) trusted(ctx context.Context, st *loopState, b *messages.Barrier) (bool, error) {
	if b.Token > st.token {
		_, rev, err := cairnjs.CurrentEntry(ctx, r.nc, cairnjs.LeaseBucket, cairnjs.LeaseKey(r.cfg.Job))
		if err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
			return false, fmt.Errorf("read the lease of job %s: %w", r.cfg.Job, err)
		}
		if b.Token > rev {
			r.warnNoisy("barrier ignored: its fencing token is above the revision of the job's lease, so no lease holder sent it",
				"checkpoint", b.CheckpointID, "token", b.Token, "lease_revision", rev, "coordinator", b.Coordinator)
			return false, nil
		}
	}
	if b.CheckpointID > st.lastBarrier+1 && b.CheckpointID > st.counter {
		last, err := r.counterAtLeast(ctx, b.CheckpointID)
		if err != nil {
			return false, err
		}
		st.counter = max(st.counter, last)
		if b.CheckpointID > st.counter {
			r.warnNoisy("barrier ignored: its checkpoint id is above the job's id counter, so no lease holder sent it",
				"checkpoint", b.CheckpointID, "counter", last, "last_barrier", st.lastBarrier, "token", b.Token, "coordinator", b.Coordinator)
			return false, nil
		}
	}
	return true, nil
}

// counterWaits are the waits before reading the id counter again while it is below a
// barrier's id: about a second in all.
var counterWaits = []time.Duration{50 * time.Millisecond, 100 * time.Millisecond, 200 * time.Millisecond, 250 * time.Millisecond, 400 * time.Millisecond}

// counterAtLeast reads the job's checkpoint id counter (0 when it has none) until it is at
// least id, at most len(counterWaits)+1 times, and returns the last value read. The read
// is a KV get: a direct get by the key's subject, which a replica that lags the bucket's
// leader may answer with an older value. Since the lease holder advances the counter
// before it sends the barrier, a value below id may be stale rather than a forgery: it is
// read again, a little later each time, before the barrier is ignored.
func (r *Runtime) counterAtLeast(ctx context.Context, id uint64) (uint64, error) {
	key := cairnjs.CounterKey(r.cfg.Job)
	for i := 0; ; i++ {
		e, err := r.manifests.Get(ctx, key)
		var c messages.Counter
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
		case err != nil:
			return 0, fmt.Errorf("read the checkpoint id counter of job %s: %w", r.cfg.Job, err)
		default:
			if err := messages.Unmarshal(e.Value(), &c); err != nil {
				return 0, fmt.Errorf("read the checkpoint id counter of job %s: %w", r.cfg.Job, err)
			}
		}
		if c.Last >= id || i == len(counterWaits) {
			return c.Last, nil
		}
		t := time.NewTimer(counterWaits[i])
		select {
		case <-ctx.Done():
			t.Stop()
			return 0, fmt.Errorf("read the checkpoint id counter of job %s: %w", r.cfg.Job, ctx.Err())
		case <-t.C:
		}
	}
}

// noisePeriod is how long a warning that strangers can cause at will stays quiet after
// it was logged; the lines suppressed meanwhile are counted in one line at its end.
const noisePeriod = 10 * time.Second

// warnNoisy logs msg with args at warn level, at most once per noisePeriod (msg is the
// kind: a fixed string).
func (r *Runtime) warnNoisy(msg string, args ...any) {
	if r.noise.Allow(msg) {
		r.log.Warn(msg, args...)
	}
}
