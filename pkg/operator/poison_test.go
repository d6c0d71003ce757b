package operator_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cairn-stream/cairn/internal/natstest"
	"github.com/cairn-stream/cairn/pkg/cairnjs"
	"github.com/cairn-stream/cairn/pkg/messages"
	"github.com/cairn-stream/cairn/pkg/operator"
	refop "github.com/cairn-stream/cairn/services/aggregator"
)

// poisonKey is the key on which a panicky Machine panics.
const poisonKey = "poison"

// panicky is an Aggregator whose Apply panics on events of poisonKey, before it changes
// anything.
type panicky struct{ *refop.Aggregator }

func (p panicky) Apply(rec operator.Record) error {
	if bytes.Contains(rec.Data, []byte(`"`+poisonKey+`"`)) {
		panic("poison record")
	}
	return p.Aggregator.Apply(rec)
}

// startPanicky runs a panicky Machine emitting on instance's output subject.
func (e *env) startPanicky(cfg operator.Config) (*running, *refop.Aggregator) {
	e.t.Helper()
	agg := refop.NewAggregator()
	agg.EmitTo(e.subj.Output(testJob, cfg.Instance))
	return e.startWith(cfg, panicky{agg}), agg
}

// deadLetters returns the dead letters of instance.
func (e *env) deadLetters(instance string) []jetstream.Msg {
	e.t.Helper()
	msgs, err := natstest.ReadSubject(e.ctx(), e.res.DeadLetter, e.subj.DeadLetter(testJob, instance))
	if err != nil {
		e.t.Fatal(err)
	}
	return msgs
}

// checkDeadLetter fails the test unless m is the dead letter of the record at seq on
// subject, for reason, with an error containing errPart.
func checkDeadLetter(t *testing.T, m jetstream.Msg, seq uint64, subject string, reason messages.PoisonReason, errPart string) {
	t.Helper()
	h := m.Headers()
	for k, want := range map[string]string{
		messages.HeaderDeadLetterSequence: strconv.FormatUint(seq, 10),
		messages.HeaderDeadLetterStream:   cairnjs.InputStream,
		messages.HeaderDeadLetterSubject:  subject,
		messages.HeaderDeadLetterReason:   string(reason),
		jetstream.MsgIDHeader:             fmt.Sprintf("%s.%s.%d", testJob, strings.Split(m.Subject(), ".")[3], seq),
	} {
		if got := h.Get(k); got != want {
			t.Fatalf("dead letter header %s = %q, want %q (headers %v)", k, got, want, h)
		}
	}
	if got := h.Get(messages.HeaderDeadLetterError); !strings.Contains(got, errPart) {
		t.Fatalf("dead letter error %q, want it to contain %q", got, errPart)
	}
	if h.Get(messages.HeaderDeadLetterIncarnation) == "" {
		t.Fatal("dead letter without the incarnation")
	}
}

