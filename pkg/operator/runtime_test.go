package operator_test

import (
	"context"
	"errors"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cairn-stream/cairn/internal/natstest"
	"github.com/cairn-stream/cairn/pkg/cairnjs"
	"github.com/cairn-stream/cairn/pkg/messages"
	"github.com/cairn-stream/cairn/pkg/operator"
	refop "github.com/cairn-stream/cairn/services/aggregator"
)

func TestSnapshotOnBarrier(t *testing.T) {
	e := newEnv(t)
	agg := refop.NewAggregator()
	r := e.start("counter-0", agg)
	totals := map[string]messages.KeyTotals{}
	last := e.publishEvents("counter-0", totals, makeEvents(20, 1, "a", "b", "c")...)
	waitPosition(t, r.rt, last)

	ack := e.checkpoint(1)
	if ack.Job != testJob || ack.Instance != "counter-0" || ack.Incarnation != r.rt.Incarnation() {
		t.Fatalf("ack names %s/%s/%s, want %s/counter-0/%s", ack.Job, ack.Instance, ack.Incarnation, testJob, r.rt.Incarnation())
	}
	if want := cairnjs.ObjectName(testJob, 1, "counter-0", r.rt.Incarnation()); ack.Snapshot.Object != want {
		t.Fatalf("object %q, want %q", ack.Snapshot.Object, want)
	}
	size, digest := e.objectDigest(ack.Snapshot.Object)
	if size != ack.Snapshot.Size || digest != ack.Snapshot.Digest {
		t.Fatalf("object has %d bytes, %s; ack says %d, %s", size, digest, ack.Snapshot.Size, ack.Snapshot.Digest)
	}
	info, err := e.coord.Snapshots().GetInfo(e.ctx(), ack.Snapshot.Object)
	if err != nil {
		t.Fatal(err)
	}
	if info.Digest != ack.Snapshot.Digest {
		t.Fatalf("object store digest %s, ack %s", info.Digest, ack.Snapshot.Digest)
	}
	if got := ack.Positions[cairnjs.InputStream]; got != last || len(ack.Positions) != 1 {
		t.Fatalf("positions %v, want {%s: %d}", ack.Positions, cairnjs.InputStream, last)
	}
	if f := ack.Filters[cairnjs.InputStream]; len(ack.Filters) != 1 || !slices.Equal(f, []string{e.subj.Input(testJob, "counter-0")}) {
		t.Fatalf("filters %v, want {%s: [%s]}", ack.Filters, cairnjs.InputStream, e.subj.Input(testJob, "counter-0"))
	}

	// A repeated barrier (the coordinator lacks the ack) is answered with the same ack;
	// the next new one with a new snapshot.
	e.barrier(1)
	if again := e.nextAck(); again.CheckpointID != 1 || again.Snapshot != ack.Snapshot || again.Incarnation != ack.Incarnation {
		t.Fatalf("ack to a repeated barrier %+v, want the first ack %+v", again, ack)
	}
	last = e.publishEvents("counter-0", totals, event{"d", 4})
	waitPosition(t, r.rt, last)
	if ack := e.checkpoint(2); ack.Positions[cairnjs.InputStream] != last {
		t.Fatalf("checkpoint 2 positions %v, want %d", ack.Positions, last)
	}
	keys, _, _ := aggState(t, r.rt, agg)
	checkTotals(t, keys, totals)
	if st := r.rt.Stats(); st.Acked != 2 || st.Applied != 21 || st.BytesUploaded == 0 {
		t.Fatalf("stats %+v", st)
	}
}

