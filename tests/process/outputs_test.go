package process

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cairn-stream/cairn/internal/natstest"
	"github.com/cairn-stream/cairn/internal/proctest"
	"github.com/cairn-stream/cairn/pkg/cairnjs"
	"github.com/cairn-stream/cairn/pkg/messages"
	"github.com/cairn-stream/cairn/services/aggregator"
)

// outputWindow is the duplicate window the output tests give CAIRN_OUTPUT: each waits
// past it before restarting an instance, so that what they prove is Cairn's
// deduplication, not the window's.
const outputWindow = 2 * time.Second

// manualCheckpoints stops the job's schedule (interval 24h) and waits until the
// coordinator applied it and no checkpoint is pending: from then on only the test's
// triggers take checkpoints.
func (s *stack) manualCheckpoints(ctx context.Context) {
	s.t.Helper()
	var v messages.ConfigView
	if err := s.request(ctx, subjects.ConfigSet(s.job), []byte(`{"interval":"24h"}`), &v); err != nil {
		s.t.Fatal(err)
	}
	if err := proctest.Poll(ctx, 20*time.Millisecond, "the coordinator to apply the 24h interval with no checkpoint pending", func() (bool, error) {
		st, err := s.status(ctx)
		return err == nil && st.Config.Version >= v.Version && len(st.Pending) == 0, err
	}); err != nil {
		s.t.Fatal(err)
	}
}

// checkpointed publishes n records to inst, checkpoints them with a manual trigger, and
// returns the last record's sequence and the completed checkpoint's manifest.
func (s *stack) checkpointed(ctx context.Context, inst string, n int) (uint64, messages.Manifest) {
	s.t.Helper()
	last, err := s.publish(ctx, inst, n)
	if err != nil {
		s.t.Fatal(err)
	}
	s.trigger(ctx, inst, last, "")
	m, err := s.waitCovered(ctx, inst, last)
	if err != nil {
		s.t.Fatal(err)
	}
	return last, m
}

// trigger takes a checkpoint (a savepoint when savepoint is not empty) once inst has
// applied its input up to last, and returns its result; it must complete.
func (s *stack) trigger(ctx context.Context, inst string, last uint64, savepoint string) messages.CheckpointResult {
	s.t.Helper()
	if _, err := s.waitApplied(ctx, inst, last); err != nil {
		s.t.Fatal(err)
	}
	var body []byte
	if savepoint != "" {
		body = fmt.Appendf(nil, `{"savepoint":%q}`, savepoint)
	}
	var r messages.CheckpointResult
	if err := s.request(ctx, subjects.CheckpointTrigger(s.job), body, &r); err != nil || r.Outcome != "completed" {
		s.t.Fatalf("checkpoint trigger %s: %+v, %v", body, r, err)
	}
	return r
}

// passWindow waits until CAIRN_OUTPUT's duplicate window holds no id published so far.
func (s *stack) passWindow(ctx context.Context) {
	s.t.Helper()
	start := time.Now()
	if err := natstest.PassDuplicateWindow(ctx, s.js, subjects.Output(s.job, "window-probe")); err != nil {
		s.t.Fatal(err)
	}
	s.t.Logf("the output stream's duplicate window passed after %s", time.Since(start).Round(time.Millisecond))
}

// outputMsgs returns the messages on inst's output subject.
func (s *stack) outputMsgs(ctx context.Context, inst string) []jetstream.Msg {
	s.t.Helper()
	msgs, err := natstest.ReadSubject(ctx, s.res.Output, subjects.Output(s.job, inst))
	if err != nil {
		s.t.Fatal(err)
	}
	return msgs
}

// keyUpdates decodes the reference operator's outputs.
func keyUpdates(t *testing.T, msgs []jetstream.Msg) []aggregator.KeyUpdate {
	t.Helper()
	out := make([]aggregator.KeyUpdate, len(msgs))
	for i, m := range msgs {
		if err := json.Unmarshal(m.Data(), &out[i]); err != nil {
			t.Fatalf("output %d: %v", i+1, err)
		}
	}
	return out
}

