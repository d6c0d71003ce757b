package operator_test

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
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

// shortWindow is the duplicate window the output tests give CAIRN_OUTPUT, and pass before
// a restart: what they prove is the runtime's deduplication, not the window's.
const shortWindow = time.Second

// newOutputEnv is newEnv with CAIRN_OUTPUT's duplicate window shortened to shortWindow.
func newOutputEnv(t *testing.T) *env {
	t.Helper()
	e := newEnv(t)
	if err := natstest.SetDuplicateWindow(e.ctx(), e.js, cairnjs.OutputStream, shortWindow); err != nil {
		t.Fatal(err)
	}
	return e
}

// passWindow waits until CAIRN_OUTPUT's duplicate window holds no id published so far.
func (e *env) passWindow() {
	e.t.Helper()
	if err := natstest.PassDuplicateWindow(e.ctx(), e.js, e.subj.Output(testJob, "window-probe")); err != nil {
		e.t.Fatal(err)
	}
}

// outputs returns the messages stored on subject in CAIRN_OUTPUT.
func (e *env) outputs(subject string) []jetstream.Msg {
	e.t.Helper()
	msgs, err := natstest.ReadSubject(e.ctx(), e.res.Output, subject)
	if err != nil {
		e.t.Fatal(err)
	}
	return msgs
}

// trimInput purges instance's input below seq, as the coordinator's trimming does.
func (e *env) trimInput(instance string, seq uint64) {
	e.t.Helper()
	if err := e.res.Input.Purge(e.ctx(), jetstream.WithPurgeSubject(e.subj.Input(testJob, instance)), jetstream.WithPurgeSequence(seq)); err != nil {
		e.t.Fatal(err)
	}
}

// updates returns the outputs an Aggregator emits for events, in order.
func updates(events []event) []refop.KeyUpdate {
	totals := map[string]refop.KeyUpdate{}
	var out []refop.KeyUpdate
	for _, ev := range events {
		u := totals[ev.key]
		u = refop.KeyUpdate{Key: ev.key, Count: u.Count + 1, Sum: u.Sum + ev.value}
		totals[ev.key] = u
		out = append(out, u)
	}
	return out
}

// decodeUpdates decodes Aggregator outputs.
func decodeUpdates(t *testing.T, msgs []jetstream.Msg) []refop.KeyUpdate {
	t.Helper()
	out := make([]refop.KeyUpdate, len(msgs))
	for i, m := range msgs {
		if err := json.Unmarshal(m.Data(), &out[i]); err != nil {
			t.Fatalf("output %d %q: %v", i+1, m.Data(), err)
		}
	}
	return out
}

// startAggregator runs an Aggregator emitting on instance's output subject.
func (e *env) startAggregator(cfg operator.Config) (*running, *refop.Aggregator) {
	e.t.Helper()
	agg := refop.NewAggregator()
	agg.EmitTo(e.subj.Output(testJob, cfg.Instance))
	return e.startWith(cfg, agg), agg
}

