package operator_test

import (
	"errors"
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

// record reads an instance record of the test's job.
func (e *env) record(instance string) messages.InstanceRecord {
	e.t.Helper()
	en, err := e.res.Instances.Get(e.ctx(), cairnjs.InstanceKey(testJob, instance))
	if err != nil {
		e.t.Fatalf("instance record of %s: %v", instance, err)
	}
	var rec messages.InstanceRecord
	if err := messages.Unmarshal(en.Value(), &rec); err != nil {
		e.t.Fatal(err)
	}
	return rec
}

// claimAs makes the instance record name incarnation as the instance's newest, as a
// newer process does at its start.
func (e *env) claimAs(instance, incarnation string) {
	e.t.Helper()
	if _, err := cairnjs.UpdateKey(e.ctx(), e.nc, e.res.Instances, cairnjs.InstanceKey(testJob, instance), func(cur []byte) ([]byte, error) {
		rec := messages.InstanceRecord{Schema: messages.SchemaVersion, Job: testJob, Instance: instance}
		if cur != nil {
			if err := messages.Unmarshal(cur, &rec); err != nil {
				return nil, err
			}
		}
		rec.Incarnation, rec.Claims, rec.ClaimedAt, rec.StoppedAt = incarnation, rec.Claims+1, time.Now().UTC(), time.Time{}
		return messages.Marshal(&rec)
	}); err != nil {
		e.t.Fatal(err)
	}
}

// TestCleanStopMarksTheInstanceRecord: each start claims the record (the claims count
// up), a clean stop marks it and never deletes it.
func TestCleanStopMarksTheInstanceRecord(t *testing.T) {
	e := newEnv(t)
	r1 := e.start("counter-0", refop.NewAggregator())
	if rec := e.record("counter-0"); rec.Incarnation != r1.rt.Incarnation() || rec.Claims != 1 || !rec.StoppedAt.IsZero() {
		t.Fatalf("record while the first incarnation runs: %+v", rec)
	}
	r1.stop(t)
	if rec := e.record("counter-0"); rec.Incarnation != r1.rt.Incarnation() || rec.StoppedAt.IsZero() {
		t.Fatalf("record after a clean stop: %+v, want the stop marked", rec)
	}
	r2 := e.start("counter-0", refop.NewAggregator())
	if rec := e.record("counter-0"); rec.Incarnation != r2.rt.Incarnation() || rec.Claims != 2 || !rec.StoppedAt.IsZero() {
		t.Fatalf("record after the second start: %+v", rec)
	}
}

// TestRegistrationGoneIsTakenAgainOnlyByTheNewest: an incarnation whose registration
// vanished registers again while the instance record still names it; once a newer
// incarnation claimed the record (it started, and may have run and stopped cleanly since),
// the older one is fenced instead, and publishes nothing more.
func TestRegistrationGoneIsTakenAgainOnlyByTheNewest(t *testing.T) {
	e := newEnv(t)
	r := e.start("counter-0", refop.NewAggregator())
	key := cairnjs.RegistrationKey(testJob, "counter-0")
	if err := e.res.Leases.Delete(e.ctx(), key); err != nil {
		t.Fatal(err)
	}
	natstest.Eventually(t, waitLong, "the registration was not taken again", func() bool {
		en, err := e.res.Leases.Get(e.ctx(), key)
		return err == nil && strings.Contains(string(en.Value()), r.rt.Incarnation())
	})
	if a := e.checkpoint(1); a.Incarnation != r.rt.Incarnation() {
		t.Fatalf("ack %+v", a)
	}

	e.claimAs("counter-0", "newer")
	if err := e.res.Leases.Delete(e.ctx(), key); err != nil {
		t.Fatal(err)
	}
	err := r.result(t, waitLong)
	if !errors.Is(err, operator.ErrReplaced) || !strings.Contains(err.Error(), "replaced by incarnation newer") {
		t.Fatalf("Run = %v, want ErrReplaced naming the newer incarnation", err)
	}
	if _, err := e.res.Leases.Get(e.ctx(), key); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Fatalf("registration after the fenced incarnation stopped: %v, want none", err)
	}
	e.barrier(2)
	if err := e.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	select {
	case msg := <-e.coord.Acks():
		t.Fatalf("the fenced incarnation answered: %s", msg.Data)
	case <-time.After(500 * time.Millisecond):
	}
}

// TestForgedBarriersAreIgnored: a barrier whose token is above the job's lease, or whose
// id jumps above the job's id counter, comes from no lease holder. The instance ignores
// it and goes on answering the real barriers below it.
func TestForgedBarriersAreIgnored(t *testing.T) {
	e := newEnv(t)
	r := e.start("counter-0", refop.NewAggregator())
	last := e.publishEvents("counter-0", map[string]messages.KeyTotals{}, makeEvents(5, 1, "a")...)
	waitPosition(t, r.rt, last)
	e.barrierWithToken(1, 3)
	if a := e.nextAck(); a.CheckpointID != 1 {
		t.Fatalf("ack %+v, want checkpoint 1", a)
	}
	for _, forged := range []messages.Barrier{
		{CheckpointID: 1_000_000_000_000, Token: 1 << 40},
		{CheckpointID: 1_000_000_000_000, Token: 3},
		{CheckpointID: 2, Token: 1 << 40},
	} {
		e.coord.SendForged(forged)
	}
	for id := uint64(2); id <= 4; id++ {
		e.barrierWithToken(id, 3+id)
		if a := e.nextAck(); a.CheckpointID != id || a.Kind == messages.AckDeclined {
			t.Fatalf("ack %+v, want an ack of checkpoint %d", a, id)
		}
	}
	if !e.logged(`"level":"warn"`, "barrier ignored") {
		t.Fatal("no warning about the ignored barriers")
	}
}

