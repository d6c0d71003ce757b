package operator_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cairn-stream/cairn/pkg/cairnjs"
	"github.com/cairn-stream/cairn/pkg/messages"
	"github.com/cairn-stream/cairn/pkg/operator"
	refop "github.com/cairn-stream/cairn/services/aggregator"
)

// memberWithTwoCheckpoints runs counter-0 through checkpoints 1 and 2 (both manifests
// written, each with its own object) and stops it. It returns the two acks and the totals
// of every event published.
func memberWithTwoCheckpoints(e *env) (ack1, ack2 messages.Ack, totals map[string]messages.KeyTotals) {
	e.t.Helper()
	totals = map[string]messages.KeyTotals{}
	r := e.start("counter-0", refop.NewAggregator())
	last := e.publishEvents("counter-0", totals, makeEvents(10, 1, "a", "b")...)
	waitPosition(e.t, r.rt, last)
	ack1 = e.checkpoint(1)
	e.writeManifest(1, ack1)
	last = e.publishEvents("counter-0", totals, makeEvents(10, 5, "b", "c")...)
	waitPosition(e.t, r.rt, last)
	ack2 = e.checkpoint(2)
	e.writeManifest(2, ack2)
	r.stop(e.t)
	return ack1, ack2, totals
}

// memberEvents returns the member events of the test job stored in CAIRN_CHECKPOINTS.
func (e *env) memberEvents() []messages.MemberEvent {
	e.t.Helper()
	cons, err := e.js.OrderedConsumer(e.ctx(), cairnjs.CheckpointStream, jetstream.OrderedConsumerConfig{FilterSubjects: []string{e.subj.MemberEvents(testJob)}})
	if err != nil {
		e.t.Fatal(err)
	}
	batch, err := cons.FetchNoWait(100)
	if err != nil {
		e.t.Fatal(err)
	}
	var evs []messages.MemberEvent
	for m := range batch.Messages() {
		var ev messages.MemberEvent
		if err := messages.Unmarshal(m.Data(), &ev); err != nil {
			e.t.Fatalf("member event: %v", err)
		}
		evs = append(evs, ev)
	}
	if err := batch.Error(); err != nil {
		e.t.Fatal(err)
	}
	return evs
}

func TestMemberWithoutUsableSnapshotRefusesToStart(t *testing.T) {
	e := newEnv(t)
	ack1, ack2, totals := memberWithTwoCheckpoints(e)
	if err := e.coord.Snapshots().Delete(e.ctx(), ack2.Snapshot.Object); err != nil {
		t.Fatal(err)
	}
	if _, err := e.coord.Snapshots().PutBytes(e.ctx(), ack1.Snapshot.Object, []byte("not the snapshot")); err != nil {
		t.Fatal(err)
	}

	err := e.startErr(operator.DefaultConfig(testJob, "counter-0"), refop.NewAggregator())
	if !errors.Is(err, operator.ErrNoUsableSnapshot) {
		t.Fatalf("Run = %v, want ErrNoUsableSnapshot", err)
	}
	for _, want := range []string{
		"job orders", "instance counter-0",
		"checkpoint 2: object " + ack2.Snapshot.Object + " missing",
		"checkpoint 1: snapshot does not match the manifest: object " + ack1.Snapshot.Object,
		"--reset-state",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	if _, err := e.res.Leases.Get(e.ctx(), cairnjs.RegistrationKey(testJob, "counter-0")); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Fatalf("registration after a refused start: %v, want none", err)
	}
	if evs := e.memberEvents(); len(evs) != 0 {
		t.Fatalf("member events after a refused start: %+v", evs)
	}

	// An instance the manifests do not hold is new: it starts empty, without complaint.
	r1 := e.start("counter-1", refop.NewAggregator())
	if r1.rt.Position() != 0 || !e.logged(`"level":"info"`, `"incarnation":"`+r1.rt.Incarnation()+`"`, `"message":"not a member of the job`) {
		t.Fatalf("new instance: position %d; want an empty start logged as a new instance", r1.rt.Position())
	}

	// Reset on purpose: starts empty, reads all the input again, and says so.
	cfg := operator.DefaultConfig(testJob, "counter-0")
	cfg.ResetState = true
	agg := refop.NewAggregator()
	r := e.startWith(cfg, agg)
	waitPosition(t, r.rt, ack2.Positions[cairnjs.InputStream])
	keys, _, _ := aggState(t, r.rt, agg)
	checkTotals(t, keys, totals)
	if got := r.rt.Stats().Applied; got != 20 {
		t.Fatalf("reset instance applied %d records, want all 20 from the start", got)
	}
	if !e.logged(`"level":"warn"`, `"job":"orders","instance":"counter-0","incarnation":"`+r.rt.Incarnation()+`"`, `"dropped_checkpoint":2`, `"message":"reset state`) {
		t.Fatal("reset not logged at warn level")
	}
	evs := e.memberEvents()
	if len(evs) != 1 {
		t.Fatalf("member events %+v, want one reset", evs)
	}
	if ev := evs[0]; ev.Kind != messages.MemberResetState || ev.Instance != "counter-0" || ev.Incarnation != r.rt.Incarnation() || ev.Checkpoint != 2 || !strings.Contains(ev.Detail, ack2.Snapshot.Object) {
		t.Fatalf("member event %+v, want reset_state of counter-0 dropping checkpoint 2", ev)
	}
}

