package operator

import (
	"context"
	"errors"
	"fmt"
	"net/textproto"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cairn-stream/cairn/pkg/cairnjs"
	"github.com/cairn-stream/cairn/pkg/messages"
)

const (
	// maxHeaderBytes is the most header bytes JetStream stores with a message
	// (JSStreamHeaderExceedsMaximumErr).
	maxHeaderBytes = 64 << 10
	// deadLetterReadTimeout bounds the read of an instance's dead letters at a start.
	deadLetterReadTimeout = 30 * time.Second
)

// deadLetter stores rec's dead letter on the instance's subject of CAIRN_DEADLETTER,
// retrying, as an output, until it is stored: through a NATS outage or a stream that does
// not exist yet. It returns a *recordFailure when the dead letter itself can never be
// stored, and another error when ctx ends or the runtime is replaced first.
func (r *Runtime) deadLetter(ctx context.Context, rec Record, fail *recordFailure) error {
	m, truncated := r.deadLetterMsg(rec, fail, r.nc.MaxPayload())
	if truncated != "" {
		r.log.Warn("dead letter truncated to fit the server's max_payload", "seq", rec.Sequence, "truncated", truncated)
	}
	attempts := 0
	err := r.untilDone(ctx, "dead letter not stored; retrying", []any{"seq", rec.Sequence, "subject", m.Subject}, func(ctx context.Context) error {
		if err := r.mayPublish(ctx); err != nil {
			return err
		}
		attempts++
		_, err := r.outputs.PublishMsg(ctx, m)
		return refusal(err, attempts)
	})
	if err != nil {
		return fmt.Errorf("dead letter of input sequence %d on %s not stored: %w", rec.Sequence, m.Subject, err)
	}
	return nil
}

// deadLetterMsg builds rec's dead letter: rec's payload, with headers naming its
// position, stream, subject, the reason and error, this incarnation and the payload's
// size, and a deterministic Nats-Msg-Id, so that a publish retried after a lost reply is
// stored once. rec's own headers are kept, but for the JetStream controls ("Nats-...")
// and those the dead letter sets. When it would not fit maxPayload (or JetStream's limit
// on headers), or a header's name is one nats.go does not publish, rec's headers are
// dropped, and then the end of its payload when it still does not fit, and
// HeaderDeadLetterTruncated says so; truncated returns the same text.
func (r *Runtime) deadLetterMsg(rec Record, fail *recordFailure, maxPayload int64) (m *nats.Msg, truncated string) {
	m = nats.NewMsg(r.cfg.subjects().DeadLetter(r.cfg.Job, r.cfg.Instance))
	own := nats.Header{}
	own.Set(jetstream.MsgIDHeader, fmt.Sprintf("%s.%s.%d", r.cfg.Job, r.cfg.Instance, rec.Sequence))
	own.Set(messages.HeaderDeadLetterSequence, strconv.FormatUint(rec.Sequence, 10))
	own.Set(messages.HeaderDeadLetterStream, r.cfg.InputStream)
	own.Set(messages.HeaderDeadLetterSubject, rec.Subject)
	own.Set(messages.HeaderDeadLetterReason, string(fail.reason))
	own.Set(messages.HeaderDeadLetterError, oneLine(fail.err.Error(), messages.MaxDeadLetterError))
	own.Set(messages.HeaderDeadLetterIncarnation, r.incarnation)
	own.Set(messages.HeaderDeadLetterSize, strconv.Itoa(len(rec.Data)))
	sendable := true
	for k, vs := range rec.Header {
		sendable = sendable && headerKeyValid(k)
		if !ownHeader(k) {
			m.Header[k] = append([]string(nil), vs...)
		}
	}
	for k, vs := range own {
		m.Header[k] = vs
	}
	m.Data = rec.Data
	fits := func() bool {
		return headerSize(m.Header) <= maxHeaderBytes && (maxPayload <= 0 || msgSize(m) <= maxPayload)
	}
	if sendable && fits() {
		return m, ""
	}
	var cut []string
	if len(m.Header) > len(own) {
		m.Header = own
		cut = append(cut, "headers dropped")
		m.Header.Set(messages.HeaderDeadLetterTruncated, cut[0])
	}
	if !fits() {
		// The note with as many digits kept as the payload has bounds the note's length.
		bound := fmt.Sprintf("payload: %d of %d bytes kept", len(rec.Data), len(rec.Data))
		m.Header.Set(messages.HeaderDeadLetterTruncated, strings.Join(append(cut, bound), "; "))
		keep := max(0, maxPayload-int64(headerSize(m.Header)))
		m.Data = rec.Data[:min(int64(len(rec.Data)), keep)]
		cut = append(cut, fmt.Sprintf("payload: %d of %d bytes kept", len(m.Data), len(rec.Data)))
		m.Header.Set(messages.HeaderDeadLetterTruncated, strings.Join(cut, "; "))
	}
	return m, strings.Join(cut, "; ")
}

