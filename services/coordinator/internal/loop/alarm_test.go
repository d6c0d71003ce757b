package loop

import (
	"testing"
	"testing/synctest"
	"time"

	"github.com/cairn-stream/cairn/pkg/messages"
)

// alarmEvents returns the alarm events published so far.
func (f *fakeBackend) alarmEvents() []*messages.AlarmEvent {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*messages.AlarmEvent(nil), f.alarms...)
}

// declineFull declines checkpoint id from instance with storage_full.
func (h *harness) declineFull(id uint64, instance string) {
	h.j.mail.acks <- &messages.Ack{Schema: messages.SchemaVersion, Job: "demo", CheckpointID: id, Instance: instance, Incarnation: "inc-" + instance,
		Kind: messages.AckDeclined, Reason: "snapshot store full", StorageFull: true}
	synctest.Wait()
}

// TestRepeatedAbortReasonRaisesAnAlarm: with tolerable_failures -1 (never failed), the
// fifth storage_full abort in a row raises the alarm once (status and one event), later
// ones update it in status only, a timeout in between starts a new run, and a completion
// clears it (an event, and gone from status).
func TestRepeatedAbortReasonRaisesAnAlarm(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, "a")
		defer h.stop()
		h.config(1, func(c *messages.CheckpointConfig) { c.Interval, c.Timeout = s, 30*s })
		id := uint64(0)
		next := func() uint64 {
			t.Helper()
			id++
			h.at(time.Duration(id) * s)
			if sent := h.f.sent(); len(sent) == 0 || sent[len(sent)-1].b.CheckpointID != id {
				t.Fatalf("checkpoint %d not triggered at %s", id, time.Duration(id)*s)
			}
			return id
		}
		for range alarmAfter - 1 {
			h.declineFull(next(), "a")
		}
		if st := h.status(); len(st.Alarms) != 0 || len(h.f.alarmEvents()) != 0 {
			t.Fatalf("alarms %+v, events %+v after %d storage_full aborts; want none yet", st.Alarms, h.f.alarmEvents(), alarmAfter-1)
		}
		h.declineFull(next(), "a")
		st := h.status()
		if st.Failed {
			t.Fatal("job failed with tolerable_failures -1")
		}
		if len(st.Alarms) != 1 || st.Alarms[0].Kind != messages.AlarmAbortsRepeated || st.Alarms[0].Reason != "storage_full" ||
			st.Alarms[0].Count != alarmAfter || st.Alarms[0].Checkpoint != id || !st.Alarms[0].Since.Equal(h.t0.Add(s).UTC()) {
			t.Fatalf("alarms %+v after %d storage_full aborts, want aborts_repeated storage_full × %d since the first, last %d", st.Alarms, alarmAfter, alarmAfter, id)
		}
		ev := h.f.alarmEvents()
		if len(ev) != 1 || ev[0].Kind != messages.AlarmAbortsRepeated || ev[0].State != messages.AlarmRaised || ev[0].Reason != messages.AbortStorageFull ||
			ev[0].Count != alarmAfter || ev[0].Checkpoint != id {
			t.Fatalf("alarm events %+v, want one raised storage_full at checkpoint %d", ev, id)
		}
		h.declineFull(next(), "a")
		if st := h.status(); len(st.Alarms) != 1 || st.Alarms[0].Count != alarmAfter+1 || st.Alarms[0].Checkpoint != id {
			t.Fatalf("alarms %+v after one more, want the count and last checkpoint to follow", st.Alarms)
		}
		if len(h.f.alarmEvents()) != 1 {
			t.Fatalf("alarm events %+v, want no new event while it stays raised", h.f.alarmEvents())
		}
		// A completion clears the alarm.
		h.ack(next(), "", "a")
		st = h.status()
		if len(st.Alarms) != 0 {
			t.Fatalf("alarms %+v after a completion, want none", st.Alarms)
		}
		ev = h.f.alarmEvents()
		if len(ev) != 2 || ev[1].State != messages.AlarmCleared || ev[1].Reason != messages.AbortStorageFull || ev[1].Count != alarmAfter+1 || ev[1].Checkpoint != id {
			t.Fatalf("alarm events %+v, want a cleared storage_full × %d at checkpoint %d", ev, alarmAfter+1, id)
		}
		// Four of one reason, then another: no alarm.
		for range alarmAfter - 1 {
			h.declineFull(next(), "a")
		}
		h.ack(next(), "not now", "a")
		if st := h.status(); len(st.Alarms) != 0 || len(h.f.alarmEvents()) != 2 {
			t.Fatalf("alarms %+v, events %+v after a run broken by another reason; want none raised", st.Alarms, h.f.alarmEvents())
		}
	})
}