// assertOutputsExact fails the test unless inst's outputs are one per event published to
// it, in order, with the running counts and sums.
func (s *stack) assertOutputsExact(ctx context.Context, inst string) {
	s.t.Helper()
	values := s.published(inst)
	outputs := keyUpdates(s.t, s.outputMsgs(ctx, inst))
	if p := checkOutputs(values, outputs); p != nil {
		s.t.Fatalf("outputs of %s are not one per event:\n  %s", inst, strings.Join(p, "\n  "))
	}
	s.t.Logf("%d events, %d outputs: one each", len(values), len(outputs))
}

// opInfo asks inst for its info.
func (s *stack) opInfo(ctx context.Context, inst string) messages.OperatorInfo {
	s.t.Helper()
	var info messages.OperatorInfo
	if err := s.request(ctx, subjects.OperatorInfo(s.job, inst), nil, &info); err != nil {
		s.t.Fatal(err)
	}
	return info
}

// trimTo purges inst's input below seq and checks that it now starts there.
func (s *stack) trimTo(ctx context.Context, inst string, seq uint64) {
	s.t.Helper()
	subject := subjects.Input(s.job, inst)
	if err := s.res.Input.Purge(ctx, jetstream.WithPurgeSubject(subject), jetstream.WithPurgeSequence(seq)); err != nil {
		s.t.Fatal(err)
	}
	if first, err := s.firstSeq(ctx, subject); err != nil || first != seq {
		s.t.Fatalf("input of %s starts at %d after trimming to %d (%v)", inst, first, seq, err)
	}
}

// TestOutputsExactlyOnceAfterDowntimeLongerThanTheWindow is acceptance 1 of issue 14: the
// reference operator stores outputs newer than its last checkpoint, is SIGKILLed, stays
// down longer than CAIRN_OUTPUT's duplicate window, and is restarted on trimmed input: the
// output stream holds exactly one output per input record.
func TestOutputsExactlyOnceAfterDowntimeLongerThanTheWindow(t *testing.T) {
	const inst = "counter-0"
	s := newStack(t, stackOptions{instances: []string{inst}, output: true, outputWindow: outputWindow})
	ctx := ctxFor(t, 120*time.Second)
	s.manualCheckpoints(ctx)
	last, m := s.checkpointed(ctx, inst, 40)
	pos := m.Instances[inst].Positions[cairnjs.InputStream]
	newer, err := s.publish(ctx, inst, 40)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.waitApplied(ctx, inst, newer); err != nil {
		t.Fatal(err)
	}
	if latest, err := s.manifest(ctx, s.job+".latest"); err != nil || latest.Instances[inst].Positions[cairnjs.InputStream] != pos {
		t.Fatalf("the newest checkpoint moved past position %d (%v): the outputs stored since must be newer than it", pos, err)
	}
	if n := len(s.outputMsgs(ctx, inst)); n != 80 {
		t.Fatalf("%d outputs stored before the kill, want 80", n)
	}
	if _, err := s.ops[inst].Kill(); err != nil {
		t.Fatal(err)
	}
	s.passWindow(ctx)
	s.trimTo(ctx, inst, pos)

	if err := s.ops[inst].Start(); err != nil {
		t.Fatal(err)
	}
	last, err = s.publish(ctx, inst, 10)
	if err != nil {
		t.Fatal(err)
	}
	s.assertExact(ctx, inst, last)
	s.assertOutputsExact(ctx, inst)
	if info := s.opInfo(ctx, inst); info.RestoredCheckpoint != m.CheckpointID || info.Stats.Suppressed != 40 || info.Stats.Emitted != 10 {
		t.Fatalf("info %+v: want checkpoint %d restored, the 40 replayed outputs suppressed and 10 emitted", info, m.CheckpointID)
	}
}