// TestOutputTooLargeIsDeadLettered: an event whose output exceeds the server's
// max_payload is dead-lettered (truncated to fit, saying so) and skipped; the events
// after it are applied and emit, and checkpoints go on. Restored from a checkpoint before
// it, on trimmed input, the replay applies it again (the state is exact) without
// publishing it or dead-lettering it again, and outputs stay one per event.
func TestOutputTooLargeIsDeadLettered(t *testing.T) {
	e := newOutputEnv(t)
	const inst = "counter-0"
	cfg := operator.DefaultConfig(testJob, inst)
	r, agg := e.startAggregator(cfg)
	totals := map[string]messages.KeyTotals{}
	before := makeEvents(4, 1, "a", "b")
	pos1 := e.publishEvents(inst, totals, before...)
	waitPosition(t, r.rt, pos1)
	e.writeManifest(1, e.checkpoint(1))

	// The event fits max_payload; its output, which repeats the key, does not.
	big := strings.Repeat("x", int(e.nc.MaxPayload())-40)
	poison := e.publishEvents(inst, totals, event{key: big, value: 1})
	after := makeEvents(4, 10, "a", "c")
	last := e.publishEvents(inst, totals, after...)
	waitPosition(t, r.rt, last)

	dls := e.deadLetters(inst)
	if len(dls) != 1 {
		t.Fatalf("%d dead letters, want 1", len(dls))
	}
	checkDeadLetter(t, dls[0], poison, e.subj.Input(testJob, inst), messages.PoisonOutputTooLarge, "exceed the server's max_payload")
	record := fmt.Sprintf(`{"key":%q,"value":1}`, big)
	if got := dls[0].Headers().Get(messages.HeaderDeadLetterSize); got != strconv.Itoa(len(record)) {
		t.Fatalf("dead letter size header %q, want %d", got, len(record))
	}
	kept := len(dls[0].Data())
	if want := fmt.Sprintf("payload: %d of %d bytes kept", kept, len(record)); dls[0].Headers().Get(messages.HeaderDeadLetterTruncated) != want || kept == 0 || record[:kept] != string(dls[0].Data()) {
		t.Fatalf("truncated dead letter: header %q, %d bytes kept; want %q and the record's first bytes",
			dls[0].Headers().Get(messages.HeaderDeadLetterTruncated), kept, want)
	}
	events := append(append([]event{}, before...), after...)
	checkUpdates(t, decodeUpdates(t, e.outputs(e.subj.Output(testJob, inst))), updates(events))
	keys, _, _ := aggState(t, r.rt, agg)
	checkTotals(t, keys, totals)
	if a := e.checkpoint(2); a.Positions[cairnjs.InputStream] != last {
		t.Fatalf("checkpoint 2 positions %v, want %d: the position must move past the dead letter", a.Positions, last)
	}
	if st := r.rt.Stats(); st.DeadLettered != 1 || st.Emitted != 8 || st.Applied != 9 {
		t.Fatalf("stats %+v, want 1 dead letter, 8 outputs, 9 records applied", st)
	}
	r.stop(t)

	// Restore checkpoint 1, before the dead letter, on input trimmed to it.
	e.trimInput(inst, pos1)
	e.passWindow()
	r, agg = e.startAggregator(cfg)
	waitPosition(t, r.rt, last)
	if st := r.rt.Stats(); st.DeadLettersReplayed != 1 || st.DeadLettered != 0 || st.Emitted != 0 || st.Suppressed != 4 {
		t.Fatalf("stats after the restore %+v, want the dead letter replayed, none written, 4 outputs suppressed", st)
	}
	if n := len(e.deadLetters(inst)); n != 1 {
		t.Fatalf("%d dead letters after the replay, want still 1", n)
	}
	checkUpdates(t, decodeUpdates(t, e.outputs(e.subj.Output(testJob, inst))), updates(events))
	keys, _, _ = aggState(t, r.rt, agg)
	checkTotals(t, keys, totals)
}

// checkUpdates fails the test unless got equals want.
func checkUpdates(t *testing.T, got, want []refop.KeyUpdate) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%d outputs, want %d", len(got), len(want))
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("output %d is %+v, want %+v", i+1, got[i], want[i])
		}
	}
}

// TestPanicIsDeadLettered: a Machine that panics on one record does not crash the
// runtime: the record is dead-lettered whole, with its own headers, the panic is logged
// with its stack, and the records after it are applied. A restore before it applies it
// again (it panics again) without dead-lettering it again.
func TestPanicIsDeadLettered(t *testing.T) {
	e := newOutputEnv(t)
	const inst = "counter-0"
	cfg := operator.DefaultConfig(testJob, inst)
	r, agg := e.startPanicky(cfg)
	totals := map[string]messages.KeyTotals{}
	before := makeEvents(3, 1, "a", "b")
	pos1 := e.publishEvents(inst, totals, before...)
	waitPosition(t, r.rt, pos1)
	e.writeManifest(1, e.checkpoint(1))

	m := nats.NewMsg(e.subj.Input(testJob, inst))
	m.Data = []byte(`{"key":"poison","value":1}`)
	m.Header.Set("Trace-Id", "t-7")
	m.Header.Set(jetstream.MsgIDHeader, "poison-1")
	ack, err := e.js.PublishMsg(e.ctx(), m)
	if err != nil {
		t.Fatal(err)
	}
	after := makeEvents(3, 10, "a", "c")
	last := e.publishEvents(inst, totals, after...)
	waitPosition(t, r.rt, last)

	dls := e.deadLetters(inst)
	if len(dls) != 1 {
		t.Fatalf("%d dead letters, want 1", len(dls))
	}
	checkDeadLetter(t, dls[0], ack.Sequence, m.Subject, messages.PoisonPanic, "panic in Apply: poison record")
	if h := dls[0].Headers(); !bytes.Equal(dls[0].Data(), m.Data) || h.Get("Trace-Id") != "t-7" || h.Get(messages.HeaderDeadLetterTruncated) != "" {
		t.Fatalf("dead letter %q with headers %v, want the whole record with its Trace-Id", dls[0].Data(), h)
	}
	if !e.logged(`"level":"error"`, "recovered a panic of the Machine", `"in":"Apply"`, `"stack":"goroutine`) {
		t.Fatalf("the panic was not logged with its stack:\n%s", e.logs.String())
	}
	events := append(append([]event{}, before...), after...)
	checkUpdates(t, decodeUpdates(t, e.outputs(e.subj.Output(testJob, inst))), updates(events))
	keys, _, _ := aggState(t, r.rt, agg)
	checkTotals(t, keys, totals)
	if st := r.rt.Stats(); st.DeadLettered != 1 || st.Panics != 1 || st.Applied != 6 {
		t.Fatalf("stats %+v, want 1 dead letter, 1 panic, 6 records applied", st)
	}
	if a := e.checkpoint(2); a.Positions[cairnjs.InputStream] != last {
		t.Fatalf("checkpoint 2 positions %v, want %d", a.Positions, last)
	}
	r.stop(t)

	e.trimInput(inst, pos1)
	e.passWindow()
	r, agg = e.startPanicky(cfg)
	waitPosition(t, r.rt, last)
	if st := r.rt.Stats(); st.DeadLettersReplayed != 1 || st.DeadLettered != 0 || st.Emitted != 0 {
		t.Fatalf("stats after the restore %+v, want the dead letter replayed and none written", st)
	}
	if n := len(e.deadLetters(inst)); n != 1 {
		t.Fatalf("%d dead letters after the replay, want still 1", n)
	}
	keys, _, _ = aggState(t, r.rt, agg)
	checkTotals(t, keys, totals)
	checkUpdates(t, decodeUpdates(t, e.outputs(e.subj.Output(testJob, inst))), updates(events))
}

