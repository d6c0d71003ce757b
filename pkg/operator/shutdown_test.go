package operator_test

import (
	"testing"

	"github.com/cairn-stream/cairn/internal/natstest"
	"github.com/cairn-stream/cairn/pkg/cairnjs"
	"github.com/cairn-stream/cairn/pkg/messages"
	"github.com/cairn-stream/cairn/pkg/operator"
	refop "github.com/cairn-stream/cairn/services/aggregator"
)

func TestShutdownWithOutputsThatCannotBeStored(t *testing.T) {
	e := newEnv(t)
	cfg := operator.DefaultConfig(testJob, "counter-0")
	agg := refop.NewAggregator()
	agg.EmitTo(e.subj.Output(testJob, "counter-0"))
	r := e.startWith(cfg, agg)
	last := e.publishEvents("counter-0", map[string]messages.KeyTotals{}, makeEvents(5, 1, "a", "b")...)
	waitPosition(t, r.rt, last)
	if a := e.checkpoint(1); a.Positions[cairnjs.InputStream] != last {
		t.Fatalf("checkpoint 1 positions %v, want %d", a.Positions, last)
	}

	// Outputs can no longer be stored: the next record's output is retried, and a barrier
	// waits behind it, when the instance is stopped.
	if err := e.js.DeleteStream(e.ctx(), cairnjs.OutputStream); err != nil {
		t.Fatal(err)
	}
	e.publishEvents("counter-0", map[string]messages.KeyTotals{}, makeEvents(3, 1, "c")...)
	natstest.Eventually(t, waitLong, "output not retried", func() bool {
		return e.logged(`"message":"output not stored; retrying"`)
	})
	e.barrier(2)
	r.stop(t)

	if got := r.rt.Position(); got != last {
		t.Fatalf("position %d after the stop, want %d: it advanced past a record whose output was not stored", got, last)
	}
	if err := e.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	for done := false; !done; {
		select {
		case msg := <-e.coord.Acks():
			var a messages.Ack
			if err := messages.Unmarshal(msg.Data, &a); err != nil {
				t.Fatal(err)
			}
			t.Fatalf("ack %+v after the output failed: no snapshot may be taken or acked", a)
		default:
			done = true
		}
	}
	if st := r.rt.Stats(); st.Emitted != 5 || st.Acked != 1 {
		t.Fatalf("stats %+v, want 5 outputs and 1 ack", st)
	}
	if !e.logged(`"level":"warn"`, "processing stopped at a record whose outputs are not all stored") {
		t.Fatal("the stop at an unstored output was not logged")
	}
}
