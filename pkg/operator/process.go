package operator

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/cairn-stream/cairn/internal/retry"
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
	// counter is the highest checkpoint id the job's id counter was read at; a barrier
	// whose id jumps above lastBarrier+1 is trusted only at or below it.
	counter uint64
	// input tracks what is needed to notice input removed under the consumer.
	input anchorState
	// outputs decides which outputs of replayed records are already stored.
	outputs outputState
	// deadLetters are the records after the restored position dead-lettered before.
	deadLetters deadLetters
	// stopInput stops the input consumer; called once processing stopped (halt).
	stopInput func()
}

// advance moves the position past the record at seq.
func (st *loopState) advance(r *Runtime, seq uint64) {
	st.position = seq
	r.position.Store(seq)
}

// process is the processing goroutine: it applies records, takes snapshots on barriers and
// runs Do requests, one at a time, until ctx is done, the runtime is replaced, or an
// output cannot be stored (then it returns that error). Cancellation and replacement have
// priority: once either happened, no further record or barrier is taken. Once processing
// stopped (halt) it stops the input consumer and takes no record, and goes on declining
// barriers and running Do requests. It returns the snapshots not yet handed to the
// persister; they were taken before the stop, so they cover only records whose outputs
// are all stored.
func (r *Runtime) process(ctx context.Context, st loopState, records <-chan delivery, barriers, outcomes <-chan *nats.Msg, jobs chan<- persistJob) ([]persistJob, error) {
	for {
		if r.stopping(ctx) {
			return st.queue, nil
		}
		if records != nil && r.halted.Load() != nil {
			records = nil
			if st.stopInput != nil {
				st.stopInput()
			}
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
				return st.queue, r.diagnose(ctx, err)
			}
		case msg := <-barriers:
			if r.stopping(ctx) {
				return st.queue, nil
			}
			if err := r.barrier(ctx, &st, msg); err != nil {
				return st.queue, r.diagnose(ctx, err)
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

// diagnose returns the error that stops processing: for input removed under the
// consumer, ErrReplaced instead when a newer incarnation took over (the likelier cause,
// and the one to tell), found by renewing the registration now.
func (r *Runtime) diagnose(ctx context.Context, err error) error {
	if !errors.Is(err, ErrInputRemoved) {
		return err
	}
	if cerr := r.confirm(ctx, true); errors.Is(cerr, ErrReplaced) {
		return cerr
	}
	return err
}

// stopping reports whether ctx is done or the runtime has been replaced.
func (r *Runtime) stopping(ctx context.Context) bool { return ctx.Err() != nil || r.isFenced() }

// apply hands one record to the Machine, publishes what it emitted, and advances the
// position once every output is stored. A record whose processing fails for good (the
// Machine panics, an output can never be stored) goes to the poison-record policy
// (poisoned). A record dead-lettered before (st.deadLetters) is applied again, since the
// restored state predates it, and its outputs are dropped. When an output cannot be
// stored because the runtime stops, it returns the error and the position stays before
// the record: the Machine then holds a record the position does not cover, so the caller
// must take no further snapshot. A delivery that may follow removed records is first
// checked (checkInput); removed records stop the runtime before the record is applied.
func (r *Runtime) apply(ctx context.Context, st *loopState, d delivery) error {
	rec := d.Record
	if rec.Sequence <= st.position {
		r.log.Warn("input record at or before the position skipped", "seq", rec.Sequence, "position", st.position)
		return nil
	}
	if st.input.suspicious(d) {
		if err := r.checkInput(ctx, st); err != nil {
			return err
		}
	}
	st.input.delivered(d)
	known := st.deadLetters.replayed(r, rec)
	outs, applyErr, fail := r.applyRecord(rec)
	switch {
	case known:
		r.stats.deadLettersReplayed.Add(1)
		r.log.Info("replayed record was dead-lettered before: applied again, its outputs not published, not dead-lettered again",
			"seq", rec.Sequence, "subject", rec.Subject, "outputs_dropped", len(outs))
		st.advance(r, rec.Sequence)
		return nil
	case fail != nil:
		return r.poisoned(ctx, st, rec, fail)
	case applyErr != nil:
		r.stats.rejected.Add(1)
		r.log.Debug("input record rejected", "error", applyErr, "seq", rec.Sequence, "subject", rec.Subject)
	default:
		r.stats.applied.Add(1)
	}
	for i, out := range outs {
		err := r.output(ctx, &st.outputs, outputPos{seq: rec.Sequence, n: i}, out)
		if f, ok := errors.AsType[*recordFailure](err); ok {
			return r.poisoned(ctx, st, rec, f)
		}
		if err != nil {
			return err
		}
	}
	st.advance(r, rec.Sequence)
	return nil
}

// checkInput verifies, retrying with backoff while the stream cannot be read, that no
// input was removed under the consumer up to the position (verifyInput). It returns an
// error wrapping ErrInputRemoved when some was, and ctx's error when ctx ends first.
func (r *Runtime) checkInput(ctx context.Context, st *loopState) error {
	var removed error
	err := retry.Do(ctx, func(ctx context.Context) error {
		err := r.verifyInput(ctx, &st.input, st.position)
		if errors.Is(err, ErrInputRemoved) {
			removed = err
			return nil
		}
		return err
	}, func(err error, wait time.Duration) {
		r.log.Warn("cannot check the input for records removed under the consumer; retrying before the next record", "error", err, "retry_in", wait)
	})
	if removed != nil {
		return removed
	}
	return err
}

// barrier takes a snapshot for a new barrier and queues it for the persister. A barrier
// that is not in line with the job's lease and id counter is ignored (trusted), and one
// that cannot be checked is declined. It returns an error wrapping ErrInputRemoved when
// input was removed under the consumer since the last check: no snapshot is taken then.
func (r *Runtime) barrier(ctx context.Context, st *loopState, msg *nats.Msg) error {
	var b messages.Barrier
	if err := messages.Unmarshal(msg.Data, &b); err != nil {
		r.log.Warn("malformed barrier ignored", "error", err)
		return nil
	}
	if b.Job != r.cfg.Job {
		r.log.Warn("barrier of another job ignored", "barrier_job", b.Job, "checkpoint", b.CheckpointID)
		return nil
	}
	log := r.log.With("checkpoint", b.CheckpointID)
	if b.Token != 0 && b.Token < st.token {
		// A token of 0 comes from a coordinator before fencing tokens: accepted.
		log.Debug("barrier of a fenced coordinator ignored: its token is below one already seen",
			"token", b.Token, "highest_token", st.token, "coordinator", b.Coordinator)
		return nil
	}
	if b.CheckpointID <= st.lastBarrier {
		// The coordinator sends a barrier again when it lacks this instance's ack: answer
		// with the ack already sent, if it is still remembered (and not still being stored).
		if data := r.acks.get(b.CheckpointID); data != nil {
			if err := r.mayPublish(ctx); err != nil {
				log.Debug("ack not sent again", "error", err)
				return nil
			}
			if err := r.nc.Publish(r.ackSubject(), data); err != nil {
				log.Warn("publish ack again", "error", err)
			}
			log.Debug("barrier seen before: ack sent again")
			return nil
		}
		log.Debug("old barrier ignored", "last_barrier", st.lastBarrier)
		return nil
	}
	trusted, err := r.trusted(ctx, st, &b)
	if err != nil {
		r.decline(ctx, log, b.CheckpointID, "cannot check the barrier against the job's lease and id counter: "+err.Error())
		return nil
	}
	if !trusted {
		return nil
	}
	st.token = max(st.token, b.Token)
	st.lastBarrier = b.CheckpointID
	if h := r.halted.Load(); h != nil {
		// The Machine may hold the record processing stopped at, which the position does
		// not cover: no snapshot may be taken.
		r.decline(ctx, log, b.CheckpointID, r.stoppedReason(h))
		return nil
	}
	if len(st.queue) >= maxQueuedSnapshots {
		r.decline(ctx, log, b.CheckpointID, fmt.Sprintf("%d snapshots are already waiting to be stored", len(st.queue)))
		return nil
	}
	if st.position != st.input.anchor {
		// Nothing applied since the last check: nothing can have been skipped since.
		if err := r.verifyInput(ctx, &st.input, st.position); err != nil {
			if errors.Is(err, ErrInputRemoved) {
				return err
			}
			r.decline(ctx, log, b.CheckpointID, "cannot check the input for records removed under the consumer: "+err.Error())
			return nil
		}
	}
	var snap Snapshot
	err = r.guard("Snapshot", func() (err error) {
		snap, err = r.cp.snapshot(b.CheckpointID, b.MaxDeltas)
		return err
	}, "checkpoint", b.CheckpointID)
	if err != nil {
		r.decline(ctx, log, b.CheckpointID, "snapshot: "+err.Error())
		if errors.Is(err, ErrWrappedKeyed) {
			return err
		}
		return nil
	}
	if l := r.listener(); l != nil {
		st.outcomes.snapshotted(l, b.CheckpointID)
	}
	log.Debug("snapshot taken", "position", st.position)
	st.queue = append(st.queue, persistJob{
		checkpoint: b.CheckpointID,
		snap:       snap,
		positions:  map[string]uint64{r.cfg.InputStream: st.position},
		log:        log,
	})
	return nil
}
