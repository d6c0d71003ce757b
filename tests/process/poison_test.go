package process

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cairn-stream/cairn/internal/health"
	"github.com/cairn-stream/cairn/internal/natstest"
	"github.com/cairn-stream/cairn/internal/proctest"
	"github.com/cairn-stream/cairn/pkg/cairnjs"
	"github.com/cairn-stream/cairn/pkg/messages"
)

// publishRaw stores data on inst's input subject, without a message id (the audit's
// record leaves no room for one), and returns its sequence; it is not an event of
// s.published.
func (s *stack) publishRaw(ctx context.Context, inst string, data []byte) uint64 {
	s.t.Helper()
	ack, err := s.js.Publish(ctx, subjects.Input(s.job, inst), data)
	if err != nil {
		s.t.Fatalf("publish %d bytes to %s: %v", len(data), inst, err)
	}
	return ack.Sequence
}

// waitInfo polls inst's info until ok reports true and returns it.
func (s *stack) waitInfo(ctx context.Context, inst, what string, ok func(messages.OperatorInfo) bool) messages.OperatorInfo {
	s.t.Helper()
	var info messages.OperatorInfo
	if err := proctest.Poll(ctx, 20*time.Millisecond, what, func() (bool, error) {
		info = messages.OperatorInfo{}
		err := s.request(ctx, subjects.OperatorInfo(s.job, inst), nil, &info)
		return err == nil && ok(info), err
	}); err != nil {
		s.t.Fatalf("%v (info %+v)", err, info)
	}
	return info
}

// waitPosition waits, through its info (a state too large to send cannot be asked for),
// until inst's position reaches seq.
func (s *stack) waitPosition(ctx context.Context, inst string, seq uint64) messages.OperatorInfo {
	s.t.Helper()
	return s.waitInfo(ctx, inst, fmt.Sprintf("%s at position %d", inst, seq), func(i messages.OperatorInfo) bool { return i.Position >= seq })
}

// deadLetters returns inst's dead letters.
func (s *stack) deadLetters(ctx context.Context, inst string) []jetstream.Msg {
	s.t.Helper()
	msgs, err := natstest.ReadSubject(ctx, s.res.DeadLetter, subjects.DeadLetter(s.job, inst))
	if err != nil {
		s.t.Fatal(err)
	}
	return msgs
}

// assertDeadLetter fails the test unless inst has exactly one dead letter, of the record
// at seq, for reason, with an error containing errPart.
func (s *stack) assertDeadLetter(ctx context.Context, inst string, seq uint64, reason messages.PoisonReason, errPart string) jetstream.Msg {
	s.t.Helper()
	dls := s.deadLetters(ctx, inst)
	if len(dls) != 1 {
		s.t.Fatalf("%s has %d dead letters, want 1", inst, len(dls))
	}
	h := dls[0].Headers()
	if h.Get(messages.HeaderDeadLetterSequence) != strconv.FormatUint(seq, 10) || h.Get(messages.HeaderDeadLetterReason) != string(reason) ||
		h.Get(messages.HeaderDeadLetterSubject) != subjects.Input(s.job, inst) || h.Get(messages.HeaderDeadLetterStream) != cairnjs.InputStream ||
		!strings.Contains(h.Get(messages.HeaderDeadLetterError), errPart) {
		s.t.Fatalf("dead letter headers %v: want input sequence %d, reason %s, an error with %q", h, seq, reason, errPart)
	}
	return dls[0]
}

// scheduled sets the job's interval back to the stack's and waits for n completions.
func (s *stack) scheduled(ctx context.Context, n int) {
	s.t.Helper()
	seen := s.completions()
	var v messages.ConfigView
	if err := s.request(ctx, subjects.ConfigSet(s.job), fmt.Appendf(nil, `{"interval":%q}`, interval), &v); err != nil {
		s.t.Fatal(err)
	}
	if err := s.waitCompletions(ctx, seen, n); err != nil {
		s.t.Fatal(err)
	}
}