// ownHeader reports whether a record's header is left out of its dead letter: a
// JetStream control, or one the dead letter sets itself.
func ownHeader(k string) bool {
	l := strings.ToLower(k)
	return strings.HasPrefix(l, "nats-") || strings.HasPrefix(l, "cairn-deadletter-")
}

// headerKeyValid reports whether nats.go publishes a header named k: printable ASCII but
// for "()/,:;<=>?@[\]{} and the double quote. A stored record may carry others.
func headerKeyValid(k string) bool {
	if k == "" {
		return false
	}
	for _, c := range []byte(k) {
		if c < 33 || c > 126 || strings.IndexByte(`"()/,:;<=>?@[\]{}`, c) >= 0 {
			return false
		}
	}
	return true
}

// oneLine returns s on one line (line breaks as spaces), cut to at most n bytes.
func oneLine(s string, n int) string {
	s = strings.Join(strings.Fields(strings.NewReplacer("\r", " ", "\n", " ").Replace(s)), " ")
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n-3], "") + "..."
}

// headerSize is the size of h on the wire, as nats.go encodes it: the version line, a
// line per value, the blank line; 0 for no header.
func headerSize(h nats.Header) int {
	if len(h) == 0 {
		return 0
	}
	n := len("NATS/1.0\r\n") + len("\r\n")
	for k, vs := range h {
		for _, v := range vs {
			n += len(k) + len(": ") + len(textproto.TrimString(v)) + len("\r\n")
		}
	}
	return n
}

// msgSize is what the server's max_payload limits of m: its payload and its headers.
func msgSize(m *nats.Msg) int64 { return int64(len(m.Data) + headerSize(m.Header)) }

// tooLarge returns a recordFailure when m cannot be published to a server whose
// max_payload is maxPayload, or when JetStream would not store its headers.
func tooLarge(m *nats.Msg, maxPayload int64) *recordFailure {
	h := headerSize(m.Header)
	switch {
	case h > maxHeaderBytes:
		return &recordFailure{reason: messages.PoisonOutputTooLarge,
			err: fmt.Errorf("%d bytes of headers exceed JetStream's limit of %d", h, maxHeaderBytes)}
	case maxPayload > 0 && msgSize(m) > maxPayload:
		return &recordFailure{reason: messages.PoisonOutputTooLarge,
			err: fmt.Errorf("%d bytes of payload and %d of headers exceed the server's max_payload of %d bytes", len(m.Data), h, maxPayload)}
	}
	return nil
}

// JetStream error codes refusing a message for its size.
const (
	// errCodeMsgTooLarge is JSStreamMessageExceedsMaximumErr: the stream's max_msg_size.
	errCodeMsgTooLarge jetstream.ErrorCode = 10054
	// errCodeHeadersTooLarge is JSStreamHeaderExceedsMaximumErr.
	errCodeHeadersTooLarge jetstream.ErrorCode = 10097
)

// maxRefusals is how many times in a row JetStream may refuse a message with an error
// that is neither transient nor about the message before it counts as refused for good.
const maxRefusals = 3

// refusal classifies the error of the attempt-th publish of an output or dead letter: a
// *recordFailure when the message can never be stored (too large for the server or the
// stream, a subject that cannot be published to, or a JetStream error of the client kind
// (400) maxRefusals times), err itself otherwise. Connection errors, timeouts, missing
// streams, leaderless streams and full stores pass: they are retried until the message
// is stored.
func refusal(err error, attempt int) error {
	if err == nil {
		return nil
	}
	var api *jetstream.APIError
	isAPI := errors.As(err, &api)
	switch {
	case errors.Is(err, nats.ErrMaxPayload), isAPI && (api.ErrorCode == errCodeMsgTooLarge || api.ErrorCode == errCodeHeadersTooLarge):
		return &recordFailure{reason: messages.PoisonOutputTooLarge, err: err}
	case errors.Is(err, nats.ErrBadSubject):
		return &recordFailure{reason: messages.PoisonOutputRefused, err: err}
	case isAPI && api.Code == 400 && attempt >= maxRefusals:
		return &recordFailure{reason: messages.PoisonOutputRefused, err: fmt.Errorf("refused %d times in a row: %w", attempt, err)}
	}
	return err
}