// TestRestoreFromAnOldSavepointAndReemit is acceptance 2 of issue 14: `--restore-from` a
// savepoint older than CAIRN_OUTPUT's duplicate window stores no replayed output again;
// with `--reemit-outputs` the replayed outputs are stored again, under new ids, and the
// outputs_reemitted member event is recorded.
func TestRestoreFromAnOldSavepointAndReemit(t *testing.T) {
	const inst = "counter-0"
	s := newStack(t, stackOptions{instances: []string{inst}, output: true, outputWindow: outputWindow})
	ctx := ctxFor(t, 120*time.Second)
	s.manualCheckpoints(ctx)
	last, err := s.publish(ctx, inst, 30)
	if err != nil {
		t.Fatal(err)
	}
	sp := s.trigger(ctx, inst, last, "before-upgrade")
	spm, err := s.manifest(ctx, cairnjs.SavepointKey(s.job, "before-upgrade"))
	if err != nil {
		t.Fatal(err)
	}
	spPos := spm.Instances[inst].Positions[cairnjs.InputStream]
	last, err = s.publish(ctx, inst, 30)
	if err != nil {
		t.Fatal(err)
	}
	s.trigger(ctx, inst, last, "")
	p := s.ops[inst]
	if err := p.Terminate(20 * time.Second); err != nil {
		t.Fatal(err)
	}
	s.passWindow(ctx)
	s.trimTo(ctx, inst, spPos)

	// The default: the 30 outputs replayed after the savepoint are stored already.
	if err := p.StartWith("--restore-from", "before-upgrade"); err != nil {
		t.Fatal(err)
	}
	last, err = s.publish(ctx, inst, 10)
	if err != nil {
		t.Fatal(err)
	}
	s.assertExact(ctx, inst, last)
	s.assertOutputsExact(ctx, inst)
	if info := s.opInfo(ctx, inst); info.RestoredCheckpoint != sp.ID || info.Stats.Suppressed != 30 || info.Stats.Emitted != 10 {
		t.Fatalf("info %+v: want savepoint %d restored, 30 outputs suppressed and 10 emitted", info, sp.ID)
	}

	// Re-emitting on purpose: the 40 records after the savepoint are replayed and their
	// outputs stored again.
	if err := p.Terminate(20 * time.Second); err != nil {
		t.Fatal(err)
	}
	if err := p.StartWith("--restore-from", "before-upgrade", "--reemit-outputs"); err != nil {
		t.Fatal(err)
	}
	s.assertExact(ctx, inst, last)
	msgs := s.outputMsgs(ctx, inst)
	if len(msgs) != 70+40 {
		t.Fatalf("%d outputs after re-emitting, want 70 + 40", len(msgs))
	}
	outputs := keyUpdates(t, msgs)
	if !slices.Equal(outputs[70:], outputs[30:70]) {
		t.Fatalf("re-emitted outputs %v, want %v", outputs[70:], outputs[30:70])
	}
	inc := p.Incarnation()
	for _, m := range msgs[70:] {
		if id := m.Headers().Get(jetstream.MsgIDHeader); !strings.HasSuffix(id, "."+inc) {
			t.Fatalf("re-emitted output with id %q, want one ending with the incarnation %s", id, inc)
		}
	}
	evs, err := natstest.ReadSubject(ctx, s.res.Checkpoints, subjects.MemberEvents(s.job))
	if err != nil {
		t.Fatal(err)
	}
	var found bool
	for _, m := range evs {
		var ev messages.MemberEvent
		if err := messages.Unmarshal(m.Data(), &ev); err != nil {
			t.Fatal(err)
		}
		found = found || ev.Kind == messages.MemberOutputsReemitted && ev.Instance == inst && ev.Incarnation == inc && ev.Checkpoint == sp.ID
	}
	if !found {
		t.Fatalf("no outputs_reemitted member event of incarnation %s for savepoint %d among %d member events", inc, sp.ID, len(evs))
	}
}
