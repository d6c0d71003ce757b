package operator

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cairn-stream/cairn/pkg/cairnjs"
	"github.com/cairn-stream/cairn/pkg/messages"
)

// Backoff of the calls the processing goroutine retries until they succeed (publishing an
// output, reading an output subject's last message).
const (
	outputFirstWait = 50 * time.Millisecond
	outputMaxWait   = 2 * time.Second
	// outputTimeout bounds one attempt.
	outputTimeout = 5 * time.Second
)

// outputPublisher publishes outputs to JetStream.
type outputPublisher interface {
	PublishMsg(ctx context.Context, m *nats.Msg, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error)
}

// outputPos is an output's place in its instance's output order: the input sequence of
// the record it came from, then its index among that record's outputs. The runtime stores
// an instance's outputs one at a time, in this order.
type outputPos struct {
	seq uint64
	n   int
}

// atOrBelow reports whether p comes at or before q.
func (p outputPos) atOrBelow(q outputPos) bool {
	return p.seq < q.seq || p.seq == q.seq && p.n <= q.n
}

// outputMark is what an output subject's last message says about this instance's outputs.
type outputMark struct {
	// own reports that the last message is an output of this instance, at pos.
	own bool
	pos outputPos
	// foreign reports that the last message is not this instance's output (the subject
	// is shared, or written by something else): the mark is unknown.
	foreign bool
}

// outputState decides, on the processing goroutine, which outputs of the records replayed
// after a start are already stored. Outputs are stored one at a time in output order, so
// every output up to the newest one stored on a subject was stored: an output at or below
// its subject's mark is stored, and the first one above it proves that no later output is,
// which ends the checks (done).
type outputState struct {
	// done is set once an output was found not stored: every later one is new.
	done bool
	// inputLast is the input stream's last sequence, read at the start and again for a
	// mark above it: a mark still above it comes from an input stream since deleted and
	// created again.
	inputLast uint64
	// marks are the subjects read so far.
	marks map[string]outputMark
	// suppressed and reemitted count the replayed outputs found stored, not published
	// again or published again under new ids.
	suppressed, reemitted uint64
	// elsewhere are the subjects found stored in another stream than OutputStream.
	elsewhere map[string]bool
}

// startOutputs prepares the output checks of a Producer's start. With ReemitOutputs it
// records the outputs_reemitted member event, which must be stored for the start to go
// on.
func (r *Runtime) startOutputs(ctx context.Context, rs restored) (outputState, error) {
	if r.cp.producer() == nil {
		return outputState{done: true}, nil
	}
	st, err := r.streams.Stream(ctx, r.cfg.InputStream)
	if err != nil {
		return outputState{}, fmt.Errorf("read the info of input stream %s for the output checks: %w", r.cfg.InputStream, err)
	}
	outs := outputState{inputLast: st.CachedInfo().State.LastSeq, marks: map[string]outputMark{}, elsewhere: map[string]bool{}}
	if r.cfg.ReemitOutputs {
		from := "a new or reset start"
		if rs.from != "" {
			from = rs.from
		}
		detail := fmt.Sprintf("outputs of the input records replayed after sequence %d (%s) that the output stream %s already holds are published again, under message ids ending .%s",
			rs.position, from, r.cfg.OutputStream, r.incarnation)
		r.log.Warn("re-emitting outputs: replayed outputs already stored are published again on purpose", "position", rs.position, "restored_from", from)
		if err := r.memberEvent(ctx, messages.MemberOutputsReemitted, rs.checkpoint, detail); err != nil {
			return outputState{}, err
		}
	}
	return outs, nil
}

// outputID is the Nats-Msg-Id of the output at pos.
func (r *Runtime) outputID(pos outputPos) string {
	return fmt.Sprintf("%s.%s.%d.%d", r.cfg.Job, r.cfg.Instance, pos.seq, pos.n)
}

// output publishes the output at pos, unless the output stream already holds it: then it
// is suppressed, or with ReemitOutputs published again under an id of this incarnation.
func (r *Runtime) output(ctx context.Context, outs *outputState, pos outputPos, out Output) error {
	stored, err := r.storedBefore(ctx, outs, out.Subject, pos)
	if err != nil {
		return err
	}
	id := r.outputID(pos)
	if stored {
		if !r.cfg.ReemitOutputs {
			outs.suppressed++
			r.stats.suppressed.Add(1)
			return nil
		}
		outs.reemitted++
		id += "." + r.incarnation
	}
	return r.emit(ctx, outs, id, pos, out)
}