// TestReplayedOutputsAreNotStoredAgain restarts an instance after its duplicate window
// passed, from a checkpoint older than outputs it stored, on trimmed input: the replayed
// outputs are suppressed and each event has exactly one output. With ReemitOutputs the
// replayed ones are stored again under new ids, and the member event is recorded.
func TestReplayedOutputsAreNotStoredAgain(t *testing.T) {
	e := newOutputEnv(t)
	const inst = "counter-0"
	cfg := operator.DefaultConfig(testJob, inst)
	out := e.subj.Output(testJob, inst)
	totals := map[string]messages.KeyTotals{}
	events := makeEvents(6, 1, "a", "b")
	r, _ := e.startAggregator(cfg)
	pos1 := e.publishEvents(inst, totals, events...)
	waitPosition(t, r.rt, pos1)
	e.writeManifest(1, e.checkpoint(1))
	more := makeEvents(6, 7, "a", "b", "c")
	events = append(events, more...)
	last := e.publishEvents(inst, totals, more...)
	waitPosition(t, r.rt, last)
	r.stop(t)
	e.trimInput(inst, pos1)
	e.passWindow()

	r, agg := e.startAggregator(cfg)
	more = makeEvents(3, 13, "c")
	events = append(events, more...)
	last = e.publishEvents(inst, totals, more...)
	waitPosition(t, r.rt, last)
	if st := r.rt.Stats(); st.Suppressed != 6 || st.Emitted != 3 {
		t.Fatalf("stats after the restart %+v, want 6 replayed outputs suppressed and 3 emitted", st)
	}
	if got, want := decodeUpdates(t, e.outputs(out)), updates(events); !slices.Equal(got, want) {
		t.Fatalf("outputs\n got %v\nwant %v", got, want)
	}
	keys, _, _ := aggState(t, r.rt, agg)
	checkTotals(t, keys, totals)
	if !e.logged("replayed outputs already stored end here", `"suppressed":6`) {
		t.Fatal("the end of the suppressed outputs was not logged")
	}
	r.stop(t)

	// Re-emitting on purpose: the 9 records after checkpoint 1 are replayed and their
	// outputs stored again, each under an id of this incarnation.
	e.passWindow()
	cfg.ReemitOutputs = true
	r, _ = e.startAggregator(cfg)
	waitPosition(t, r.rt, last)
	got := e.outputs(out)
	if len(got) != len(events)+9 {
		t.Fatalf("%d outputs after re-emitting, want %d + 9", len(got), len(events))
	}
	if upd, want := decodeUpdates(t, got[len(events):]), updates(events)[6:]; !slices.Equal(upd, want) {
		t.Fatalf("re-emitted outputs\n got %v\nwant %v", upd, want)
	}
	for _, m := range got[len(events):] {
		id := m.Headers().Get(jetstream.MsgIDHeader)
		if !strings.HasSuffix(id, "."+r.rt.Incarnation()) || m.Headers().Get(messages.HeaderInputSequence) == "" {
			t.Fatalf("re-emitted output has id %q and headers %v; want an id ending with the incarnation %s and the input sequence", id, m.Headers(), r.rt.Incarnation())
		}
	}
	if st := r.rt.Stats(); st.Suppressed != 0 || st.Emitted != 9 {
		t.Fatalf("stats after re-emitting %+v, want 9 emitted", st)
	}
	evs := e.memberEvents()
	if len(evs) != 1 || evs[0].Kind != messages.MemberOutputsReemitted || evs[0].Checkpoint != 1 || evs[0].Incarnation != r.rt.Incarnation() {
		t.Fatalf("member events %+v, want one outputs_reemitted event of checkpoint 1 by incarnation %s", evs, r.rt.Incarnation())
	}
}

// pairMachine counts records and emits, per record, its count on subject A and then on
// subject B.
type pairMachine struct {
	a, b string
	n    uint64
	outs []operator.Output
}

func (m *pairMachine) Apply(operator.Record) error {
	m.n++
	data := strconv.AppendUint(nil, m.n, 10)
	m.outs = append(m.outs, operator.Output{Subject: m.a, Data: data}, operator.Output{Subject: m.b, Data: data})
	return nil
}

func (m *pairMachine) TakeOutputs() []operator.Output {
	out := m.outs
	m.outs = nil
	return out
}

func (m *pairMachine) Snapshot() (operator.Snapshot, error) {
	return operator.BytesSnapshot(strconv.AppendUint(nil, m.n, 10)), nil
}

func (m *pairMachine) Restore(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	m.n, err = strconv.ParseUint(string(b), 10, 64)
	return err
}

// counts decodes outputs that carry a count.
func counts(t *testing.T, msgs []jetstream.Msg) []uint64 {
	t.Helper()
	var out []uint64
	for _, m := range msgs {
		n, err := strconv.ParseUint(string(m.Data()), 10, 64)
		if err != nil {
			t.Fatalf("output %q: %v", m.Data(), err)
		}
		out = append(out, n)
	}
	return out
}