// TestInputRemovedUnderTheConsumerStopsTheRuntime: records removed from the input stream
// before the consumer delivered them (a purge past the position while the instance was cut
// off, as a newer incarnation's trimming does) stop the runtime with ErrInputRemoved
// before any record after the gap is applied.
func TestInputRemovedUnderTheConsumerStopsTheRuntime(t *testing.T) {
	s := natstest.Start(t)
	e := newEnvOn(t, s)
	// The runtime's own connection, slow to reconnect: the gap is made while it is away.
	nc, err := nats.Connect(s.URL, nats.MaxReconnects(-1), nats.CustomReconnectDelay(func(int) time.Duration { return 2 * time.Second }))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	cfg := operator.DefaultConfig(testJob, "counter-0")
	cfg.Logger = e.logger()
	rt, err := operator.New(nc, cfg, refop.NewAggregator())
	if err != nil {
		t.Fatal(err)
	}
	r := e.run(rt, rt.Run)
	first := e.publishEvents("counter-0", map[string]messages.KeyTotals{}, event{"a", 1})
	waitPosition(t, rt, first)

	id, err := nc.GetClientID()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.DisconnectClientByID(id); err != nil {
		t.Fatal(err)
	}
	last := e.publishEvents("counter-0", map[string]messages.KeyTotals{}, makeEvents(1000, 1, "a", "b")...)
	cut := last - 100
	if err := e.res.Input.Purge(e.ctx(), jetstream.WithPurgeSubject(e.subj.Input(testJob, "counter-0")), jetstream.WithPurgeSequence(cut)); err != nil {
		t.Fatal(err)
	}
	err = r.result(t, waitLong)
	if !errors.Is(err, operator.ErrInputRemoved) || !strings.Contains(err.Error(), "no longer holds sequence") {
		t.Fatalf("Run = %v, want ErrInputRemoved", err)
	}
	if pos := rt.Position(); pos >= cut {
		t.Fatalf("position %d: records after the gap (from %d) were applied", pos, cut)
	}
}

// TestLostManifestsRefuseANewStart: a member whose manifests are gone starts neither as
// new nor silently: its instance record (or the job's last completed checkpoint event)
// says it had state, so Run refuses with ErrNoUsableSnapshot; ResetState starts it empty
// on purpose and records a member event saying why.
func TestLostManifestsRefuseANewStart(t *testing.T) {
	tests := []struct {
		name string
		// evidence leaves what tells the instance had state, after its checkpoint 1.
		evidence func(e *env, ack messages.Ack)
		want     string
	}{
		{
			name: "instance record",
			evidence: func(e *env, _ messages.Ack) {
				// A restart restores checkpoint 1 and records the membership.
				r := e.start("counter-0", refop.NewAggregator())
				r.stop(e.t)
			},
			want: "says it became a member at checkpoint 1",
		},
		{
			name: "last completed event",
			evidence: func(e *env, _ messages.Ack) {
				data, err := messages.Marshal(&messages.CheckpointEvent{Schema: messages.SchemaVersion, Job: testJob, CheckpointID: 1,
					Outcome: messages.Completed, Participants: []string{"counter-0"}})
				if err != nil {
					e.t.Fatal(err)
				}
				if _, err := e.js.Publish(e.ctx(), e.subj.CheckpointEvent(testJob, "completed"), data); err != nil {
					e.t.Fatal(err)
				}
			},
			want: "last completed checkpoint 1 lists it as a participant",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			r := e.start("counter-0", refop.NewAggregator())
			last := e.publishEvents("counter-0", map[string]messages.KeyTotals{}, makeEvents(5, 1, "a")...)
			waitPosition(t, r.rt, last)
			ack := e.checkpoint(1)
			e.writeManifest(1, ack)
			r.stop(t)
			tt.evidence(e, ack)

			// The job's manifests are deleted.
			for _, k := range []string{cairnjs.LatestKey(testJob), cairnjs.ManifestKey(testJob, 1)} {
				if err := e.res.Manifests.Purge(e.ctx(), k); err != nil {
					t.Fatal(err)
				}
			}

			err := e.startErr(operator.DefaultConfig(testJob, "counter-0"), refop.NewAggregator())
			if !errors.Is(err, operator.ErrNoUsableSnapshot) || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), "--reset-state") {
				t.Fatalf("Run = %v, want ErrNoUsableSnapshot saying %q", err, tt.want)
			}

			cfg := operator.DefaultConfig(testJob, "counter-0")
			cfg.ResetState = true
			e.startWith(cfg, refop.NewAggregator())
			evs := e.memberEvents()
			if len(evs) != 1 {
				t.Fatalf("member events %+v, want one", evs)
			}
			ev := evs[0]
			if ev.Kind != messages.MemberResetState || !strings.Contains(ev.Detail, "its checkpoints are lost") || !strings.Contains(ev.Detail, tt.want) {
				t.Fatalf("member event %+v, want a reset_state event saying the checkpoints are lost", ev)
			}
		})
	}
}

// TestNewInstanceStartsWhenNothingSaysItHadState: no manifest, no membership in its
// record, no completed event listing it: a new instance, started empty.
func TestNewInstanceStartsWhenNothingSaysItHadState(t *testing.T) {
	e := newEnv(t)
	e.claimAs("counter-0", "earlier")
	e.coord.Event(1, messages.Aborted, messages.AbortTimeout)
	r := e.start("counter-0", refop.NewAggregator())
	if r.rt.Position() != 0 {
		t.Fatalf("position %d, want an empty start", r.rt.Position())
	}
}