func TestExactlyOnceAcrossRestart(t *testing.T) {
	tests := []struct {
		name string
		// before and after are the events published before and after the barrier while
		// the first runtime runs; stopped are published while no runtime runs.
		before, after, stopped int
		// manifest says whether the checkpoint completes (its manifest is written).
		manifest bool
	}{
		{name: "from the checkpoint", before: 30, after: 20, stopped: 25, manifest: true},
		{name: "no manifest", before: 10, after: 40, stopped: 5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			totals := map[string]messages.KeyTotals{}
			r := e.start("counter-0", refop.NewAggregator())
			last := e.publishEvents("counter-0", totals, makeEvents(tt.before, 1, "a", "b", "c", "d")...)
			waitPosition(t, r.rt, last)
			ack := e.checkpoint(1)
			if tt.manifest {
				e.writeManifest(1, ack)
			}
			last = e.publishEvents("counter-0", totals, makeEvents(tt.after, 100, "b", "c", "e")...)
			waitPosition(t, r.rt, last)
			r.stop(t)
			last = e.publishEvents("counter-0", totals, makeEvents(tt.stopped, -50, "a", "f")...)

			agg := refop.NewAggregator()
			r2 := e.start("counter-0", agg)
			if r2.rt.Incarnation() == r.rt.Incarnation() {
				t.Fatal("restart kept the incarnation")
			}
			waitPosition(t, r2.rt, last)
			keys, rejected, pos := aggState(t, r2.rt, agg)
			if pos != last || rejected != 0 {
				t.Fatalf("position %d rejected %d, want %d and 0", pos, rejected, last)
			}
			checkTotals(t, keys, totals)
			replayed := uint64(tt.before + tt.after + tt.stopped)
			if tt.manifest {
				replayed = uint64(tt.after + tt.stopped)
			}
			if got := r2.rt.Stats().Applied; got != replayed {
				t.Fatalf("restarted runtime applied %d records, want %d", got, replayed)
			}
		})
	}
}

func TestUnchangedStateIsNotUploadedAgain(t *testing.T) {
	e := newEnv(t)
	r := e.start("counter-0", refop.NewAggregator())
	last := e.publishEvents("counter-0", map[string]messages.KeyTotals{}, makeEvents(10, 1, "a", "b")...)
	waitPosition(t, r.rt, last)
	first := e.checkpoint(1)
	second := e.checkpoint(2)
	if second.Snapshot != first.Snapshot {
		t.Fatalf("second ack references %+v, want the first object %+v", second.Snapshot, first.Snapshot)
	}
	if second.Positions[cairnjs.InputStream] != last {
		t.Fatalf("second ack positions %v, want %d", second.Positions, last)
	}
	if objs := e.objects(); len(objs) != 1 {
		t.Fatalf("objects %v, want only %s", objs, first.Snapshot.Object)
	}
	if st := r.rt.Stats(); st.Reused != 1 || st.BytesUploaded != first.Snapshot.Size {
		t.Fatalf("stats %+v, want 1 reuse and %d bytes uploaded", st, first.Snapshot.Size)
	}

	// After a restart with no new input, the restored object is referenced again.
	e.writeManifest(2, second)
	r.stop(t)
	r2 := e.start("counter-0", refop.NewAggregator())
	third := e.checkpoint(3)
	if third.Snapshot != first.Snapshot || third.Incarnation != r2.rt.Incarnation() {
		t.Fatalf("ack after restart %+v, want the object %+v of incarnation %s", third, first.Snapshot, r2.rt.Incarnation())
	}

	// A changed state is uploaded under the new checkpoint's name.
	e.publishEvents("counter-0", map[string]messages.KeyTotals{}, event{"c", 1})
	waitPosition(t, r2.rt, last+1)
	if fourth := e.checkpoint(4); fourth.Snapshot.Object != cairnjs.ObjectName(testJob, 4, "counter-0", r2.rt.Incarnation()) {
		t.Fatalf("changed state acked with %+v", fourth.Snapshot)
	}
	if objs := e.objects(); len(objs) != 2 {
		t.Fatalf("objects %v, want 2", objs)
	}
}