// TestReplayedOutputsOnSeveralSubjects stops an instance as if it died between the two
// outputs of its last record (the second one is removed from the stream): after the
// window, the restored instance suppresses every output each subject holds and stores
// the missing one, once.
func TestReplayedOutputsOnSeveralSubjects(t *testing.T) {
	e := newOutputEnv(t)
	const inst = "pair-0"
	a, b := e.subj.Output(testJob, inst)+".a", e.subj.Output(testJob, inst)+".b"
	newPair := func() *pairMachine { return &pairMachine{a: a, b: b} }
	r := e.start(inst, newPair())
	pos1 := e.publish(inst, []byte("1"), []byte("2"), []byte("3"), []byte("4"))
	waitPosition(t, r.rt, pos1)
	e.writeManifest(1, e.checkpoint(1))
	last := e.publish(inst, []byte("5"), []byte("6"), []byte("7"), []byte("8"))
	waitPosition(t, r.rt, last)
	r.stop(t)
	bs := e.outputs(b)
	if err := e.res.Output.DeleteMsg(e.ctx(), mustSeq(t, bs[len(bs)-1])); err != nil {
		t.Fatal(err)
	}
	e.trimInput(inst, pos1)
	e.passWindow()

	r = e.start(inst, newPair())
	waitPosition(t, r.rt, last)
	want := []uint64{1, 2, 3, 4, 5, 6, 7, 8}
	if ga, gb := counts(t, e.outputs(a)), counts(t, e.outputs(b)); !slices.Equal(ga, want) || !slices.Equal(gb, want) {
		t.Fatalf("outputs on A %v, on B %v; want %v on each", ga, gb, want)
	}
	if st := r.rt.Stats(); st.Suppressed != 7 || st.Emitted != 1 {
		t.Fatalf("stats %+v, want 7 suppressed and 1 emitted", st)
	}
}

func mustSeq(t *testing.T, m jetstream.Msg) uint64 {
	t.Helper()
	md, err := m.Metadata()
	if err != nil {
		t.Fatal(err)
	}
	return md.Sequence.Stream
}

// TestOutputsOfAnInstanceThatNeverCheckpointed stops an instance before any checkpoint:
// restarted, it is new and replays its input from the start, and stores none of the
// outputs again. An output stored by a runtime before the position headers (its id alone
// gives the position) marks the same way.
func TestOutputsOfAnInstanceThatNeverCheckpointed(t *testing.T) {
	e := newOutputEnv(t)
	const inst = "counter-0"
	cfg := operator.DefaultConfig(testJob, inst)
	totals := map[string]messages.KeyTotals{}
	events := makeEvents(4, 1, "a")
	r, _ := e.startAggregator(cfg)
	last := e.publishEvents(inst, totals, events...)
	waitPosition(t, r.rt, last)
	r.stop(t)
	e.passWindow()
	r, _ = e.startAggregator(cfg)
	waitPosition(t, r.rt, last)
	if st := r.rt.Stats(); st.Suppressed != 4 || st.Emitted != 0 {
		t.Fatalf("stats %+v, want the 4 outputs suppressed", st)
	}
	r.stop(t)

	// An older runtime's output: the id only.
	const old = "counter-1"
	first := e.publishEvents(old, totals, event{"x", 1})
	second := e.publishEvents(old, totals, event{"x", 2})
	msg := nats.NewMsg(e.subj.Output(testJob, old))
	msg.Data = []byte(`{"key":"x","count":2,"sum":3}`)
	if _, err := e.js.PublishMsg(e.ctx(), msg, jetstream.WithMsgID(fmt.Sprintf("%s.%s.%d.0", testJob, old, second))); err != nil {
		t.Fatal(err)
	}
	r, _ = e.startAggregator(operator.DefaultConfig(testJob, old))
	third := e.publishEvents(old, totals, event{"x", 3})
	waitPosition(t, r.rt, third)
	if st := r.rt.Stats(); st.Suppressed != 2 || st.Emitted != 1 {
		t.Fatalf("stats %+v, want the outputs of sequences %d and %d suppressed and 1 emitted", st, first, second)
	}
}