// TestStopPolicyStopsAtThePoisonRecord: under PoisonStop a panicking record stops
// processing; the instance stays up, reports the record in Info and Health, declines
// barriers naming it, applies nothing after it and dead-letters nothing. Restarted with
// the default policy, the record is dead-lettered and the rest applied.
func TestStopPolicyStopsAtThePoisonRecord(t *testing.T) {
	e := newOutputEnv(t)
	const inst = "counter-0"
	cfg := operator.DefaultConfig(testJob, inst)
	cfg.OnPoison = operator.PoisonStop
	r, agg := e.startPanicky(cfg)
	totals := map[string]messages.KeyTotals{}
	pos1 := e.publishEvents(inst, totals, makeEvents(3, 1, "a", "b")...)
	waitPosition(t, r.rt, pos1)
	e.writeManifest(1, e.checkpoint(1))
	poison := e.publish(inst, []byte(`{"key":"poison","value":1}`))
	last := e.publishEvents(inst, totals, makeEvents(3, 10, "a", "c")...)

	natstest.Eventually(t, waitLong, "processing never stopped", func() bool { return r.rt.Health() != nil })
	if err := r.rt.Health(); !errors.Is(err, operator.ErrProcessingStopped) || !strings.Contains(err.Error(), fmt.Sprintf("input sequence %d", poison)) {
		t.Fatalf("Health() = %v, want ErrProcessingStopped naming input sequence %d", err, poison)
	}
	info := r.rt.Info()
	if s := info.Stopped; s == nil || s.Sequence != poison || s.Reason != string(messages.PoisonPanic) || s.Position != pos1 ||
		s.Subject != e.subj.Input(testJob, inst) || !strings.Contains(s.Error, "poison record") || info.PoisonPolicy != "stop" {
		t.Fatalf("info %+v (stopped %+v), want it stopped at %d after %d by a panic", info, info.Stopped, poison, pos1)
	}
	e.barrier(2)
	a := e.nextAck()
	if a.Kind != messages.AckDeclined || !strings.Contains(a.Reason, fmt.Sprintf("stopped at input sequence %d", poison)) {
		t.Fatalf("ack %+v, want a decline naming input sequence %d", a, poison)
	}
	keys, _, pos := aggState(t, r.rt, agg)
	if pos != pos1 {
		t.Fatalf("position %d after the stop, want %d", pos, pos1)
	}
	if _, ok := keys["c"]; ok {
		t.Fatalf("keys %v: a record after the stop was applied", keys)
	}
	if n := len(e.deadLetters(inst)); n != 0 {
		t.Fatalf("%d dead letters under the stop policy, want none", n)
	}
	r.stop(t)

	cfg.OnPoison = operator.PoisonDeadLetter
	r, agg = e.startPanicky(cfg)
	waitPosition(t, r.rt, last)
	keys, _, _ = aggState(t, r.rt, agg)
	checkTotals(t, keys, totals)
	if n := len(e.deadLetters(inst)); n != 1 {
		t.Fatalf("%d dead letters, want 1", n)
	}
	if err := r.rt.Health(); err != nil {
		t.Fatalf("Health() = %v, want nil", err)
	}
}