func TestFallsBackToRetainedManifest(t *testing.T) {
	tests := []struct {
		name   string
		damage func(e *env, object string)
	}{
		{name: "object missing", damage: func(e *env, object string) {
			if err := e.coord.Snapshots().Delete(e.ctx(), object); err != nil {
				e.t.Fatal(err)
			}
		}},
		{name: "object replaced", damage: func(e *env, object string) {
			if _, err := e.coord.Snapshots().PutBytes(e.ctx(), object, []byte("not the snapshot")); err != nil {
				e.t.Fatal(err)
			}
		}},
		{name: "object with a flipped byte", damage: func(e *env, object string) {
			data, err := e.coord.Snapshots().GetBytes(e.ctx(), object)
			if err != nil {
				e.t.Fatal(err)
			}
			data[len(data)-1] ^= 1
			if _, err := e.coord.Snapshots().PutBytes(e.ctx(), object, data); err != nil {
				e.t.Fatal(err)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			totals := map[string]messages.KeyTotals{}
			r := e.start("counter-0", refop.NewAggregator())
			last := e.publishEvents("counter-0", totals, makeEvents(15, 1, "a", "b", "c")...)
			waitPosition(t, r.rt, last)
			e.writeManifest(1, e.checkpoint(1))
			last = e.publishEvents("counter-0", totals, makeEvents(15, 7, "c", "d")...)
			waitPosition(t, r.rt, last)
			ack2 := e.checkpoint(2)
			e.writeManifest(2, ack2)
			last = e.publishEvents("counter-0", totals, makeEvents(5, 3, "a")...)
			waitPosition(t, r.rt, last)
			r.stop(t)

			tt.damage(e, ack2.Snapshot.Object)
			agg := refop.NewAggregator()
			r2 := e.start("counter-0", agg)
			waitPosition(t, r2.rt, last)
			keys, _, _ := aggState(t, r2.rt, agg)
			checkTotals(t, keys, totals)
			if got := r2.rt.Stats().Applied; got != 20 {
				t.Fatalf("applied %d records after the restart, want the 20 after checkpoint 1", got)
			}
			if !strings.Contains(e.logs.String(), `"level":"error","job":"orders","instance":"counter-0","incarnation":"`+r2.rt.Incarnation()+`","checkpoint":2`) {
				t.Fatal("the unusable snapshot of checkpoint 2 was not logged at error level")
			}
		})
	}
}

func TestMalformedEventsAreRejected(t *testing.T) {
	e := newEnv(t)
	agg := refop.NewAggregator()
	r := e.start("counter-0", agg)
	last := e.publish("counter-0",
		[]byte(`{"key":"a","value":1}`),
		[]byte(`{"key":"a","value":1.5}`),
		[]byte(`{"key":"a","value":"2"}`),
		[]byte(`{"key":"a"}`),
		[]byte(`{"key":"","value":1}`),
		[]byte(`{"key":"a","value":1,"extra":1}`),
		[]byte(`not json`),
		[]byte(``),
		[]byte(`{"key":"b","value":-4}`),
	)
	waitPosition(t, r.rt, last)
	keys, rejected, pos := aggState(t, r.rt, agg)
	checkTotals(t, keys, map[string]messages.KeyTotals{"a": {Count: 1, Sum: 1}, "b": {Count: 1, Sum: -4}})
	if rejected != 7 || pos != last {
		t.Fatalf("rejected %d position %d, want 7 and %d", rejected, pos, last)
	}
	if st := r.rt.Stats(); st.Rejected != 7 || st.Applied != 2 {
		t.Fatalf("stats %+v, want 7 rejected and 2 applied", st)
	}
}

func TestRegistration(t *testing.T) {
	e := newEnv(t)
	key := cairnjs.RegistrationKey(testJob, "counter-0")
	w, err := e.res.Leases.Watch(e.ctx(), key, jetstream.UpdatesOnly())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = w.Stop() }()

	r := e.start("counter-0", refop.NewAggregator())
	reg := e.registration(key)
	if reg.Incarnation != r.rt.Incarnation() || reg.Job != testJob || reg.Instance != "counter-0" || reg.StartedAt.IsZero() {
		t.Fatalf("registration %+v, want incarnation %s", reg, r.rt.Incarnation())
	}

	// Heartbeats keep the registration alive well past the bucket's 1s TTL.
	outlive := time.NewTimer(2500 * time.Millisecond)
	defer outlive.Stop()
	puts := 0
	for alive := true; alive; {
		select {
		case en := <-w.Updates():
			if en == nil {
				continue
			}
			if en.Operation() != jetstream.KeyValuePut {
				t.Fatalf("registration %s while the instance runs", en.Operation())
			}
			puts++
		case <-outlive.C:
			alive = false
		}
	}
	if puts < 4 {
		t.Fatalf("%d registration puts in 2.5s, want a heartbeat every third of the 1s TTL", puts)
	}

	r.stop(t)
	if _, err := e.res.Leases.Get(e.ctx(), key); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Fatalf("registration after a clean shutdown: %v, want it deleted", err)
	}

	r2 := e.start("counter-0", refop.NewAggregator())
	reg2 := e.registration(key)
	if reg2.Incarnation != r2.rt.Incarnation() || reg2.Incarnation == reg.Incarnation {
		t.Fatalf("incarnation after restart %s (runtime %s), first was %s", reg2.Incarnation, r2.rt.Incarnation(), reg.Incarnation)
	}
}