// TestOutputMarksThatCannotBeTrusted: the last output on a subject is another instance's
// (a shared subject), or came from an input sequence beyond the input stream's last (the
// input stream was created again): replayed outputs are published, and a warning says
// why.
func TestOutputMarksThatCannotBeTrusted(t *testing.T) {
	e := newOutputEnv(t)
	shared := e.subj.Output(testJob, "shared")
	// Another instance's output is the last on the shared subject.
	msg := nats.NewMsg(shared)
	msg.Data = []byte(`{}`)
	if _, err := e.js.PublishMsg(e.ctx(), msg, jetstream.WithMsgID(testJob+".other-0.9.0")); err != nil {
		t.Fatal(err)
	}
	agg := refop.NewAggregator()
	agg.EmitTo(shared)
	r := e.start("counter-0", agg)
	last := e.publishEvents("counter-0", map[string]messages.KeyTotals{}, event{"a", 1})
	waitPosition(t, r.rt, last)
	if !e.logged("the last message on an output subject is not this instance's output", shared) {
		t.Fatal("no warning about the shared subject")
	}
	r.stop(t)

	// An output from input sequence 1000 of an input stream since created again.
	out := e.subj.Output(testJob, "counter-1")
	msg = nats.NewMsg(out)
	msg.Data = []byte(`{}`)
	msg.Header.Set(messages.HeaderInputSequence, "1000")
	msg.Header.Set(messages.HeaderOutputIndex, "0")
	if _, err := e.js.PublishMsg(e.ctx(), msg, jetstream.WithMsgID(testJob+".counter-1.1000.0")); err != nil {
		t.Fatal(err)
	}
	r, _ = e.startAggregator(operator.DefaultConfig(testJob, "counter-1"))
	last = e.publishEvents("counter-1", map[string]messages.KeyTotals{}, event{"a", 1}, event{"a", 2})
	waitPosition(t, r.rt, last)
	if st := r.rt.Stats(); st.Suppressed != 0 || st.Emitted != 2 {
		t.Fatalf("stats %+v, want both outputs emitted", st)
	}
	if !e.logged("beyond the input stream's last", `"output_input_seq":1000`) {
		t.Fatal("no warning about the mark beyond the input stream")
	}
}

// TestOutputMarkOfARecordStoredAfterTheStart: an incarnation still running beside a new
// one stores the output of an input record that arrived after the new one read the input
// stream at its start. That mark is trusted (the input stream, read again, holds its
// record), so the new one's replayed output for the record is suppressed, not stored twice.
func TestOutputMarkOfARecordStoredAfterTheStart(t *testing.T) {
	e := newOutputEnv(t)
	r, _ := e.startAggregator(operator.DefaultConfig(testJob, "counter-0"))
	st, err := e.js.Stream(e.ctx(), cairnjs.InputStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(e.ctx())
	if err != nil {
		t.Fatal(err)
	}
	next := info.State.LastSeq + 1
	msg := nats.NewMsg(e.subj.Output(testJob, "counter-0"))
	msg.Data = []byte(`{}`)
	msg.Header.Set(messages.HeaderInputSequence, strconv.FormatUint(next, 10))
	msg.Header.Set(messages.HeaderOutputIndex, "0")
	if _, err := e.js.PublishMsg(e.ctx(), msg, jetstream.WithMsgID(fmt.Sprintf("%s.counter-0.%d.0", testJob, next))); err != nil {
		t.Fatal(err)
	}
	if seq := e.publishEvents("counter-0", map[string]messages.KeyTotals{}, event{"a", 1}); seq != next {
		t.Fatalf("the record went to sequence %d, want %d", seq, next)
	}
	waitPosition(t, r.rt, next)
	if st := r.rt.Stats(); st.Suppressed != 1 || st.Emitted != 0 {
		t.Fatalf("stats %+v, want the output of sequence %d suppressed: its mark was stored by another incarnation", st, next)
	}
	if e.logged("beyond the input stream's last") {
		t.Fatal("the mark was taken for one from an input stream created again")
	}
}

// TestReemitOutputsNeedsAProducer: ReemitOutputs for a Machine without outputs is refused.
func TestReemitOutputsNeedsAProducer(t *testing.T) {
	e := newEnv(t)
	cfg := operator.DefaultConfig(testJob, "counter-0")
	cfg.ReemitOutputs = true
	agg := refop.NewAggregator()
	_, err := operator.New(e.nc, cfg, struct{ operator.Machine }{agg})
	if err == nil || !strings.Contains(err.Error(), "not a Producer") {
		t.Fatalf("New = %v, want a refusal naming the missing Producer", err)
	}
}