// storedBefore reports whether the output at pos on subject is already stored, reading the
// subject's mark the first time it is needed.
func (r *Runtime) storedBefore(ctx context.Context, outs *outputState, subject string, pos outputPos) (bool, error) {
	if outs.done {
		return false, nil
	}
	mk, ok := outs.marks[subject]
	if !ok {
		var err error
		if mk, err = r.readMark(ctx, outs, subject); err != nil {
			return false, err
		}
		outs.marks[subject] = mk
	}
	switch {
	case mk.foreign:
		return false, nil
	case mk.own && pos.atOrBelow(mk.pos):
		return true, nil
	}
	outs.done = true
	if outs.suppressed+outs.reemitted > 0 {
		r.log.Info("replayed outputs already stored end here: publishing resumes",
			"suppressed", outs.suppressed, "reemitted", outs.reemitted, "seq", pos.seq, "index", pos.n)
	}
	return false, nil
}

// readMark reads the last message of subject in the output stream from the stream's
// leader, retrying until it is read (or ctx ends, or the runtime is replaced).
func (r *Runtime) readMark(ctx context.Context, outs *outputState, subject string) (outputMark, error) {
	var last *cairnjs.CurrentMsg
	err := r.untilDone(ctx, "read the last output; retrying", []any{"stream", r.cfg.OutputStream, "subject", subject}, func(ctx context.Context) error {
		m, err := cairnjs.LastMsgCurrent(ctx, r.nc, r.cfg.OutputStream, subject)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return nil
		}
		last = m
		return err
	})
	if err != nil {
		return outputMark{}, fmt.Errorf("read the last output on %s in %s: %w", subject, r.cfg.OutputStream, err)
	}
	if last == nil {
		return outputMark{}, nil
	}
	pos, own := r.ownOutput(last)
	reaches := true
	if own && pos.seq > outs.inputLast {
		if reaches, err = r.inputReaches(ctx, outs, pos.seq); err != nil {
			return outputMark{}, err
		}
	}
	switch {
	case !own:
		r.log.Warn("the last message on an output subject is not this instance's output: replayed outputs on it are deduplicated only within the output stream's duplicate window; give each instance output subjects of its own",
			"subject", subject, "stream", r.cfg.OutputStream, "msg_id", last.Header.Get(jetstream.MsgIDHeader), "stream_seq", last.Sequence)
		return outputMark{foreign: true}, nil
	case !reaches:
		r.log.Warn("the last output on a subject came from an input sequence beyond the input stream's last: the input stream was created again since, and that output does not mark this input",
			"subject", subject, "output_input_seq", pos.seq, "input_stream", r.cfg.InputStream, "input_last_seq", outs.inputLast)
		return outputMark{}, nil
	}
	return outputMark{own: true, pos: pos}, nil
}