func (e *env) registration(key string) messages.Registration {
	e.t.Helper()
	en, err := e.res.Leases.Get(e.ctx(), key)
	if err != nil {
		e.t.Fatalf("registration %s: %v", key, err)
	}
	var reg messages.Registration
	if err := messages.Unmarshal(en.Value(), &reg); err != nil {
		e.t.Fatal(err)
	}
	return reg
}

func TestRuntimeRunsOnce(t *testing.T) {
	e := newEnv(t)
	r := e.start("counter-0", refop.NewAggregator())
	if err := r.rt.Run(context.Background()); !errors.Is(err, operator.ErrAlreadyStarted) {
		t.Fatalf("second Run = %v, want ErrAlreadyStarted", err)
	}
	r.stop(t)
	if err := r.rt.Do(context.Background(), func() {}); !errors.Is(err, operator.ErrStopped) {
		t.Fatalf("Do after Run = %v, want ErrStopped", err)
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		edit func(*operator.Config)
		ok   bool
	}{
		{name: "default", edit: func(*operator.Config) {}, ok: true},
		{name: "custom input", edit: func(c *operator.Config) { c.InputStream, c.InputFilters = "EVENTS", []string{"events.*.orders"} }, ok: true},
		{name: "two filters", edit: func(c *operator.Config) { c.InputFilters = []string{"events.a", "events.b.>"} }, ok: true},
		{name: "trailing wildcard", edit: func(c *operator.Config) { c.InputFilters = []string{"events.>"} }, ok: true},
		{name: "restore from an id", edit: func(c *operator.Config) { c.RestoreFrom = "17" }, ok: true},
		{name: "restore from a savepoint", edit: func(c *operator.Config) { c.RestoreFrom = "before-upgrade" }, ok: true},
		{name: "stop policy", edit: func(c *operator.Config) { c.OnPoison = operator.PoisonStop }, ok: true},
		{name: "default poison policy", edit: func(c *operator.Config) { c.OnPoison = "" }, ok: true},
		{name: "empty job", edit: func(c *operator.Config) { c.Job = "" }},
		{name: "job with a dot", edit: func(c *operator.Config) { c.Job = "a.b" }},
		{name: "instance with a wildcard", edit: func(c *operator.Config) { c.Instance = "i*" }},
		{name: "stream with a dot", edit: func(c *operator.Config) { c.InputStream = "A.B" }},
		{name: "output stream with a dot", edit: func(c *operator.Config) { c.OutputStream = "A.B" }},
		{name: "subject with an empty token", edit: func(c *operator.Config) { c.InputFilters = []string{"a..b"} }},
		{name: "subject with inner >", edit: func(c *operator.Config) { c.InputFilters = []string{"a.>.b"} }},
		{name: "subject with a space", edit: func(c *operator.Config) { c.InputFilters = []string{"a b"} }},
		{name: "filter given twice", edit: func(c *operator.Config) { c.InputFilters = []string{"a.b", "a.b"} }},
		{name: "restore from checkpoint 0", edit: func(c *operator.Config) { c.RestoreFrom = "0" }},
		{name: "restore from a bad name", edit: func(c *operator.Config) { c.RestoreFrom = "a.b" }},
		{name: "restore from and reset state", edit: func(c *operator.Config) { c.RestoreFrom, c.ResetState = "3", true }},
		{name: "negative heartbeat", edit: func(c *operator.Config) { c.Heartbeat = -time.Second }},
		{name: "unknown poison policy", edit: func(c *operator.Config) { c.OnPoison = "skip" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := operator.DefaultConfig("job", "inst-0")
			tt.edit(&c)
			err := c.Validate()
			if tt.ok != (err == nil) {
				t.Fatalf("Validate() = %v, want ok=%v", err, tt.ok)
			}
			if err != nil && !errors.Is(err, operator.ErrInvalidConfig) {
				t.Fatalf("Validate() = %v, want it to wrap ErrInvalidConfig", err)
			}
		})
	}
}