// deadLetters are the dead letters CAIRN_DEADLETTER holds for records after the restored
// position: the records a replay meets that were dead-lettered before. A record is taken
// for its dead letter when the subject and payload size match too.
type deadLetters map[uint64]deadLetterOf

// deadLetterOf is what a dead letter says of its record.
type deadLetterOf struct {
	subject string
	size    int
}

// replayed reports whether rec was dead-lettered before, and forgets it: a replay meets it
// once. A dead letter at rec's sequence that names another record (the input stream was
// created again since) is logged and ignored.
func (d deadLetters) replayed(r *Runtime, rec Record) bool {
	dl, ok := d[rec.Sequence]
	if !ok {
		return false
	}
	delete(d, rec.Sequence)
	if dl.subject != rec.Subject || dl.size != len(rec.Data) {
		r.log.Warn("a dead letter names this input sequence but another record (the input stream was created again since?): the record is processed",
			"seq", rec.Sequence, "subject", rec.Subject, "size", len(rec.Data), "dead_letter_subject", dl.subject, "dead_letter_size", dl.size)
		return false
	}
	return true
}

// knownDeadLetters reads this instance's dead letters (their headers only) of records of
// the input stream after position. A missing CAIRN_DEADLETTER holds none:
// it is logged, and a record that cannot be processed then waits for the stream.
func (r *Runtime) knownDeadLetters(ctx context.Context, position uint64) (deadLetters, error) {
	subject := r.cfg.subjects().DeadLetter(r.cfg.Job, r.cfg.Instance)
	ctx, cancel := context.WithTimeout(ctx, deadLetterReadTimeout)
	defer cancel()
	st, err := r.streams.Stream(ctx, cairnjs.DeadLetterStream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		r.log.Warn("dead-letter stream missing: a record that cannot be processed waits until it exists (it is created by configsvc and the coordinator)",
			"stream", cairnjs.DeadLetterStream)
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read the dead letters of instance %s: look up stream %s: %w", r.cfg.Instance, cairnjs.DeadLetterStream, err)
	}
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(subject))
	if err != nil {
		return nil, fmt.Errorf("read the dead letters of instance %s on %s: %w", r.cfg.Instance, subject, err)
	}
	total := info.State.Subjects[subject]
	if total == 0 {
		return nil, nil
	}
	cons, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{FilterSubjects: []string{subject}, HeadersOnly: true})
	if err != nil {
		return nil, fmt.Errorf("read the dead letters of instance %s on %s: %w", r.cfg.Instance, subject, err)
	}
	it, err := cons.Messages()
	if err != nil {
		return nil, fmt.Errorf("read the dead letters of instance %s on %s: %w", r.cfg.Instance, subject, err)
	}
	defer it.Stop()
	known := deadLetters{}
	for range total {
		m, err := it.Next(jetstream.NextContext(ctx))
		if err != nil {
			return nil, fmt.Errorf("read the dead letters of instance %s on %s: %w", r.cfg.Instance, subject, err)
		}
		h := m.Headers()
		seq, serr := strconv.ParseUint(h.Get(messages.HeaderDeadLetterSequence), 10, 64)
		size, zerr := strconv.Atoi(h.Get(messages.HeaderDeadLetterSize))
		if serr == nil && zerr == nil && h.Get(messages.HeaderDeadLetterStream) == r.cfg.InputStream && seq > position {
			known[seq] = deadLetterOf{subject: h.Get(messages.HeaderDeadLetterSubject), size: size}
		}
		md, err := m.Metadata()
		if err != nil || md.NumPending == 0 {
			break
		}
	}
	if len(known) > 0 {
		r.log.Info("records after the restored position were dead-lettered before: the replay applies them again without publishing their outputs or dead-lettering them again",
			"dead_letters", len(known), "position", position)
	}
	return known, nil
}