// fragile is an Aggregator whose Snapshot, its snapshots' Persist, or Restore panic
// while the matching flag is set.
type fragile struct {
	*refop.Aggregator
	snapshot, persist, restore atomic.Bool
}

func (f *fragile) Snapshot() (operator.Snapshot, error) {
	if f.snapshot.Load() {
		panic("snapshot broke")
	}
	s, err := f.Aggregator.Snapshot()
	return fragileSnapshot{s, f}, err
}

func (f *fragile) Restore(r io.Reader) error {
	if f.restore.Load() {
		panic("restore broke")
	}
	return f.Aggregator.Restore(r)
}

type fragileSnapshot struct {
	operator.Snapshot
	f *fragile
}

func (s fragileSnapshot) Persist(w io.Writer) error {
	if s.f.persist.Load() {
		panic("persist broke")
	}
	return s.Snapshot.Persist(w)
}

// TestPanicsInSnapshotAndPersistDeclineTheCheckpoint: a panic in Snapshot or in Persist
// declines that checkpoint, with the panic in the reason and its stack in the log; the
// next checkpoint is acked and records go on.
func TestPanicsInSnapshotAndPersistDeclineTheCheckpoint(t *testing.T) {
	e := newEnv(t)
	const inst = "counter-0"
	m := &fragile{Aggregator: refop.NewAggregator()}
	r := e.start(inst, m)
	totals := map[string]messages.KeyTotals{}
	waitPosition(t, r.rt, e.publishEvents(inst, totals, makeEvents(3, 1, "a")...))

	m.snapshot.Store(true)
	e.barrier(1)
	if a := e.nextAck(); a.Kind != messages.AckDeclined || !strings.Contains(a.Reason, "panic in Snapshot: snapshot broke") {
		t.Fatalf("ack %+v, want a decline for the panic in Snapshot", a)
	}
	m.snapshot.Store(false)
	m.persist.Store(true)
	e.barrier(2)
	if a := e.nextAck(); a.Kind != messages.AckDeclined || !strings.Contains(a.Reason, "panic in Persist: persist broke") {
		t.Fatalf("ack %+v, want a decline for the panic in Persist", a)
	}
	m.persist.Store(false)
	last := e.publishEvents(inst, totals, makeEvents(3, 5, "b")...)
	waitPosition(t, r.rt, last)
	if a := e.checkpoint(3); a.Positions[cairnjs.InputStream] != last {
		t.Fatalf("checkpoint 3 positions %v, want %d", a.Positions, last)
	}
	for _, in := range []string{"Snapshot", "Persist"} {
		if !e.logged(`"level":"error"`, `"in":"`+in+`"`, `"stack":"goroutine`) {
			t.Fatalf("the panic in %s was not logged with its stack", in)
		}
	}
	if st := r.rt.Stats(); st.Panics != 2 || st.Declined != 2 || st.Acked != 1 {
		t.Fatalf("stats %+v, want 2 panics, 2 declines, 1 ack", st)
	}
}

// TestPanicInRestoreRefusesTheStart: a Restore that panics may leave the state half
// replaced, so the start is refused (no fallback to an older checkpoint) with an error
// wrapping ErrPanic and the stack in the log.
func TestPanicInRestoreRefusesTheStart(t *testing.T) {
	e := newEnv(t)
	const inst = "counter-0"
	r := e.start(inst, refop.NewAggregator())
	waitPosition(t, r.rt, e.publishEvents(inst, map[string]messages.KeyTotals{}, makeEvents(3, 1, "a")...))
	e.writeManifest(1, e.checkpoint(1))
	r.stop(t)

	m := &fragile{Aggregator: refop.NewAggregator()}
	m.restore.Store(true)
	err := e.startErr(operator.DefaultConfig(testJob, inst), m)
	if !errors.Is(err, operator.ErrPanic) || !strings.Contains(err.Error(), "panic in Restore: restore broke") {
		t.Fatalf("Run = %v, want an error wrapping ErrPanic naming the panic in Restore", err)
	}
	if !e.logged(`"level":"error"`, `"in":"Restore"`, `"stack":"goroutine`) {
		t.Fatal("the panic in Restore was not logged with its stack")
	}
}

