package operator

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"time"

	"github.com/cairn-stream/cairn/pkg/messages"
)

// Errors of the poison-record policy.
var (
	// ErrPanic is wrapped by the errors the runtime makes of a panic it recovered in the
	// Machine's code (Apply, TakeOutputs, Snapshot, SnapshotFor, Persist, Release, Restore,
	// a CheckpointListener's methods). Run returns an error wrapping it when Restore
	// panicked: the state may be half replaced, so the start is refused.
	ErrPanic = errors.New("the Machine panicked")
	// ErrProcessingStopped is wrapped by Runtime.Health once the runtime stopped processing:
	// under PoisonStop, or because a record's dead letter could not be stored for good.
	ErrProcessingStopped = errors.New("processing stopped by the poison-record policy")
)

// panicError is a panic of the Machine's code that the runtime recovered.
type panicError struct {
	in    string
	value any
}

func (e *panicError) Error() string { return fmt.Sprintf("panic in %s: %v", e.in, e.value) }

// Is makes a panicError match ErrPanic.
func (e *panicError) Is(target error) bool { return target == ErrPanic }

// guard calls fn, the Machine's method in, and returns a *panicError when it panics: the
// panic is counted in Stats.Panics and logged at error level with its stack and attrs.
func (r *Runtime) guard(in string, fn func() error, attrs ...any) (err error) {
	defer func() {
		v := recover()
		if v == nil {
			return
		}
		r.stats.panics.Add(1)
		err = &panicError{in: in, value: v}
		r.log.Error("recovered a panic of the Machine", append([]any{"in", in, "panic", fmt.Sprint(v), "stack", string(debug.Stack())}, attrs...)...)
	}()
	return fn()
}

// recordFailure is a failure that is permanent for one record: it panics the Machine, or
// one of its outputs can never be stored. The poison-record policy handles it.
type recordFailure struct {
	reason messages.PoisonReason
	err    error
}

func (f *recordFailure) Error() string { return string(f.reason) + ": " + f.err.Error() }

func (f *recordFailure) Unwrap() error { return f.err }

// applyRecord hands rec to the Machine and takes its outputs. A panic in Apply or
// TakeOutputs is a recordFailure; the outputs a panicking Apply left are then taken and
// dropped, so that they do not join the next record's. applyErr is Apply's own error
// (a rejected record).
func (r *Runtime) applyRecord(rec Record) (outs []Output, applyErr error, fail *recordFailure) {
	at := []any{"seq", rec.Sequence, "subject", rec.Subject}
	err := r.guard("Apply", func() error { applyErr = r.m.Apply(rec); return nil }, at...)
	p := r.cp.producer()
	if err == nil && p != nil {
		err = r.guard("TakeOutputs", func() error { outs = p.TakeOutputs(); return nil }, at...)
	}
	if err == nil {
		return outs, applyErr, nil
	}
	if p != nil {
		_ = r.guard("TakeOutputs", func() error { p.TakeOutputs(); return nil }, at...)
	}
	return nil, nil, &recordFailure{reason: messages.PoisonPanic, err: err}
}

// poisoned applies the poison-record policy to rec, whose processing failed for good.
// With PoisonDeadLetter it stores rec's dead letter and moves the position past rec; with
// PoisonStop, or when the dead letter itself is refused for good, it stops processing at
// rec. It returns an error only when the dead letter was not stored because the runtime
// stopped or was replaced first: the position then stays before rec, as for an output.
func (r *Runtime) poisoned(ctx context.Context, st *loopState, rec Record, fail *recordFailure) error {
	if r.cfg.OnPoison == PoisonStop {
		r.halt(rec.Sequence, rec.Subject, fail)
		return nil
	}
	err := r.deadLetter(ctx, rec, fail)
	var refused *recordFailure
	switch {
	case errors.As(err, &refused):
		r.halt(rec.Sequence, rec.Subject, &recordFailure{reason: messages.PoisonDeadLetterRefused,
			err: fmt.Errorf("%w; its dead letter was refused: %w", fail, refused)})
		return nil
	case err != nil:
		return err
	}
	r.stats.deadLettered.Add(1)
	r.log.Warn("record dead-lettered and skipped: applying the records after it", "seq", rec.Sequence, "subject", rec.Subject,
		"reason", string(fail.reason), "error", fail.err.Error(), "dead_letter_subject", r.cfg.subjects().DeadLetter(r.cfg.Job, r.cfg.Instance))
	st.advance(r, rec.Sequence)
	return nil
}

