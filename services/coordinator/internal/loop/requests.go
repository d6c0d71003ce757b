package loop

import (
	"context"
	"fmt"

	"github.com/cairn-stream/cairn/pkg/messages"
)

// removeRequest asks the job's loop to remove a member; done is called once, from the
// loop, with the outcome.
type removeRequest struct {
	instance string
	done     func(*messages.MemberRemoval, *Error)
}

// OfferLease hands the loop a new lease state; it never blocks.
func (j *Job) OfferLease(l Lease) { j.mail.offerLease(l) }

// OfferConfig hands the loop a config event; it never blocks. An event not newer than the
// applied or pending one is dropped and counted as stale.
func (j *Job) OfferConfig(ev *messages.ConfigEvent) { j.mail.offerConfig(ev) }

// OfferRegistration hands the loop a registration change or a full set; it never blocks.
func (j *Job) OfferRegistration(r Registration) { j.mail.offerReg(r) }

// OfferAck queues an ack; it reports false when the mailbox is full and the ack dropped.
func (j *Job) OfferAck(a *messages.Ack) bool { return j.mail.offerAck(a) }

// DroppedAcks counts the acks dropped because the mailbox was full.
func (j *Job) DroppedAcks() uint64 { return j.mail.droppedAcks.Load() }

// Status returns the job's status from its loop; false when ctx ends first.
func (j *Job) Status(ctx context.Context) (messages.Status, bool) {
	reply := make(chan messages.Status, 1)
	if !send(ctx, j.status, reply) {
		return messages.Status{}, false
	}
	select {
	case st := <-reply:
		return st, true
	case <-ctx.Done():
		return messages.Status{}, false
	}
}

// RemoveMember asks the loop to remove a member; done is called once, from the loop, when
// the removal is decided. False when ctx ends before the loop took the request (done is
// not called).
func (j *Job) RemoveMember(ctx context.Context, instance string, done func(*messages.MemberRemoval, *Error)) bool {
	return send(ctx, j.removes, removeRequest{instance: instance, done: done})
}

// Trigger asks the loop for a manual checkpoint, kept as a savepoint when savepoint is
// set; done is called once, from the loop, when the checkpoint has ended or the request is
// refused. False when ctx ends before the loop took the request (done is not called).
func (j *Job) Trigger(ctx context.Context, savepoint string, done func(*messages.CheckpointResult, *Error)) bool {
	return send(ctx, j.triggers, triggerRequest{savepoint: savepoint, done: done})
}

// DeleteSavepoint asks the loop to delete a savepoint; done is called once, from the loop.
// False when ctx ends before the loop took the request (done is not called).
func (j *Job) DeleteSavepoint(ctx context.Context, name string, done func(*messages.SavepointDeleted, *Error)) bool {
	return send(ctx, j.deletes, deleteRequest{savepoint: name, done: done})
}

// send delivers v on ch unless ctx ends first.
func send[T any](ctx context.Context, ch chan<- T, v T) bool {
	select {
	case ch <- v:
		return true
	case <-ctx.Done():
		return false
	}
}

// refusal says why the loop cannot serve a request that only the lease holder serves: it
// does not hold the lease, or, unless unread is empty, it cannot read the newest manifest.
// unheld and unread end the message of each case (what the caller can rely on); nil: the
// loop can serve the request.
func (j *Job) refusal(ctx context.Context, unheld, unread string) *Error {
	if !j.lease.Held {
		return &Error{Unavailable, fmt.Sprintf("coordinator %s does not hold the lease of job %s; %s", j.coordID, j.name, unheld)}
	}
	if unread == "" {
		return nil
	}
	if err := j.ensurePrev(ctx); err != nil {
		return &Error{Unavailable, fmt.Sprintf("cannot read the latest manifest of job %s: %v; %s", j.name, err, unread)}
	}
	return nil
}