// touchy is a listenerMachine whose CheckpointCompleted panics for checkpoint 1.
type touchy struct{ listenerMachine }

func (m *touchy) CheckpointCompleted(id uint64) {
	if id == 1 {
		panic("listener broke")
	}
	m.listenerMachine.CheckpointCompleted(id)
}

// TestListenerPanics: a panicking CheckpointListener is logged and counted; under the
// default policy the runtime goes on (later outcomes reach it), under PoisonStop it stops
// processing.
func TestListenerPanics(t *testing.T) {
	for _, policy := range []operator.PoisonPolicy{operator.PoisonDeadLetter, operator.PoisonStop} {
		t.Run(string(policy), func(t *testing.T) {
			e := newEnv(t)
			const inst = "counter-0"
			m := &touchy{}
			cfg := operator.DefaultConfig(testJob, inst)
			cfg.OnPoison = policy
			r := e.startWith(cfg, m)
			waitPosition(t, r.rt, e.publish(inst, []byte("1")))
			e.coord.Complete(1, e.checkpoint(1))
			natstest.Eventually(t, waitLong, "the listener's panic was not handled", func() bool {
				return r.rt.Stats().Panics == 1 && (policy != operator.PoisonStop || r.rt.Info().Stopped != nil)
			})
			if !e.logged(`"level":"error"`, `"in":"CheckpointCompleted(1)"`, `"stack":"goroutine`) {
				t.Fatal("the listener's panic was not logged with its stack")
			}
			last := e.publish(inst, []byte("2"))
			if policy == operator.PoisonStop {
				if s := r.rt.Info().Stopped; s == nil || s.Reason != string(messages.PoisonListenerPanic) || s.Sequence != 0 {
					t.Fatalf("stopped %+v, want stopped by the listener's panic", s)
				}
				e.barrier(2)
				if a := e.nextAck(); a.Kind != messages.AckDeclined || !strings.Contains(a.Reason, "after a CheckpointListener panicked") {
					t.Fatalf("ack %+v, want a decline naming the listener's panic", a)
				}
				return
			}
			waitPosition(t, r.rt, last)
			e.coord.Complete(2, e.checkpoint(2))
			waitCalls(t, r.rt, &m.listenerMachine, "completed 2")
		})
	}
}

// gated is an Aggregator whose Apply, on the event of key "gate", tells at and waits for
// release before it applies it.
type gated struct {
	*refop.Aggregator
	at, release chan struct{}
}

func (g gated) Apply(rec operator.Record) error {
	if bytes.Contains(rec.Data, []byte(`"gate"`)) {
		close(g.at)
		<-g.release
	}
	return g.Aggregator.Apply(rec)
}