// halt stops processing at the record at seq (0: none to blame) for fail: the runtime
// applies nothing more, declines every barrier, no longer calls the CheckpointListener,
// and reports it in Info and Health. The processing goroutine stops the input consumer.
func (r *Runtime) halt(seq uint64, subject string, fail *recordFailure) {
	h := &messages.OperatorStopped{
		Reason:   fail.reason,
		Sequence: seq,
		Subject:  subject,
		Position: r.Position(),
		Error:    fail.err.Error(),
		At:       time.Now().UTC(),
	}
	if seq != 0 {
		h.Stream = r.cfg.InputStream
	}
	if !r.halted.CompareAndSwap(nil, h) {
		return
	}
	r.log.Error("processing stopped: the instance stays up, applies nothing more and declines every barrier until it is restarted",
		"seq", seq, "subject", subject, "reason", string(fail.reason), "error", fail.err.Error(), "position", h.Position)
}

// stoppedReason says why a stopped runtime declines barriers, and what to do.
func (r *Runtime) stoppedReason(h *messages.OperatorStopped) string {
	at := "after a CheckpointListener panicked"
	if h.Sequence != 0 {
		at = fmt.Sprintf("at input sequence %d (subject %s of %s)", h.Sequence, h.Subject, h.Stream)
	}
	todo := fmt.Sprintf("restart the instance once the Machine is fixed, or with the policy %s to skip the record", PoisonDeadLetter)
	if r.cfg.OnPoison != PoisonStop {
		todo = "restart the instance once its dead letter can be stored"
	}
	return fmt.Sprintf("processing stopped %s (poison policy %s): %s: %s; %s", at, r.cfg.OnPoison, h.Reason, h.Error, todo)
}

// Health returns nil while the runtime processes its input, and an error wrapping
// ErrProcessingStopped, naming the record, once it stopped processing: under PoisonStop,
// or at a record whose dead letter JetStream refused for good.
func (r *Runtime) Health() error {
	if h := r.halted.Load(); h != nil {
		return fmt.Errorf("%w: %s", ErrProcessingStopped, r.stoppedReason(h))
	}
	return nil
}

// guardedListener hands checkpoint outcomes to a CheckpointListener on the processing
// goroutine, recovering its panics: a panic is logged with its stack and counted, and
// under PoisonStop it stops processing. Once processing stopped it hands on nothing.
type guardedListener struct {
	r *Runtime
	l CheckpointListener
}

// listener returns the Machine's CheckpointListener behind a guard, nil for none.
func (r *Runtime) listener() CheckpointListener {
	l := r.cp.listener()
	if l == nil {
		return nil
	}
	return guardedListener{r: r, l: l}
}

func (g guardedListener) CheckpointCompleted(id uint64) {
	g.call(fmt.Sprintf("CheckpointCompleted(%d)", id), func() { g.l.CheckpointCompleted(id) })
}

func (g guardedListener) CheckpointAborted(id uint64, reason string) {
	g.call(fmt.Sprintf("CheckpointAborted(%d)", id), func() { g.l.CheckpointAborted(id, reason) })
}

func (g guardedListener) call(what string, fn func()) {
	if g.r.halted.Load() != nil {
		return
	}
	err := g.r.guard(what, func() error { fn(); return nil })
	if err != nil && g.r.cfg.OnPoison == PoisonStop {
		g.r.halt(0, "", &recordFailure{reason: messages.PoisonListenerPanic, err: err})
	}
}
