package operator

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	cjs "github.com/cairn-stream/cairn/pkg/jetstream"
	"github.com/cairn-stream/cairn/pkg/messages"
)

// trusted reports whether barrier b, newer than every barrier handled, is in line with
// the job's lease and checkpoint id counter, read from their buckets' leader when b goes
// beyond what was read before:
//   - a fencing token above the highest one seen must be at most the revision of the
//     job's lease key (tokens are lease revisions, which only grow);
//   - an id more than one above the last barrier's must be at most the id counter's value
//     (ids are taken from the counter before their barrier is sent).
//
// A barrier that is not is ignored: it does not come from the lease holder, and following
// it would make the instance ignore the real barriers below its id or token. The error is
// that of a read that failed.
func (r *Runtime) trusted(ctx context.Context, st *loopState, b *messages.Barrier) (bool, error) {
	if b.Token > st.token {
		_, rev, err := cjs.CurrentEntry(ctx, r.nc, cjs.LeaseBucket, cjs.LeaseKey(r.cfg.Job))
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
		data, _, err := cjs.CurrentEntry(ctx, r.nc, cjs.ManifestBucket, cjs.CounterKey(r.cfg.Job))
		if err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
			return false, fmt.Errorf("read the checkpoint id counter of job %s: %w", r.cfg.Job, err)
		}
		var c messages.Counter
		if data != nil {
			if err := messages.Unmarshal(data, &c); err != nil {
				return false, fmt.Errorf("read the checkpoint id counter of job %s: %w", r.cfg.Job, err)
			}
		}
		st.counter = max(st.counter, c.Last)
		if b.CheckpointID > st.counter {
			r.warnNoisy("barrier ignored: its checkpoint id is above the job's id counter, so no lease holder sent it",
				"checkpoint", b.CheckpointID, "counter", c.Last, "last_barrier", st.lastBarrier, "token", b.Token, "coordinator", b.Coordinator)
			return false, nil
		}
	}
	return true, nil
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
