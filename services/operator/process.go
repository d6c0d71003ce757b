package operator

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cairn-stream/cairn/pkg/messages"
)

// maxQueuedSnapshots is how many snapshots may wait for the persister; a barrier beyond
// that is declined rather than holding more copies of the state in memory. It matches the
// most checkpoints a job may have pending.
const maxQueuedSnapshots = messages.MaxMaxConcurrent

// loopState is owned by the processing goroutine.
type loopState struct {
	// position is the input sequence of the last record applied.
	position uint64
	// lastBarrier is the highest checkpoint id handled; older barriers are ignored.
	lastBarrier uint64
	// queue holds the snapshots taken and not yet handed to the persister, oldest first.
	queue []persistJob
}

// process is the processing goroutine: it applies records, takes snapshots on barriers and
// runs Do requests, one at a time, until ctx is done. It returns the snapshots not yet
// handed to the persister.
func (r *Runtime) process(ctx context.Context, st loopState, records <-chan Record, barriers <-chan *nats.Msg, jobs chan<- persistJob) []persistJob {
	for {
		var out chan<- persistJob
		var head persistJob
		if len(st.queue) > 0 {
			out, head = jobs, st.queue[0]
		}
		select {
		case <-ctx.Done():
			return st.queue
		case rec := <-records:
			r.apply(ctx, &st, rec)
		case msg := <-barriers:
			r.barrier(&st, msg)
		case req := <-r.doCh:
			req.fn()
			close(req.done)
		case out <- head:
			st.queue[0] = persistJob{}
			st.queue = st.queue[1:]
		}
	}
}

// apply hands one record to the Machine, publishes what it emitted, and advances the
// position.
func (r *Runtime) apply(ctx context.Context, st *loopState, rec Record) {
	if rec.Sequence <= st.position {
		r.log.Warn().Uint64("seq", rec.Sequence).Uint64("position", st.position).Msg("input record at or before the position skipped")
		return
	}
	if err := r.m.Apply(rec); err != nil {
		r.stats.rejected.Add(1)
		r.log.Debug().Err(err).Uint64("seq", rec.Sequence).Str("subject", rec.Subject).Msg("input record rejected")
	} else {
		r.stats.applied.Add(1)
	}
	if p, ok := r.m.(Producer); ok {
		for i, out := range p.TakeOutputs() {
			r.emit(ctx, rec.Sequence, i, out)
		}
	}
	st.position = rec.Sequence
	r.position.Store(rec.Sequence)
}

// barrier takes a snapshot for a new barrier and queues it for the persister.
func (r *Runtime) barrier(st *loopState, msg *nats.Msg) {
	var b messages.Barrier
	if err := messages.Unmarshal(msg.Data, &b); err != nil {
		r.log.Warn().Err(err).Msg("malformed barrier ignored")
		return
	}
	if b.Job != r.cfg.Job {
		r.log.Warn().Str("barrier_job", b.Job).Uint64("checkpoint", b.CheckpointID).Msg("barrier of another job ignored")
		return
	}
	log := r.log.With().Uint64("checkpoint", b.CheckpointID).Logger()
	if b.CheckpointID <= st.lastBarrier {
		// The coordinator sends a barrier again when it lacks this instance's ack: answer
		// with the ack already sent, if it is still remembered (and not still being stored).
		if data := r.acks.get(b.CheckpointID); data != nil {
			if err := r.nc.Publish(r.cfg.Subjects.Ack(r.cfg.Job), data); err != nil {
				log.Warn().Err(err).Msg("publish ack again")
			}
			log.Debug().Msg("barrier seen before: ack sent again")
			return
		}
		log.Debug().Uint64("last_barrier", st.lastBarrier).Msg("old barrier ignored")
		return
	}
	st.lastBarrier = b.CheckpointID
	if len(st.queue) >= maxQueuedSnapshots {
		r.decline(log, b.CheckpointID, fmt.Sprintf("%d snapshots are already waiting to be stored", len(st.queue)))
		return
	}
	snap, err := r.m.Snapshot()
	if err != nil {
		r.decline(log, b.CheckpointID, "snapshot: "+err.Error())
		return
	}
	log.Debug().Uint64("position", st.position).Msg("snapshot taken")
	st.queue = append(st.queue, persistJob{
		checkpoint: b.CheckpointID,
		snap:       snap,
		positions:  map[string]uint64{r.cfg.InputStream: st.position},
		log:        log,
	})
}

// outputPublisher publishes outputs to JetStream.
type outputPublisher interface {
	PublishMsg(ctx context.Context, m *nats.Msg, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error)
}

// emit publishes output n of the record at seq with its deterministic message id,
// retrying with backoff until it is stored or ctx ends. When ctx ends first the output is
// not lost: the runtime stops before it takes another snapshot, so the record is replayed,
// and the output published again, after a restore.
func (r *Runtime) emit(ctx context.Context, seq uint64, n int, out Output) {
	id := fmt.Sprintf("%s.%s.%d.%d", r.cfg.Job, r.cfg.Instance, seq, n)
	wait := 50 * time.Millisecond
	for {
		m := nats.NewMsg(out.Subject)
		m.Data = out.Data
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := r.outputs.PublishMsg(pctx, m, jetstream.WithMsgID(id))
		cancel()
		if err == nil {
			r.stats.emitted.Add(1)
			return
		}
		r.log.Warn().Err(err).Str("msg_id", id).Str("subject", out.Subject).Msg("output not stored; retrying")
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		wait = min(wait*2, 2*time.Second)
	}
}