func TestMembershipFromRetainedManifestsWhenLatestIsUnreadable(t *testing.T) {
	e := newEnv(t)
	ack1, _, totals := memberWithTwoCheckpoints(e)
	if _, err := e.res.Manifests.Put(e.ctx(), cairnjs.LatestKey(testJob), []byte("garbage")); err != nil {
		t.Fatal(err)
	}
	if err := e.res.Manifests.Delete(e.ctx(), cairnjs.ManifestKey(testJob, 2)); err != nil {
		t.Fatal(err)
	}
	agg := refop.NewAggregator()
	r := e.start("counter-0", agg)
	waitPosition(t, r.rt, ack1.Positions[cairnjs.InputStream]+10)
	keys, _, _ := aggState(t, r.rt, agg)
	checkTotals(t, keys, totals)
	if got := r.rt.Stats().Applied; got != 10 {
		t.Fatalf("applied %d records, want the 10 after checkpoint 1", got)
	}

	// Without a usable snapshot in the retained manifests it refuses, naming the
	// unreadable latest manifest.
	r.stop(t)
	if err := e.coord.Snapshots().Delete(e.ctx(), ack1.Snapshot.Object); err != nil {
		t.Fatal(err)
	}
	err := e.startErr(operator.DefaultConfig(testJob, "counter-0"), refop.NewAggregator())
	if !errors.Is(err, operator.ErrNoUsableSnapshot) || !strings.Contains(err.Error(), "manifest unreadable: orders.latest") {
		t.Fatalf("Run = %v, want ErrNoUsableSnapshot naming the unreadable latest manifest", err)
	}
}

// gapEnv is an input stream of its own for the gap tests.
type gapEnv struct {
	*env
	stream, own, other string
}

func newGapEnv(t *testing.T, limits jetstream.StreamConfig) *gapEnv {
	t.Helper()
	e := newEnv(t)
	name := fmt.Sprintf("GAP_%d", time.Now().UnixNano())
	g := &gapEnv{env: e, stream: name, own: "gap." + name + ".counter-0", other: "gap." + name + ".other"}
	cfg := limits
	cfg.Name = name
	cfg.Subjects = []string{"gap." + name + ".>"}
	cfg.Storage = jetstream.MemoryStorage
	if _, err := e.js.CreateStream(e.ctx(), cfg); err != nil {
		t.Fatal(err)
	}
	return g
}

func (g *gapEnv) config() operator.Config {
	cfg := operator.DefaultConfig(testJob, "counter-0")
	cfg.InputStream, cfg.InputFilters = g.stream, []string{g.own}
	return cfg
}

// publishTo publishes n events with value 1 and key k to subject; it returns the last
// sequence.
func (g *gapEnv) publishTo(subject string, n int) uint64 {
	g.t.Helper()
	var seq uint64
	for range n {
		ack, err := g.js.Publish(g.ctx(), subject, []byte(`{"key":"k","value":1}`))
		if err != nil {
			g.t.Fatal(err)
		}
		seq = ack.Sequence
	}
	return seq
}

func (g *gapEnv) purge(subject string, below uint64) {
	g.t.Helper()
	st, err := g.js.Stream(g.ctx(), g.stream)
	if err != nil {
		g.t.Fatal(err)
	}
	if err := st.Purge(g.ctx(), jetstream.WithPurgeSubject(subject), jetstream.WithPurgeSequence(below)); err != nil {
		g.t.Fatal(err)
	}
}

