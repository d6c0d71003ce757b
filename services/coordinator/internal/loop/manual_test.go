package loop

import (
	"strings"
	"testing"
	"testing/synctest"

	"github.com/cairn-stream/cairn/pkg/messages"
)

// answer is the reply a manual trigger request got.
type answer struct {
	res *messages.CheckpointResult
	err *Error
}

// request sends a trigger request (a savepoint when name is set) to the loop; the channel
// receives its answer.
func (h *harness) request(name string) <-chan answer {
	ch := make(chan answer, 1)
	h.j.triggers <- triggerRequest{savepoint: name, done: func(r *messages.CheckpointResult, e *Error) { ch <- answer{r, e} }}
	synctest.Wait()
	return ch
}

// answered returns the answer on ch, failing the test when there is none yet.
func answered(t *testing.T, ch <-chan answer, what string) answer {
	t.Helper()
	select {
	case a := <-ch:
		return a
	default:
		t.Fatalf("%s: not answered", what)
		return answer{}
	}
}

func waiting(t *testing.T, ch <-chan answer, what string) {
	t.Helper()
	select {
	case a := <-ch:
		t.Fatalf("%s answered early: %+v %+v", what, a.res, a.err)
	default:
	}
}

func TestManualTriggerWaitsForMaxConcurrent(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, "a")
		defer h.stop()
		h.at(10 * s) // the scheduled barrier 1 is pending
		ch := h.request("")
		h.at(11 * s)
		h.wantBarriers(10 * s)
		waiting(t, ch, "manual trigger while checkpoint 1 is pending")
		h.ack(1, "", "a")
		// Checkpoint 1 completed: the manual one goes at once, not an interval later.
		h.wantBarriers(10*s, 11*s)
		waiting(t, ch, "manual trigger before its checkpoint acked")
		h.ack(2, "", "a")
		a := answered(t, ch, "manual trigger")
		if a.err != nil || a.res.ID != 2 || a.res.Outcome != "completed" || a.res.Bytes != 10 || len(a.res.Participants) != 1 {
			t.Fatalf("answer %+v %+v, want checkpoint 2 completed with 10 bytes and one participant", a.res, a.err)
		}
	})
}

func TestEachSavepointGetsItsOwnCheckpoint(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, "a")
		defer h.stop()
		h.config(1, func(c *messages.CheckpointConfig) { c.Interval, c.MaxConcurrent = 1000*s, 2 })
		// Two barriers go at once (max_concurrent 2); the second savepoint waits for a
		// checkpoint of its own.
		first, plain, second := h.request("first"), h.request(""), h.request("second")
		h.wantBarriers(0, 0)
		waiting(t, second, "savepoint second while two checkpoints are pending")
		dup := answered(t, h.request("second"), "a savepoint name being taken")
		if dup.err == nil || dup.err.Kind != Conflict {
			t.Fatalf("second request for savepoint second: %+v %+v, want 409", dup.res, dup.err)
		}
		h.ack(1, "", "a")
		h.ack(2, "", "a")
		h.ack(3, "", "a")
		for _, c := range []struct {
			ch        <-chan answer
			id        uint64
			savepoint string
		}{{first, 1, "first"}, {plain, 2, ""}, {second, 3, "second"}} {
			a := answered(t, c.ch, "request "+c.savepoint)
			if a.err != nil || a.res.ID != c.id || a.res.Savepoint != c.savepoint || a.res.Outcome != "completed" {
				t.Fatalf("request %q: %+v %+v, want checkpoint %d", c.savepoint, a.res, a.err, c.id)
			}
		}
		sps, _ := h.f.Savepoints(t.Context())
		if len(sps) != 2 || sps["first"].CheckpointID != 1 || sps["second"].CheckpointID != 3 || sps["second"].Savepoint != "second" {
			t.Fatalf("savepoints written: %v", sps)
		}
		if st := h.status(); len(st.Savepoints) != 2 || st.Savepoints[0].Name != "first" || st.Savepoints[0].Instances["a"].Behind["CAIRN_INPUT"] != 20 {
			t.Fatalf("status savepoints %+v: want first (20 sequences behind checkpoint 3) and second", st.Savepoints)
		}
		again := answered(t, h.request("first"), "a savepoint name in use")
		if again.err == nil || again.err.Kind != Conflict || !strings.Contains(again.err.Msg, "savepoint first of job demo already exists (checkpoint 1)") {
			t.Fatalf("savepoint first again: %+v %+v, want 409", again.res, again.err)
		}
	})
}

func TestManualTriggerAnswersAbortsAndLeaseLoss(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, "a")
		defer h.stop()
		declined := h.request("sp")
		h.ack(1, "disk full", "a")
		a := answered(t, declined, "declined checkpoint")
		if a.err != nil || a.res.Outcome != "aborted" || a.res.Reason != "declined" || a.res.Savepoint != "sp" {
			t.Fatalf("answer %+v %+v, want checkpoint 1 aborted (declined)", a.res, a.err)
		}
		if sps, _ := h.f.Savepoints(t.Context()); len(sps) != 0 {
			t.Fatalf("an aborted checkpoint wrote savepoints %v", sps)
		}
		lost, queued := h.request(""), h.request("") // the second waits: max_concurrent 1
		h.j.mail.offerLease(Lease{Holder: "c2"})
		synctest.Wait()
		if q := answered(t, queued, "queued request when the lease is lost"); q.err == nil || q.err.Kind != Unavailable || !strings.Contains(q.err.Msg, "lease lost") {
			t.Fatalf("queued request: %+v %+v, want 503 saying the lease was lost", q.res, q.err)
		}
		a = answered(t, lost, "request when the lease is lost")
		if a.err != nil || a.res.Outcome != "aborted" || a.res.Reason != "coordinator_change" {
			t.Fatalf("answer %+v %+v, want the checkpoint aborted (coordinator_change)", a.res, a.err)
		}
		a = answered(t, h.request(""), "request without the lease")
		if a.err == nil || a.err.Kind != Unavailable || !strings.Contains(a.err.Msg, "does not hold the lease") {
			t.Fatalf("answer %+v %+v, want 503", a.res, a.err)
		}
	})
}
