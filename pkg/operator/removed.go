package operator

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cairn-stream/cairn/pkg/cairnjs"
)

// ErrInputRemoved is returned (wrapped) by Run when records of the instance's input were
// removed from the input stream while its consumer was reading it (checked on input streams
// whose limits remove no messages, as CAIRN_INPUT's): a consumer skips what
// the stream no longer holds, so going on would apply the records after the gap to a state
// that lacks those before it. The runtime stops before applying any record after the gap.
// Cairn's own trimming never removes input the running incarnation still needs; a newer
// incarnation of the same instance that checkpointed and trimmed past it does (this one was
// paused or cut off and replaced), and so do purges and stream limits.
var ErrInputRemoved = errors.New("input removed under the running consumer")

// delivery is one input record on its way to the processing goroutine, with what the
// consumer said about the stream when it delivered it.
type delivery struct {
	Record
	// consumer is the name of the server-side consumer that delivered it: the ordered
	// consumer creates a new one, after a gap in its deliveries or a reconnect, at the
	// sequence after the last record it delivered.
	consumer string
	// pending is how many messages of the filters the stream held after it.
	pending uint64
	// at is when it reached the runtime.
	at time.Time
}

// anchorState is what the processing goroutine knows of the input it read.
type anchorState struct {
	// off is set when the input stream has limits that remove messages (max_msgs,
	// max_bytes, max_age, max_msgs_per_subject): they remove records already applied too,
	// so a missing anchor would not tell a gap, and nothing is checked.
	off bool
	// anchor is a sequence of the input, at or below the position, whose message the
	// stream held when last checked; 0 while there is none. Cairn's trimming keeps the
	// message at each retained checkpoint's position and removes a member's messages below
	// it, for all its filters alike, so a trim that removed a record after the anchor
	// before it was delivered removed the anchor too, and one check of the anchor covers
	// every record delivered since. The anchor moves up to the position at every check and
	// at every snapshot, so that no trim of the incarnation's own checkpoints reaches it.
	anchor uint64
	// consumer, pending and at are those of the last record delivered.
	consumer string
	pending  uint64
	at       time.Time
	// stall is the gap between two deliveries after which the second is checked: the
	// process may have been paused or cut off in between (the heartbeat interval).
	stall time.Duration
}

// inputAnchor returns the anchor state of a start at position pos: the anchor is pos when
// the input stream still holds that message (read from its leader), otherwise 0 (the first
// record becomes it); nothing is checked on a stream whose limits remove messages.
func (r *Runtime) inputAnchor(ctx context.Context, pos uint64) (anchorState, error) {
	st, err := r.streams.Stream(ctx, r.cfg.InputStream)
	if err != nil {
		return anchorState{}, fmt.Errorf("read the info of input stream %s: %w", r.cfg.InputStream, err)
	}
	if limitsRemove(st.CachedInfo().Config) {
		return anchorState{off: true}, nil
	}
	if pos == 0 {
		return anchorState{}, nil
	}
	_, err = cairnjs.MsgCurrent(ctx, r.nc, r.cfg.InputStream, pos)
	switch {
	case errors.Is(err, jetstream.ErrMsgNotFound):
		return anchorState{}, nil
	case err != nil:
		return anchorState{}, fmt.Errorf("check message %d of input stream %s: %w", pos, r.cfg.InputStream, err)
	}
	return anchorState{anchor: pos}, nil
}

// limitsRemove reports whether a stream's limits remove stored messages (rather than
// refuse new ones).
func limitsRemove(cfg jetstream.StreamConfig) bool {
	discardOld := cfg.Discard != jetstream.DiscardNew
	return cfg.MaxAge > 0 ||
		discardOld && (cfg.MaxMsgs > 0 || cfg.MaxBytes > 0) ||
		cfg.MaxMsgsPerSubject > 0 && (discardOld || !cfg.DiscardNewPerSubject)
}

// suspicious reports whether d's delivery may have skipped removed records: the consumer
// was recreated (after a reconnect or missed heartbeats it starts at the first message the
// stream still holds after the last delivered one), fewer messages are pending after d
// than after the last record, less d itself (messages ahead were removed), or d came more
// than a stall after the last record (the process may have been paused or cut off).
func (a *anchorState) suspicious(d delivery) bool {
	if a.off || a.consumer == "" {
		return false
	}
	return d.consumer != a.consumer || d.pending+1 < a.pending || d.at.Sub(a.at) > a.stall
}

// delivered notes d's consumer, pending count and time, and makes d the anchor when there
// is none yet.
func (a *anchorState) delivered(d delivery) {
	a.consumer, a.pending, a.at = d.consumer, d.pending, d.at
	if a.anchor == 0 && !a.off {
		a.anchor = d.Sequence
	}
}

// verifyInput checks that the input stream still holds the anchor's message (from its
// leader) and moves the anchor to position: every record delivered up to now was
// delivered with nothing before it removed. It returns an error wrapping ErrInputRemoved
// when the message is gone, and another error when the stream cannot be read. Without an
// anchor (nothing delivered yet, and the restored position's message gone) there is
// nothing to check, and the anchor stays unset until the first record.
func (r *Runtime) verifyInput(ctx context.Context, a *anchorState, position uint64) error {
	if a.off || a.anchor == 0 {
		return nil
	}
	_, err := cairnjs.MsgCurrent(ctx, r.nc, r.cfg.InputStream, a.anchor)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return fmt.Errorf("%w: job %s, instance %s: input stream %s no longer holds sequence %d, a record this incarnation applied, so records after it may have been removed before they were delivered (a newer incarnation of the instance checkpointed past it, or the input was purged or hit a stream limit); the position is %d",
			ErrInputRemoved, r.cfg.Job, r.cfg.Instance, r.cfg.InputStream, a.anchor, position)
	}
	if err != nil {
		return fmt.Errorf("check message %d of input stream %s: %w", a.anchor, r.cfg.InputStream, err)
	}
	a.anchor = position
	return nil
}
