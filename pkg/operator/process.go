package operator

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go"

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
	// token is the highest coordinator fencing token seen on a barrier; a barrier with a
	// lower token comes from a coordinator that lost its lease and is ignored.
	token uint64
	// queue holds the snapshots taken and not yet handed to the persister, oldest first.
	queue []persistJob
	// outcomes tracks the checkpoints a CheckpointListener waits to hear about.
	outcomes outcomes
	// outputs decides which outputs of replayed records are already stored.
	outputs outputState
	// stop, once set, ends processing with this error: the Machine cannot be checkpointed.
	stop error
}

// process is the processing goroutine: it applies records, takes snapshots on barriers and
// runs Do requests, one at a time, until ctx is done, the runtime is replaced, or an
// output cannot be stored (then it returns that error). Cancellation and replacement have
// priority: once either happened, no further record or barrier is taken. It returns the
// snapshots not yet handed to the persister; they were taken before the stop, so they
// cover only records whose outputs are all stored.
func (r *Runtime) process(ctx context.Context, st loopState, records <-chan Record, barriers, outcomes <-chan *nats.Msg, jobs chan<- persistJob) ([]persistJob, error) {
	for {
		if r.stopping(ctx) {
			return st.queue, nil
		}
		var out chan<- persistJob
		var head persistJob
		if len(st.queue) > 0 {
			out, head = jobs, st.queue[0]
		}
		select {
		case <-ctx.Done():
			return st.queue, nil
		case <-r.fencedCh:
			return st.queue, nil
		case rec := <-records:
			// A record that was ready together with the cancellation is left for the
			// next run, which reads it again.
			if r.stopping(ctx) {
				return st.queue, nil
			}
			if err := r.apply(ctx, &st, rec); err != nil {
				return st.queue, err
			}
		case msg := <-barriers:
			if r.stopping(ctx) {
				return st.queue, nil
			}
			r.barrier(&st, msg)
			if st.stop != nil {
				return st.queue, st.stop
			}
		case msg := <-outcomes:
			r.outcome(&st, msg)
		case req := <-r.doCh:
			req.fn()
			close(req.done)
		case out <- head:
			st.queue[0] = persistJob{}
			st.queue = st.queue[1:]
		}
	}
}

// stopping reports whether ctx is done or the runtime has been replaced.
func (r *Runtime) stopping(ctx context.Context) bool { return ctx.Err() != nil || r.isFenced() }

// apply hands one record to the Machine, publishes what it emitted, and advances the
// position once every output is stored. When an output cannot be stored it returns the
// error and the position stays before the record: the Machine then holds a record the
// position does not cover, so the caller must take no further snapshot.
func (r *Runtime) apply(ctx context.Context, st *loopState, rec Record) error {
	if rec.Sequence <= st.position {
		r.log.Warn("input record at or before the position skipped", "seq", rec.Sequence, "position", st.position)
		return nil
	}
	if err := r.m.Apply(rec); err != nil {
		r.stats.rejected.Add(1)
		r.log.Debug("input record rejected", "error", err, "seq", rec.Sequence, "subject", rec.Subject)
	} else {
		r.stats.applied.Add(1)
	}
	if p := r.cp.producer(); p != nil {
		for i, out := range p.TakeOutputs() {
			if err := r.output(ctx, &st.outputs, outputPos{seq: rec.Sequence, n: i}, out); err != nil {
				return err
			}
		}
	}
	st.position = rec.Sequence
	r.position.Store(rec.Sequence)
	return nil
}

// barrier takes a snapshot for a new barrier and queues it for the persister.
func (r *Runtime) barrier(st *loopState, msg *nats.Msg) {
	var b messages.Barrier
	if err := messages.Unmarshal(msg.Data, &b); err != nil {
		r.log.Warn("malformed barrier ignored", "error", err)
		return
	}
	if b.Job != r.cfg.Job {
		r.log.Warn("barrier of another job ignored", "barrier_job", b.Job, "checkpoint", b.CheckpointID)
		return
	}
	log := r.log.With("checkpoint", b.CheckpointID)
	if b.Token != 0 && b.Token < st.token {
		// A token of 0 comes from a coordinator before fencing tokens: accepted.
		log.Debug("barrier of a fenced coordinator ignored: its token is below one already seen",
			"token", b.Token, "highest_token", st.token, "coordinator", b.Coordinator)
		return
	}
	st.token = max(st.token, b.Token)
	if b.CheckpointID <= st.lastBarrier {
		// The coordinator sends a barrier again when it lacks this instance's ack: answer
		// with the ack already sent, if it is still remembered (and not still being stored).
		if data := r.acks.get(b.CheckpointID); data != nil {
			if r.isFenced() {
				return
			}
			if err := r.nc.Publish(r.cfg.Subjects.Ack(r.cfg.Job), data); err != nil {
				log.Warn("publish ack again", "error", err)
			}
			log.Debug("barrier seen before: ack sent again")
			return
		}
		log.Debug("old barrier ignored", "last_barrier", st.lastBarrier)
		return
	}
	st.lastBarrier = b.CheckpointID
	if len(st.queue) >= maxQueuedSnapshots {
		r.decline(log, b.CheckpointID, fmt.Sprintf("%d snapshots are already waiting to be stored", len(st.queue)))
		return
	}
	snap, err := r.cp.snapshot(b.CheckpointID, b.MaxDeltas)
	if err != nil {
		r.decline(log, b.CheckpointID, "snapshot: "+err.Error())
		if errors.Is(err, ErrWrappedKeyed) {
			st.stop = err
		}
		return
	}
	if l := r.cp.listener(); l != nil {
		st.outcomes.snapshotted(l, b.CheckpointID)
	}
	log.Debug("snapshot taken", "position", st.position)
	st.queue = append(st.queue, persistJob{
		checkpoint: b.CheckpointID,
		snap:       snap,
		positions:  map[string]uint64{r.cfg.InputStream: st.position},
		log:        log,
	})
}