func TestInputGap(t *testing.T) {
	tests := []struct {
		name   string
		limits jetstream.StreamConfig
		// stopped changes the stream while no runtime runs; pos is the restored position.
		stopped func(g *gapEnv, pos uint64)
		accept  bool
		// gap lists what the refusal must say; nil: the start goes on.
		gap []string
	}{
		{
			name:   "max_msgs overflowed past the position",
			limits: jetstream.StreamConfig{MaxMsgs: 10},
			stopped: func(g *gapEnv, _ uint64) {
				g.publishTo(g.other, 20)
			},
			gap: []string{"job orders", "instance counter-0", "input stream GAP_", "filters gap.GAP_", "includes sequence 5", "first sequence is 16", "limit max_msgs 10", "--accept-input-gap"},
		},
		{
			name:    "max_msgs overflowed, accepted",
			limits:  jetstream.StreamConfig{MaxMsgs: 10},
			stopped: func(g *gapEnv, _ uint64) { g.publishTo(g.other, 20) },
			accept:  true,
		},
		{
			name:   "max_msgs removed other subjects only",
			limits: jetstream.StreamConfig{MaxMsgs: 10},
			stopped: func(g *gapEnv, pos uint64) {
				g.purge(g.own, pos+1)
				g.publishTo(g.other, 8)
			},
		},
		{
			name:   "own subject purged below the position",
			limits: jetstream.StreamConfig{MaxMsgs: 100, MaxAge: time.Hour, MaxBytes: 1 << 20},
			stopped: func(g *gapEnv, pos uint64) {
				g.purge(g.own, pos)
				g.publishTo(g.own, 3)
			},
		},
		{
			name: "other subjects trimmed past the position, no limits",
			stopped: func(g *gapEnv, pos uint64) {
				g.publishTo(g.other, 10)
				g.purge(g.own, pos+1)
				g.purge(g.other, 0)
				g.publishTo(g.own, 3)
			},
		},
		{
			name:   "max_age with the message at the position gone",
			limits: jetstream.StreamConfig{MaxAge: time.Hour},
			stopped: func(g *gapEnv, pos uint64) {
				g.publishTo(g.other, 5)
				g.purge(g.own, pos+1)
				g.purge(g.other, 0)
				g.publishTo(g.own, 3)
			},
			gap: []string{"first sequence is 11", "limit max_age 1h0m0s may have removed them (the message at the position is gone too)"},
		},
		{
			name:   "per-subject limit kept the message at the position",
			limits: jetstream.StreamConfig{MaxMsgsPerSubject: 3},
		},
		{
			name:    "per-subject limit removed input after the position",
			limits:  jetstream.StreamConfig{MaxMsgsPerSubject: 3},
			stopped: func(g *gapEnv, _ uint64) { g.publishTo(g.own, 4) },
			gap:     []string{"limit max_msgs_per_subject 3: subject gap.GAP_"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := newGapEnv(t, tt.limits)
			r := g.startWith(g.config(), refop.NewAggregator())
			pos := g.publishTo(g.own, 5)
			waitPosition(t, r.rt, pos)
			ack := g.checkpoint(1)
			g.writeManifest(1, ack)
			r.stop(t)
			if tt.stopped != nil {
				tt.stopped(g, pos)
			}

			cfg := g.config()
			cfg.AcceptInputGap = tt.accept
			if tt.gap != nil {
				err := g.startErr(cfg, refop.NewAggregator())
				if !errors.Is(err, operator.ErrInputGap) {
					t.Fatalf("Run = %v, want ErrInputGap", err)
				}
				for _, want := range tt.gap {
					if !strings.Contains(err.Error(), want) {
						t.Errorf("error %q does not say %q", err, want)
					}
				}
				return
			}
			r2 := g.startWith(cfg, refop.NewAggregator())
			if r2.rt.Position() < pos || r2.rt.Stats().Applied > 3 {
				t.Fatalf("position %d after applying %d records, want the state restored at %d", r2.rt.Position(), r2.rt.Stats().Applied, pos)
			}
			evs := g.memberEvents()
			if !tt.accept {
				if len(evs) != 0 {
					t.Fatalf("member events %+v, want none", evs)
				}
				return
			}
			if len(evs) != 1 || evs[0].Kind != messages.MemberInputGapAccepted || evs[0].Checkpoint != 1 || evs[0].Incarnation != r2.rt.Incarnation() || !strings.Contains(evs[0].Detail, "limit max_msgs 10") {
				t.Fatalf("member events %+v, want one input_gap_accepted of checkpoint 1", evs)
			}
			if !g.logged(`"level":"warn"`, `"incarnation":"`+r2.rt.Incarnation()+`"`, `"message":"input gap accepted`) {
				t.Fatal("accepted gap not logged at warn level")
			}
		})
	}
}
