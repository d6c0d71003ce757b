package operator_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/cairn-stream/cairn/internal/natstest"
	"github.com/cairn-stream/cairn/pkg/cairnjs"
	"github.com/cairn-stream/cairn/pkg/messages"
	"github.com/cairn-stream/cairn/pkg/operator"
	refop "github.com/cairn-stream/cairn/services/aggregator"
)

func TestDuplicateInstanceIsFenced(t *testing.T) {
	e := newEnv(t)
	// The first process is persisting the snapshot of checkpoint 1 when the second one,
	// with the same instance id, registers.
	m1 := &gateMachine{gate: make(chan struct{}), persisting: make(chan struct{})}
	r1 := e.start("counter-0", m1)
	last := e.publish("counter-0", []byte("1"), []byte("2"))
	waitPosition(t, r1.rt, last)
	e.barrier(1)
	select {
	case <-m1.persisting:
	case <-time.After(waitLong):
		t.Fatal("Persist never started")
	}

	m2 := &gateMachine{gate: make(chan struct{}), persisting: make(chan struct{})}
	close(m2.gate)
	r2 := e.start("counter-0", m2)
	replaced := time.Now()
	if reg := e.registration(cairnjs.RegistrationKey(testJob, "counter-0")); reg.Incarnation != r2.rt.Incarnation() {
		t.Fatalf("registration of incarnation %s, want the newer %s", reg.Incarnation, r2.rt.Incarnation())
	}
	if !e.logged(`"level":"warn"`, `"incarnation":"`+r2.rt.Incarnation()+`"`, `"replaced_incarnation":"`+r1.rt.Incarnation()+`"`) {
		t.Fatal("the newer incarnation did not warn that it replaced the older one")
	}

	// The older one notices within a heartbeat (a third of the 1s TTL) plus the round
	// trips of the check, and stops consuming at once. Under -race on a loaded CI machine
	// that can take longer, so the bound is waitLong, which still catches an incarnation
	// that never notices; the measured time is logged against the heartbeat.
	natstest.Eventually(t, waitLong, "the replaced incarnation did not notice", func() bool {
		return e.logged(`"level":"error"`, `"incarnation":"`+r1.rt.Incarnation()+`"`, `"replaced_by":"`+r2.rt.Incarnation()+`"`)
	})
	t.Logf("the replaced incarnation noticed %s after the newer one started (heartbeat %s)", time.Since(replaced), time.Second/3)
	natstest.Eventually(t, waitLong, "the replaced incarnation kept processing", func() bool {
		return errors.Is(r1.rt.Do(e.ctx(), func() {}), operator.ErrStopped)
	})

	// Its snapshot in progress is neither uploaded nor acked, and Run names the successor.
	close(m1.gate)
	err := r1.result(t, waitLong)
	if !errors.Is(err, operator.ErrReplaced) || !strings.Contains(err.Error(), "incarnation "+r1.rt.Incarnation()+" was replaced by incarnation "+r2.rt.Incarnation()) {
		t.Fatalf("Run = %v, want ErrReplaced naming both incarnations", err)
	}
	if err := e.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	select {
	case msg := <-e.coord.Acks():
		var a messages.Ack
		_ = messages.Unmarshal(msg.Data, &a)
		t.Fatalf("the replaced incarnation published %+v", a)
	default:
	}
	if objs := e.objects(); len(objs) != 0 {
		t.Fatalf("objects %v: the replaced incarnation uploaded its snapshot", objs)
	}
	if reg := e.registration(cairnjs.RegistrationKey(testJob, "counter-0")); reg.Incarnation != r2.rt.Incarnation() {
		t.Fatalf("registration of incarnation %s after the older one stopped, want %s", reg.Incarnation, r2.rt.Incarnation())
	}

	// The survivor goes on and acks.
	if a := e.checkpoint(2); a.Incarnation != r2.rt.Incarnation() {
		t.Fatalf("ack %+v, want one of incarnation %s", a, r2.rt.Incarnation())
	}
}

// TestBarrierWithALowerTokenIsIgnored: a barrier from a coordinator that lost its lease
// (a lower fencing token than one already seen) is not acted on, even with a higher
// checkpoint id; a barrier without a token (a coordinator before tokens) is.
func TestBarrierWithALowerTokenIsIgnored(t *testing.T) {
	e := newEnv(t)
	r := e.start("counter-0", refop.NewAggregator())
	waitPosition(t, r.rt, e.publish("counter-0", []byte(`{"key":"k","value":1}`)))
	e.barrierWithToken(1, 10)
	if a := e.nextAck(); a.CheckpointID != 1 {
		t.Fatalf("ack %+v, want checkpoint 1", a)
	}
	// The paused former holder, resumed, sends one barrier under its old token.
	e.barrierWithToken(7, 9)
	e.barrierWithToken(2, 11)
	e.barrier(3)
	for _, want := range []uint64{2, 3} {
		if a := e.nextAck(); a.CheckpointID != want || a.Kind != messages.AckDone {
			t.Fatalf("ack %+v, want an ack of checkpoint %d (the barrier of token 9 ignored)", a, want)
		}
	}
	if !e.logged(`"level":"debug"`, `"checkpoint":7`, "barrier of a fenced coordinator ignored") {
		t.Fatal("the ignored barrier was not logged")
	}
}
