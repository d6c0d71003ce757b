package process

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cairn-stream/cairn/internal/proctest"
	"github.com/cairn-stream/cairn/pkg/cairnjs"
	"github.com/cairn-stream/cairn/pkg/messages"
)

// TestPausedIncarnationIsFencedWhenItResumes is acceptance 1 of issue 13: instance A is
// SIGSTOPped; B starts with the same id, runs until its checkpoints have trimmed the input
// past where A stopped, and stops cleanly (SIGTERM: it deregisters); then A is SIGCONTed.
// A must find that a newer incarnation ran (the instance record), exit non-zero with
// ErrReplaced and publish nothing; no manifest may hold a snapshot of A's after B's; and a
// fresh restart restores every record (the input is trimmed, so a replay from sequence 1
// cannot pass for it).
func TestPausedIncarnationIsFencedWhenItResumes(t *testing.T) {
	const inst = "counter-0"
	s := newStack(t, stackOptions{instances: []string{inst}})
	ctx := ctxFor(t, 120*time.Second)
	stop := s.feed(ctx, inst, 5*time.Millisecond, 1)
	defer stop()
	if _, err := s.waitCovered(ctx, inst, 100); err != nil {
		t.Fatal(err)
	}
	a := s.ops[inst]
	aInc := a.Incarnation()
	st, err := s.state(ctx, inst)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Pause(); err != nil {
		t.Fatal(err)
	}
	t.Logf("A (%s) paused at position %d", aInc, st.Position)

	b := s.operatorProc(inst+"-newer", inst, false)
	s.extra = append(s.extra, b)
	if err := b.Start(); err != nil {
		t.Fatal(err)
	}
	if err := b.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	bInc := b.Incarnation()
	// A paused after its position: B's checkpoints trim past it, and past everything A
	// had fetched before the pause.
	first, err := s.waitTrimmed(ctx, inst, st.Position+50)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("B (%s) trimmed the input up to %d", bInc, first)
	if err := b.Terminate(20 * time.Second); err != nil {
		t.Fatalf("B's clean stop: %v", err)
	}

	if _, err := a.Resume(); err != nil {
		t.Fatal(err)
	}
	code, err := a.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if code == 0 {
		t.Fatalf("A exited with code 0 after it resumed; want non-zero. Last lines:\n%s", a.Tail(10))
	}
	if !slices.ContainsFunc(a.Lines(), func(l string) bool {
		return strings.HasPrefix(l, "cairn operator:") && strings.Contains(l, "replaced by incarnation "+bInc)
	}) {
		t.Fatalf("A did not stop with ErrReplaced naming B (%s); last lines:\n%s", bInc, a.Tail(10))
	}

	// No manifest written after B's first holds anything of A's.
	ms, err := s.manifests(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ms {
		if is := m.Instances[inst]; is.Incarnation == aInc && m.CheckpointID > 0 && slices.ContainsFunc(ms, func(o messages.Manifest) bool {
			return o.CheckpointID < m.CheckpointID && o.Instances[inst].Incarnation == bInc
		}) {
			t.Errorf("manifest %d holds a snapshot of the paused incarnation A after one of B's", m.CheckpointID)
		}
	}

	last, err := stop()
	if err != nil {
		t.Fatal(err)
	}
	fresh := s.operatorProc(inst+"-fresh", inst, false)
	s.ops[inst] = fresh
	if err := fresh.Start(); err != nil {
		t.Fatal(err)
	}
	if err := fresh.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	s.assertExact(ctx, inst, last)
	for _, e := range s.unexpected() {
		if !strings.HasPrefix(e, a.Name+" ") {
			t.Errorf("unexpected exit: %s", e)
		}
	}
}

// TestLostManifestsBucketRefusesANewStart is acceptance 3 of issue 13: with CAIRN_MANIFESTS
// deleted (and created again, as a service's start does), a member whose input was trimmed
// refuses to start as new (exit 1, naming the evidence); the coordinator reports the lost
// manifests at ERROR and in status; with --reset-state the member starts empty and a
// reset_state member event records why.
func TestLostManifestsBucketRefusesANewStart(t *testing.T) {
	const inst = "counter-0"
	s := newStack(t, stackOptions{instances: []string{inst}})
	ctx := ctxFor(t, 120*time.Second)
	stop := s.feed(ctx, inst, 5*time.Millisecond, 1)
	if _, err := s.waitCovered(ctx, inst, 100); err != nil {
		t.Fatal(err)
	}
	if first, err := s.trimBelowRetained(ctx, inst); err != nil || first <= 1 {
		t.Fatalf("trim the input of %s: first sequence %d, %v", inst, first, err)
	}
	if _, err := stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ops[inst].Kill(); err != nil {
		t.Fatal(err)
	}
	if err := s.js.DeleteKeyValue(ctx, cairnjs.ManifestBucket); err != nil {
		t.Fatal(err)
	}
	res, err := cairnjs.Ensure(ctx, s.js, cairnjs.Options{LeaseTTL: leaseTTL, Only: []string{cairnjs.ManifestBucket}})
	if err != nil {
		t.Fatal(err)
	}
	s.res.Manifests = res.Manifests

	refused := s.operatorProc(inst+"-refused", inst, false)
	s.extra = append(s.extra, refused)
	if err := refused.Start(); err != nil {
		t.Fatal(err)
	}
	code, err := refused.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if code != 1 || !slices.ContainsFunc(refused.Lines(), func(l string) bool {
		return strings.HasPrefix(l, "cairn operator: member has no usable snapshot") && strings.Contains(l, "it had state") &&
			strings.Contains(l, "became a member at checkpoint") && strings.Contains(l, "--reset-state")
	}) {
		t.Fatalf("start after the manifests were lost: exit %d; want 1 and ErrNoUsableSnapshot naming the evidence. Last lines:\n%s", code, refused.Tail(10))
	}

	reset := s.proc(inst+"-reset", "operator", "--job", s.job, "--instance", inst, "--reset-state")
	s.ops[inst] = reset
	if err := reset.Start(); err != nil {
		t.Fatal(err)
	}
	if err := reset.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	ev, err := lastMemberEvent(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	if ev.Kind != messages.MemberResetState || ev.Instance != inst || !strings.Contains(ev.Detail, "its checkpoints are lost") {
		t.Fatalf("member event %+v, want a reset_state event saying the checkpoints are lost", ev)
	}
	if err := proctest.Poll(ctx, 50*time.Millisecond, "the manifests_lost alarm in status", func() (bool, error) {
		st, err := s.status(ctx)
		if err != nil {
			return false, nil
		}
		return slices.ContainsFunc(st.Alarms, func(a messages.Alarm) bool { return a.Kind == messages.AlarmManifestsLost }), nil
	}); err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(s.coordinator.Lines(), func(l string) bool {
		return strings.Contains(l, `"level":"error"`) && strings.Contains(l, "manifests are lost")
	}) {
		t.Fatal("the coordinator logged no ERROR about the lost manifests")
	}
	seen := s.completions()
	if err := s.waitCompletions(ctx, seen, 3); err != nil {
		t.Fatalf("checkpoints after the reset: %v", err)
	}
}

// lastMemberEvent reads the job's newest member event.
func lastMemberEvent(ctx context.Context, s *stack) (messages.MemberEvent, error) {
	var ev messages.MemberEvent
	m, err := s.res.Checkpoints.GetLastMsgForSubject(ctx, subjects.MemberEvents(s.job))
	if err != nil {
		return ev, fmt.Errorf("last member event: %w", err)
	}
	return ev, messages.Unmarshal(m.Data, &ev)
}

// TestStrangerBarrierChangesNothing is acceptance 4 of issue 13: barriers no lease holder
// sent (an id of 10^12, a token of 2^40, or a token copied from a real barrier with a huge
// id) are ignored; checkpoints keep completing and the state stays exact.
func TestStrangerBarrierChangesNothing(t *testing.T) {
	const inst = "counter-0"
	s := newStack(t, stackOptions{instances: []string{inst}})
	ctx := ctxFor(t, 90*time.Second)
	stop := s.feed(ctx, inst, 5*time.Millisecond, 1)
	defer stop()
	barriers := make(chan *nats.Msg, 64)
	sub, err := s.nc.ChanSubscribe(subjects.Barrier(s.job), barriers)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	var real messages.Barrier
	select {
	case m := <-barriers:
		if err := messages.Unmarshal(m.Data, &real); err != nil {
			t.Fatal(err)
		}
	case <-ctx.Done():
		t.Fatal("no barrier seen")
	}
	for _, forged := range []messages.Barrier{
		{CheckpointID: 1_000_000_000_000, Token: 1 << 40},
		{CheckpointID: 1_000_000_000_000, Token: real.Token},
		{CheckpointID: real.CheckpointID + 1, Token: 1 << 40},
	} {
		forged.Schema, forged.Job, forged.Coordinator, forged.TriggeredAt = messages.SchemaVersion, s.job, "stranger", time.Now().UTC()
		data, err := messages.Marshal(&forged)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.nc.Publish(subjects.Barrier(s.job), data); err != nil {
			t.Fatal(err)
		}
	}
	seen := s.completions()
	wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	err = s.waitCompletions(wctx, seen, 10)
	cancel()
	if err != nil {
		t.Fatalf("checkpoints after the stranger's barriers: %d completed, want 10: %v", s.completions()-seen, err)
	}
	last, err := stop()
	if err != nil {
		t.Fatal(err)
	}
	s.assertExact(ctx, inst, last)
	if !slices.ContainsFunc(s.ops[inst].Lines(), func(l string) bool { return strings.Contains(l, "barrier ignored") }) {
		t.Error("the operator did not warn about the stranger's barriers")
	}
}

// checkReferencedObjects fails the test unless every object a retained manifest references
// is stored with the size and digest the manifest says.
func checkReferencedObjects(ctx context.Context, t *testing.T, s *stack) {
	t.Helper()
	ms, err := s.retained(ctx)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, m := range ms {
		for inst, is := range m.Instances {
			for _, ref := range is.Refs() {
				info, err := s.snapshots(ctx).GetInfo(ctx, ref.Object)
				switch {
				case errors.Is(err, jetstream.ErrObjectNotFound):
					t.Errorf("manifest %d, %s: object %s is gone", m.CheckpointID, inst, ref.Object)
				case err != nil:
					t.Fatal(err)
				case info.Digest != ref.Digest || info.Size != ref.Size:
					t.Errorf("manifest %d, %s: object %s holds %d bytes with %s; the manifest says %d bytes with %s",
						m.CheckpointID, inst, ref.Object, info.Size, info.Digest, ref.Size, ref.Digest)
				}
				n++
			}
		}
	}
	t.Logf("%d object references of %d retained manifests checked", n, len(ms))
}