func TestSurvivesServerRestart(t *testing.T) {
	dir := t.TempDir()
	s := natstest.StartIn(t, dir, -1)
	port := s.Addr().(*net.TCPAddr).Port
	e := newEnvOn(t, s)
	key := cairnjs.RegistrationKey(testJob, "counter-0")

	// With a heartbeat far longer than the TTL, only the re-put after a reconnect can bring
	// an expired registration back.
	cfg := operator.DefaultConfig(testJob, "counter-0")
	cfg.Heartbeat = time.Hour
	agg := refop.NewAggregator()
	r := e.startWith(cfg, agg)
	totals := map[string]messages.KeyTotals{}
	last := e.publishEvents("counter-0", totals, makeEvents(10, 1, "a", "b")...)
	waitPosition(t, r.rt, last)
	natstest.Eventually(t, waitLong, "registration never expired", func() bool {
		_, err := e.res.Leases.Get(e.ctx(), key)
		return errors.Is(err, jetstream.ErrKeyNotFound)
	})

	s.Shutdown()
	s.WaitForShutdown()
	natstest.StartIn(t, dir, port)

	natstest.Eventually(t, waitLong, "registration not renewed after the reconnect", func() bool {
		en, err := e.res.Leases.Get(e.ctx(), key)
		return err == nil && en.Operation() == jetstream.KeyValuePut
	})
	if reg := e.registration(key); reg.Incarnation != r.rt.Incarnation() {
		t.Fatalf("registration after the reconnect has incarnation %s, want %s", reg.Incarnation, r.rt.Incarnation())
	}

	// The input consumer follows on after the restart, without gaps or repeats.
	natstest.Eventually(t, waitLong, "JetStream not back after the restart", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, err := e.js.Stream(ctx, cairnjs.InputStream)
		return err == nil
	})
	last = e.publishEvents("counter-0", totals, makeEvents(10, 50, "b", "c")...)
	waitPosition(t, r.rt, last)
	keys, _, _ := aggState(t, r.rt, agg)
	checkTotals(t, keys, totals)
	// Stop before the restarted server, which is cleaned up first.
	r.stop(t)
}

func TestRunWaitsForItsResources(t *testing.T) {
	e := newEnv(t)
	cfg := operator.DefaultConfig(testJob, "counter-0")
	cfg.InputStream, cfg.InputFilters = "LATE_INPUT", []string{"late.orders.>"}
	rt := e.newRuntime(cfg, refop.NewAggregator())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- rt.Run(ctx) }()
	natstest.Eventually(t, waitLong, "no line saying what the runtime waits for", func() bool {
		return e.logged(`"level":"info"`, `"message":"waiting for stream LATE_INPUT to exist"`)
	})
	if _, err := e.res.Leases.Get(e.ctx(), cairnjs.RegistrationKey(testJob, "counter-0")); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Fatalf("registration while waiting: %v, want none", err)
	}
	if _, err := e.js.CreateStream(e.ctx(), jetstream.StreamConfig{Name: "LATE_INPUT", Subjects: []string{"late.orders.>"}, Storage: jetstream.MemoryStorage}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-rt.Ready():
	case err := <-done:
		t.Fatalf("Run = %v before it was ready", err)
	case <-time.After(waitLong):
		t.Fatal("not ready after the stream was created")
	}
	if strings.Count(e.logs.String(), "waiting for stream LATE_INPUT") != 1 {
		t.Fatalf("the wait was logged more than once:\n%s", e.logs.String())
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run = %v, want nil", err)
	}
	if err := rt.Do(e.ctx(), func() {}); !errors.Is(err, operator.ErrStopped) {
		t.Fatalf("Do after Run = %v, want ErrStopped", err)
	}

	// A context that ends while waiting is a clean stop, not an error.
	cfg.InputStream = "NO_SUCH_STREAM"
	rt2 := e.newRuntime(cfg, refop.NewAggregator())
	ctx2, cancel2 := context.WithCancel(context.Background())
	cancel2()
	if err := rt2.Run(ctx2); err != nil {
		t.Fatalf("Run with an ended context = %v, want nil", err)
	}
}
