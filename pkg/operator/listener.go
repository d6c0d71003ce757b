package operator

import (
	"context"
	"fmt"
	"slices"

	"github.com/nats-io/nats.go"

	"github.com/cairn-stream/cairn/pkg/messages"
)

// CheckpointListener is implemented by a Machine that acts on the outcome of the
// checkpoints it took part in, as Flink's CheckpointListener: a transactional sink makes
// the writes a snapshot covers visible only once its checkpoint completed.
//
// The runtime calls it on the processing goroutine, between two records, for every
// checkpoint this instance took a snapshot for, once each and in increasing id order:
//   - CheckpointCompleted when the coordinator published the checkpoint as completed; its
//     manifest is stored, and a restart restores that snapshot or a newer one.
//   - CheckpointAborted when it was aborted, with the coordinator's reason. A checkpoint
//     whose outcome is still unknown when a later one completes is reported aborted with
//     the reason "subsumed by checkpoint N": the later checkpoint's snapshot covers its
//     state, as in Flink, where a completion may stand for the earlier checkpoints.
//
// After a restore, before any record, CheckpointCompleted is called with the id of the
// restored checkpoint: the restored state is that of a completed checkpoint, and the
// incarnation that took it may have stopped before it acted on the completion. Acting on
// a completion must therefore be idempotent (publish with deterministic message ids, put
// by key). Outcomes arrive as core NATS messages on the job's
// cairn.checkpoints.<job>.completed and .aborted subjects; one lost in a disconnection is
// reported through the next completion. Snapshots still pending when Run stops get no
// call. A panic in either method is recovered, logged with its stack and counted
// (Stats.Panics): under PoisonDeadLetter the runtime goes on and that outcome is not
// reported again, under PoisonStop processing stops (see PoisonStop).
type CheckpointListener interface {
	// CheckpointCompleted reports that checkpoint id completed.
	CheckpointCompleted(id uint64)
	// CheckpointAborted reports that checkpoint id will never complete.
	CheckpointAborted(id uint64, reason string)
}

// CheckpointSnapshotter is implemented by a Machine that needs the checkpoint id when it
// takes a snapshot (a sink that tags the writes the snapshot covers with it). The runtime
// then calls SnapshotFor instead of Machine.Snapshot, with the same contract.
type CheckpointSnapshotter interface {
	// SnapshotFor captures the state for checkpoint id.
	SnapshotFor(id uint64) (Snapshot, error)
}

// maxPendingOutcomes bounds how many snapshots wait for their outcome; beyond it the
// oldest is reported aborted, as its outcome was lost.
const maxPendingOutcomes = 1024

// outcomes tracks, on the processing goroutine, the checkpoints a CheckpointListener took
// snapshots for and has not been told about.
type outcomes struct {
	// pending are the checkpoint ids snapshotted and not yet reported, ascending.
	pending []uint64
	// aborted holds the reasons of pending checkpoints aborted while an older one is
	// still pending.
	aborted map[uint64]string
}

// snapshotted records that a snapshot for checkpoint id was taken.
func (o *outcomes) snapshotted(l CheckpointListener, id uint64) {
	o.pending = append(o.pending, id)
	if len(o.pending) > maxPendingOutcomes {
		o.report(l, 1, "no outcome received")
	}
}

// event handles one checkpoint event and reports, in id order, every outcome now known.
func (o *outcomes) event(l CheckpointListener, ev *messages.CheckpointEvent) {
	i := slices.Index(o.pending, ev.CheckpointID)
	if i < 0 {
		return
	}
	switch ev.Outcome {
	case messages.Completed:
		o.report(l, i, fmt.Sprintf("subsumed by checkpoint %d", ev.CheckpointID))
		o.pending = o.pending[1:]
		delete(o.aborted, ev.CheckpointID)
		l.CheckpointCompleted(ev.CheckpointID)
	case messages.Aborted:
		if o.aborted == nil {
			o.aborted = make(map[uint64]string)
		}
		reason := ev.Reason.String()
		if ev.Detail != "" {
			reason += ": " + ev.Detail
		}
		o.aborted[ev.CheckpointID] = reason
	default:
		return
	}
	for len(o.pending) > 0 {
		reason, ok := o.aborted[o.pending[0]]
		if !ok {
			return
		}
		o.report(l, 1, reason)
	}
}

// report reports the first n pending checkpoints aborted, each with the reason it was
// aborted with or else with reason.
func (o *outcomes) report(l CheckpointListener, n int, reason string) {
	for _, id := range o.pending[:n] {
		r, ok := o.aborted[id]
		if !ok {
			r = reason
		}
		delete(o.aborted, id)
		l.CheckpointAborted(id, r)
	}
	o.pending = o.pending[n:]
}

// subscribeOutcomes subscribes to the job's completed and aborted checkpoint events.
func (r *Runtime) subscribeOutcomes(ctx context.Context, ch chan *nats.Msg) ([]*nats.Subscription, error) {
	var subs []*nats.Subscription
	for _, outcome := range []string{"completed", "aborted"} {
		sub, err := r.nc.ChanSubscribe(r.cfg.subjects().CheckpointEvent(r.cfg.Job, outcome), ch)
		if err != nil {
			for _, s := range subs {
				r.unsubscribe(s)
			}
			return nil, fmt.Errorf("subscribe to %s checkpoint events: %w", outcome, err)
		}
		subs = append(subs, sub)
	}
	if err := r.flush(ctx); err != nil {
		for _, s := range subs {
			r.unsubscribe(s)
		}
		return nil, fmt.Errorf("subscribe to checkpoint events: %w", err)
	}
	return subs, nil
}

// outcome hands one checkpoint event to the Machine's CheckpointListener.
func (r *Runtime) outcome(st *loopState, msg *nats.Msg) {
	l := r.listener()
	if l == nil {
		return
	}
	var ev messages.CheckpointEvent
	if err := messages.Unmarshal(msg.Data, &ev); err != nil {
		r.log.Warn("malformed checkpoint event ignored", "error", err, "subject", msg.Subject)
		return
	}
	if ev.Job != r.cfg.Job {
		return
	}
	st.outcomes.event(l, &ev)
}

// restoredOutcome tells a CheckpointListener that the restored checkpoint completed.
func (r *Runtime) restoredOutcome(rs restored) {
	if l := r.listener(); l != nil && rs.checkpoint > 0 {
		l.CheckpointCompleted(rs.checkpoint)
	}
}