// TestOutputTooLargeIsDeadLetteredAndSkipped is acceptance 1 of issue 15: the audit's
// 1 048 570-byte record, whose output exceeds max_payload, is dead-lettered with its
// position and error, and the records after it are applied. SIGKILLed and restored from
// a checkpoint before it, on input trimmed to that checkpoint, the instance replays it
// without applying it twice (the outputs of the keys after it continue exactly), storing
// its output or dead-lettering it again; then checkpoints complete, the coordinator trims
// the input past it, and a second SIGKILL and restart go on from there.
func TestOutputTooLargeIsDeadLetteredAndSkipped(t *testing.T) {
	const inst = "counter-0"
	s := newStack(t, stackOptions{instances: []string{inst}, output: true, outputWindow: outputWindow})
	ctx := ctxFor(t, 240*time.Second)
	s.manualCheckpoints(ctx)
	last, m := s.checkpointed(ctx, inst, 20)
	pos := m.Instances[inst].Positions[cairnjs.InputStream]
	var err error

	const size = 1048570
	record := fmt.Appendf(nil, `{"key":%q,"value":1}`, strings.Repeat("k", size-len(`{"key":"","value":1}`)))
	poison := s.publishRaw(ctx, inst, record)
	if last, err = s.publish(ctx, inst, 20); err != nil {
		t.Fatal(err)
	}
	info := s.waitPosition(ctx, inst, last)
	dl := s.assertDeadLetter(ctx, inst, poison, messages.PoisonOutputTooLarge, "exceed the server's max_payload")
	if h := dl.Headers(); h.Get(messages.HeaderDeadLetterSize) != strconv.Itoa(size) || !strings.HasPrefix(h.Get(messages.HeaderDeadLetterTruncated), "payload: ") ||
		!strings.HasPrefix(string(record), string(dl.Data())) {
		t.Fatalf("dead letter of %d bytes with headers %v: want the record's start, its size %d and the truncation said", len(dl.Data()), h, size)
	}
	if info.Stats.DeadLettered != 1 {
		t.Fatalf("info %+v: want 1 dead letter", info)
	}
	s.assertOutputsExact(ctx, inst)

	if _, err := s.ops[inst].Kill(); err != nil {
		t.Fatal(err)
	}
	s.passWindow(ctx)
	s.trimTo(ctx, inst, pos)
	if err := s.ops[inst].Start(); err != nil {
		t.Fatal(err)
	}
	info = s.waitPosition(ctx, inst, last)
	if info.RestoredCheckpoint != m.CheckpointID || info.Stats.DeadLettersReplayed != 1 || info.Stats.DeadLettered != 0 ||
		info.Stats.Suppressed != 20 || info.Stats.Emitted != 0 {
		t.Fatalf("info %+v: want checkpoint %d restored, the dead letter replayed and not written again, the 20 outputs after it suppressed", info, m.CheckpointID)
	}
	s.assertDeadLetter(ctx, inst, poison, messages.PoisonOutputTooLarge, "max_payload")
	s.assertOutputsExact(ctx, inst)

	s.scheduled(ctx, 3)
	if _, err := s.waitTrimmed(ctx, inst, poison); err != nil {
		t.Fatal(err)
	}
	if last, err = s.publish(ctx, inst, 20); err != nil {
		t.Fatal(err)
	}
	if _, err := s.waitCovered(ctx, inst, last); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ops[inst].Kill(); err != nil {
		t.Fatal(err)
	}
	if err := s.ops[inst].Start(); err != nil {
		t.Fatal(err)
	}
	if last, err = s.publish(ctx, inst, 10); err != nil {
		t.Fatal(err)
	}
	info = s.waitPosition(ctx, inst, last)
	if info.Stats.DeadLettersReplayed != 0 || info.Stats.DeadLettered != 0 || info.Stats.Emitted != 10 {
		t.Fatalf("info %+v after the second restart: want 10 outputs, no dead letter met", info)
	}
	s.assertDeadLetter(ctx, inst, poison, messages.PoisonOutputTooLarge, "max_payload")
	s.assertOutputsExact(ctx, inst)
	if err := s.waitCompletions(ctx, s.completions(), 2); err != nil {
		t.Fatal(err)
	}
}

// TestPanickingMachineIsDeadLettered is acceptance 2 of issue 15 under the default
// policy: a Machine (panicop) that panics on one record does not crash: the record is
// dead-lettered whole, with the panic, and the rest applied; SIGKILLed and restored before
// it, on trimmed input, the instance replays it (it panics again) without dead-lettering
// it again, and ends exact; checkpoints complete and the input is trimmed past it.
func TestPanickingMachineIsDeadLettered(t *testing.T) {
	const inst = "counter-0"
	s := newStack(t, stackOptions{instances: []string{inst}, output: true, outputWindow: outputWindow, panicop: true})
	ctx := ctxFor(t, 180*time.Second)
	s.manualCheckpoints(ctx)
	last, m := s.checkpointed(ctx, inst, 20)
	pos := m.Instances[inst].Positions[cairnjs.InputStream]
	var err error
	record := []byte(`{"key":"poison","value":1}`)
	poison := s.publishRaw(ctx, inst, record)
	if last, err = s.publish(ctx, inst, 20); err != nil {
		t.Fatal(err)
	}
	s.assertExact(ctx, inst, last)
	dl := s.assertDeadLetter(ctx, inst, poison, messages.PoisonPanic, "panic in Apply: panicop: poison record")
	if string(dl.Data()) != string(record) || dl.Headers().Get(messages.HeaderDeadLetterTruncated) != "" {
		t.Fatalf("dead letter %q, want the whole record", dl.Data())
	}
	if tail := s.ops[inst].Tail(400); !strings.Contains(tail, `"message":"recovered a panic of the Machine"`) || !strings.Contains(tail, `"stack":"goroutine`) {
		t.Fatal("the panic was not logged with its stack")
	}
	s.assertOutputsExact(ctx, inst)

	if _, err := s.ops[inst].Kill(); err != nil {
		t.Fatal(err)
	}
	s.passWindow(ctx)
	s.trimTo(ctx, inst, pos)
	if err := s.ops[inst].Start(); err != nil {
		t.Fatal(err)
	}
	s.assertExact(ctx, inst, last)
	if info := s.opInfo(ctx, inst); info.RestoredCheckpoint != m.CheckpointID || info.Stats.DeadLettersReplayed != 1 || info.Stats.DeadLettered != 0 || info.Stats.Emitted != 0 {
		t.Fatalf("info %+v: want checkpoint %d restored, the dead letter replayed and not written again, nothing emitted", info, m.CheckpointID)
	}
	s.assertDeadLetter(ctx, inst, poison, messages.PoisonPanic, "poison record")
	s.assertOutputsExact(ctx, inst)

	s.scheduled(ctx, 3)
	if _, err := s.waitTrimmed(ctx, inst, poison); err != nil {
		t.Fatal(err)
	}
	if last, err = s.publish(ctx, inst, 10); err != nil {
		t.Fatal(err)
	}
	s.assertExact(ctx, inst, last)
	s.assertOutputsExact(ctx, inst)
}