// inputReaches reports whether the input stream's last sequence, read again now, reaches seq,
// and keeps what it read in outs.inputLast. A mark is read after the start's read of the
// input stream: an output stored since, by another incarnation still running, can come
// from an input record stored after that read. The input record of an output is stored
// before the output, so the input stream read after the mark holds it unless it was
// created again. It retries until the info is read (or ctx ends, or the runtime is
// replaced).
func (r *Runtime) inputReaches(ctx context.Context, outs *outputState, seq uint64) (bool, error) {
	err := r.untilDone(ctx, "read the input stream's info again; retrying", []any{"stream", r.cfg.InputStream}, func(ctx context.Context) error {
		st, err := r.streams.Stream(ctx, r.cfg.InputStream)
		if err != nil {
			return err
		}
		outs.inputLast = max(outs.inputLast, st.CachedInfo().State.LastSeq)
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("read the info of input stream %s for the output checks: %w", r.cfg.InputStream, err)
	}
	return seq <= outs.inputLast, nil
}

// ownOutput reads the position of an output this instance stored: its message id starts
// with "<job>.<instance>.", and its headers (or, for an output stored before they existed,
// its id "<job>.<instance>.<seq>.<n>") give the position. It reports false for any other
// message.
func (r *Runtime) ownOutput(m *cairnjs.CurrentMsg) (outputPos, bool) {
	rest, ok := strings.CutPrefix(m.Header.Get(jetstream.MsgIDHeader), r.cfg.Job+"."+r.cfg.Instance+".")
	if !ok {
		return outputPos{}, false
	}
	seq, n := m.Header.Get(messages.HeaderInputSequence), m.Header.Get(messages.HeaderOutputIndex)
	if seq == "" && n == "" {
		parts := strings.Split(rest, ".")
		if len(parts) < 2 {
			return outputPos{}, false
		}
		seq, n = parts[0], parts[1]
	}
	s, err := strconv.ParseUint(seq, 10, 64)
	if err != nil {
		return outputPos{}, false
	}
	i, err := strconv.Atoi(n)
	if err != nil || i < 0 {
		return outputPos{}, false
	}
	return outputPos{seq: s, n: i}, true
}

// emit publishes the output at pos with message id id and the position headers, retrying
// with backoff until it is stored. It gives up with an error when ctx ends or the runtime
// is replaced first; the caller then leaves the position before the record and takes no
// further snapshot, so that no ack covers the record and a restore replays it. An output
// that can never be stored is not retried: emit returns a *recordFailure at once when its
// subject cannot be published to or it exceeds the server's max_payload, and after a few
// attempts when JetStream refuses it with an error that is not transient (see refusal).
func (r *Runtime) emit(ctx context.Context, outs *outputState, id string, pos outputPos, out Output) error {
	failed := func(f *recordFailure) error {
		return &recordFailure{reason: f.reason, err: fmt.Errorf("output %d of input sequence %d (subject %q, msg id %s): %w", pos.n, pos.seq, out.Subject, id, f.err)}
	}
	if err := validPublishSubject(out.Subject); err != nil {
		return failed(&recordFailure{reason: messages.PoisonOutputRefused, err: fmt.Errorf("not a subject to publish to: %w", err)})
	}
	m := nats.NewMsg(out.Subject)
	m.Data = out.Data
	m.Header.Set(jetstream.MsgIDHeader, id)
	m.Header.Set(messages.HeaderInputSequence, strconv.FormatUint(pos.seq, 10))
	m.Header.Set(messages.HeaderOutputIndex, strconv.Itoa(pos.n))
	if f := tooLarge(m, r.nc.MaxPayload()); f != nil {
		return failed(f)
	}
	var ack *jetstream.PubAck
	attempts := 0
	err := r.untilDone(ctx, "output not stored; retrying", []any{"msg_id", id, "subject", out.Subject}, func(ctx context.Context) error {
		if err := r.mayPublish(ctx); err != nil {
			return err
		}
		attempts++
		var err error
		ack, err = r.outputs.PublishMsg(ctx, m)
		return refusal(err, attempts)
	})
	var refused *recordFailure
	if errors.As(err, &refused) {
		return failed(refused)
	}
	if err != nil {
		return fmt.Errorf("output %s (msg id %s) not stored: %w", out.Subject, id, err)
	}
	r.stats.emitted.Add(1)
	if ack.Stream != r.cfg.OutputStream && !outs.elsewhere[out.Subject] {
		if outs.elsewhere == nil {
			outs.elsewhere = map[string]bool{}
		}
		outs.elsewhere[out.Subject] = true
		r.log.Warn("an output subject is stored in another stream than the output stream: after a restore its outputs are deduplicated only within that stream's duplicate window; set Config.OutputStream to the stream that stores the outputs",
			"subject", out.Subject, "stream", ack.Stream, "output_stream", r.cfg.OutputStream)
	}
	return nil
}

// validPublishSubject checks that s is a subject a message can be published to: a subject
// (validateSubject) without wildcards.
func validPublishSubject(s string) error {
	if err := cairnjs.ValidateSubject(s, true); err != nil {
		return err
	}
	for t := range strings.SplitSeq(s, ".") {
		if t == "*" || t == ">" {
			return errors.New("a wildcard is not allowed")
		}
	}
	return nil
}

// untilDone calls try, each attempt bounded by outputTimeout, until it succeeds, logging
// each failure at warn level with msg and attrs and waiting outputFirstWait, then twice as
// long up to outputMaxWait. It gives up when ctx ends or the runtime is replaced, and
// returns at once an error of try that is a *recordFailure (it would fail again).
func (r *Runtime) untilDone(ctx context.Context, msg string, attrs []any, try func(context.Context) error) error {
	wait := outputFirstWait
	for {
		if r.isFenced() {
			return r.replacedError()
		}
		actx, cancel := context.WithTimeout(ctx, outputTimeout)
		err := try(actx)
		cancel()
		if err == nil {
			return nil
		}
		if _, ok := errors.AsType[*recordFailure](err); ok {
			return err
		}
		r.log.Warn(msg, append([]any{"error", err}, attrs...)...)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("gave up when the runtime stopped: %w", err)
		case <-r.fencedCh:
			t.Stop()
		case <-t.C:
		}
		wait = min(2*wait, outputMaxWait)
	}
}