// TestAnOutageIsRetriedNotDeadLettered: while the server is down, an output fails at
// every attempt (the connection fails publishes at once while it reconnects), far more
// often than a record's refusals are counted, and is stored once the server is back: an
// outage dead-letters nothing.
func TestAnOutageIsRetriedNotDeadLettered(t *testing.T) {
	dir := t.TempDir()
	s := natstest.StartIn(t, dir, -1)
	port := s.Addr().(*net.TCPAddr).Port
	e := newEnvOn(t, s)
	nc, err := cairnjs.Connect(cairnjs.ConnectOptions{URLs: s.URL, Name: t.Name(), Extra: []nats.Option{nats.ReconnectBufSize(-1)}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	const inst = "counter-0"
	cfg := operator.DefaultConfig(testJob, inst)
	cfg.Heartbeat = time.Hour // the registration stays fresh: every attempt publishes
	cfg.Logger = e.logger()
	agg := refop.NewAggregator()
	agg.EmitTo(e.subj.Output(testJob, inst))
	g := gated{Aggregator: agg, at: make(chan struct{}), release: make(chan struct{})}
	rt, err := operator.New(nc, cfg, g)
	if err != nil {
		t.Fatal(err)
	}
	r := e.run(rt, rt.Run)
	totals := map[string]messages.KeyTotals{}
	waitPosition(t, rt, e.publishEvents(inst, totals, makeEvents(3, 1, "a")...))
	gate := e.publishEvents(inst, totals, event{key: "gate", value: 1})
	select {
	case <-g.at:
	case <-time.After(waitLong):
		t.Fatal("the gated event was never applied")
	}
	s.Shutdown()
	s.WaitForShutdown()
	close(g.release)
	natstest.Eventually(t, waitLong, "the output was not retried through the outage", func() bool {
		return strings.Count(e.logs.String(), "output not stored; retrying") > 2*3 || rt.Stats().DeadLettered > 0 || rt.Health() != nil
	})
	natstest.StartIn(t, dir, port)
	natstest.Eventually(t, waitLong, "the gated event was not applied after the outage", func() bool {
		return rt.Position() >= gate || rt.Health() != nil
	})
	if st := rt.Stats(); st.DeadLettered != 0 || st.Emitted != 4 || rt.Health() != nil {
		t.Fatalf("stats %+v, health %v: want 4 outputs, no dead letter, processing on", st, rt.Health())
	}
	if n := len(e.deadLetters(inst)); n != 0 {
		t.Fatalf("%d dead letters after an outage, want none", n)
	}
	checkUpdates(t, decodeUpdates(t, e.outputs(e.subj.Output(testJob, inst))), updates(append(makeEvents(3, 1, "a"), event{key: "gate", value: 1})))
	// Stop before the restarted server, which is cleaned up first.
	r.stop(t)
}

// emitter emits, for a record "<subject> <size>", one output of size bytes on subject.
type emitter struct {
	n       int
	pending []operator.Output
}

func (m *emitter) Apply(rec operator.Record) error {
	subject, size, _ := strings.Cut(string(rec.Data), " ")
	n, err := strconv.Atoi(size)
	if err != nil {
		return err
	}
	m.n++
	m.pending = append(m.pending, operator.Output{Subject: subject, Data: bytes.Repeat([]byte("o"), n)})
	return nil
}

func (m *emitter) TakeOutputs() []operator.Output {
	out := m.pending
	m.pending = nil
	return out
}

func (m *emitter) Snapshot() (operator.Snapshot, error) {
	return operator.BytesSnapshot(strconv.AppendInt(nil, int64(m.n), 10)), nil
}

func (m *emitter) Restore(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	m.n, err = strconv.Atoi(string(b))
	return err
}

// TestOutputsThatCanNeverBeStored: an output whose subject has a wildcard, one larger
// than its stream's maximum message size, and one its stream refuses for good (sealed)
// are dead-lettered with their reason, the last after a few attempts; the record after
// each is stored.
func TestOutputsThatCanNeverBeStored(t *testing.T) {
	e := newEnv(t)
	ctx := e.ctx()
	if _, err := e.js.CreateStream(ctx, jetstream.StreamConfig{Name: "SMALL_OUT", Subjects: []string{"small.>"}, MaxMsgSize: 100, Storage: jetstream.MemoryStorage}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.js.CreateStream(ctx, jetstream.StreamConfig{Name: "SEALED_OUT", Subjects: []string{"sealed.>"}, Storage: jetstream.MemoryStorage}); err != nil {
		t.Fatal(err)
	}
	sealed, err := e.js.Stream(ctx, "SEALED_OUT")
	if err != nil {
		t.Fatal(err)
	}
	sc := sealed.CachedInfo().Config
	sc.Sealed = true
	if _, err := e.js.UpdateStream(ctx, sc); err != nil {
		t.Fatal(err)
	}
	const inst = "counter-0"
	r := e.start(inst, &emitter{})
	tests := []struct {
		record  string
		reason  messages.PoisonReason
		errPart string
	}{
		{record: "cairn.output.orders.* 10", reason: messages.PoisonOutputRefused, errPart: "not a subject to publish to: a wildcard is not allowed"},
		{record: "small.x 200", reason: messages.PoisonOutputTooLarge, errPart: "message size exceeds maximum allowed"},
		{record: "sealed.x 10", reason: messages.PoisonOutputRefused, errPart: "refused 3 times in a row"},
	}
	for i, tt := range tests {
		seq := e.publish(inst, []byte(tt.record))
		last := e.publish(inst, []byte("cairn.output.orders.counter-0 10"))
		waitPosition(t, r.rt, last)
		dls := e.deadLetters(inst)
		if len(dls) != i+1 {
			t.Fatalf("%s: %d dead letters, want %d", tt.record, len(dls), i+1)
		}
		checkDeadLetter(t, dls[i], seq, e.subj.Input(testJob, inst), tt.reason, tt.errPart)
	}
	if st := r.rt.Stats(); st.DeadLettered != 3 || st.Emitted != 3 {
		t.Fatalf("stats %+v, want 3 dead letters and 3 outputs", st)
	}
}