// TestPanickingMachineStopsUnderTheStopPolicy is acceptance 2 of issue 15 under the stop
// policy: at the panicking record the instance stops processing and stays up, unhealthy,
// with the record in its info, declining barriers that name it; a SIGKILL and restart
// stop at the same record again (no crash loop, nothing applied twice); restarted with
// the dead-letter policy it skips the record and ends exact.
func TestPanickingMachineStopsUnderTheStopPolicy(t *testing.T) {
	const inst = "counter-0"
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(t)))
	s := newStack(t, stackOptions{instances: []string{inst}, output: true, panicop: true, opArgs: []string{"--on-poison", "stop", "--health-addr", addr}})
	ctx := ctxFor(t, 180*time.Second)
	url := "http://" + addr + health.Path
	before, err := s.publish(ctx, inst, 20)
	if err != nil {
		t.Fatal(err)
	}
	s.assertExact(ctx, inst, before)
	if err := health.Check(ctx, url); err != nil {
		t.Fatalf("health before the poison record: %v", err)
	}
	poison := s.publishRaw(ctx, inst, []byte(`{"key":"poison","value":1}`))
	last, err := s.publish(ctx, inst, 20)
	if err != nil {
		t.Fatal(err)
	}
	stopped := func(run string) {
		t.Helper()
		info := s.waitInfo(ctx, inst, run+": processing stopped", func(i messages.OperatorInfo) bool { return i.Stopped != nil })
		if st := info.Stopped; st.Sequence != poison || st.Position != before || st.Reason != messages.PoisonPanic ||
			!strings.Contains(st.Error, "panicop: poison record") || info.PoisonPolicy != "stop" || info.Position != before {
			t.Fatalf("%s: info %+v, stopped %+v: want it stopped at %d after %d by the panic", run, info, st, poison, before)
		}
		err := health.Check(ctx, url)
		if !errors.Is(err, health.ErrUnhealthy) || !strings.Contains(err.Error(), fmt.Sprintf("input sequence %d", poison)) {
			t.Fatalf("%s: health %v, want unhealthy naming input sequence %d", run, err, poison)
		}
		since := time.Now()
		if err := proctest.Poll(ctx, 50*time.Millisecond, run+": a checkpoint declined naming the record", func() (bool, error) {
			st, err := s.status(ctx)
			a := st.LastAborted
			return err == nil && a != nil && a.AbortedAt.After(since) && strings.Contains(a.Detail, fmt.Sprintf("stopped at input sequence %d", poison)), err
		}); err != nil {
			t.Fatal(err)
		}
		if !s.ops[inst].Running() {
			t.Fatalf("%s: the instance exited", run)
		}
		if n := len(s.deadLetters(ctx, inst)); n != 0 {
			t.Fatalf("%s: %d dead letters under the stop policy, want none", run, n)
		}
	}
	stopped("first run")
	st, err := s.state(ctx, inst)
	if err != nil {
		t.Fatal(err)
	}
	if st.Position != before || total(st) != 20 {
		t.Fatalf("state at position %d with %d events counted, want %d and 20", st.Position, total(st), before)
	}

	if _, err := s.ops[inst].Kill(); err != nil {
		t.Fatal(err)
	}
	if err := s.ops[inst].Start(); err != nil {
		t.Fatal(err)
	}
	stopped("after a SIGKILL and restart")

	if err := s.ops[inst].Terminate(20 * time.Second); err != nil {
		t.Fatal(err)
	}
	if err := s.ops[inst].StartWith("--on-poison", "dead-letter"); err != nil {
		t.Fatal(err)
	}
	s.assertExact(ctx, inst, last)
	s.assertDeadLetter(ctx, inst, poison, messages.PoisonPanic, "poison record")
	s.assertOutputsExact(ctx, inst)
	if err := health.Check(ctx, url); err != nil {
		t.Fatalf("health once the record is dead-lettered: %v", err)
	}
}

// freePort returns a TCP port that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
