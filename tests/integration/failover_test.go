package integration

import (
	"testing"
	"time"

	"github.com/cairn-stream/cairn/pkg/messages"
)

func TestStandbyTakesOverWhenTheHolderDies(t *testing.T) {
	s := startSystem(t, "ha", "h-0", "h-1")
	s.startCoordinator("standby")
	s.waitRegistered("ha", 2)
	bs := s.barriers("ha")
	evs := s.events("ha")
	v := s.set("ha", `{"interval":"200ms","timeout":"2s"}`)
	nextMatching(t, evs, 10*time.Second, "completed checkpoint", func(e *messages.CheckpointEvent) bool {
		return e.Outcome == messages.Completed && e.ConfigVersion == v.Version
	})
	holder := s.status("ha").Holder
	standby := map[string]string{"coordinator": "standby", "standby": "coordinator"}[holder]
	if standby == "" {
		t.Fatalf("holder %q is neither coordinator", holder)
	}
	// A status request answered by the standby is forwarded to the holder: it always
	// shows the holder's pending and completed checkpoints.
	for range 6 {
		if got := s.status("ha"); got.Coordinator != holder || got.LastCompleted == nil {
			t.Fatalf("status not from the holder: %+v", got)
		}
	}
	var last uint64
	drain := func() {
		for {
			select {
			case b := <-bs:
				last = max(last, b.b.CheckpointID)
			default:
				return
			}
		}
	}
	drain()
	killed := time.Now()
	s.crash(holder)
	b := nextMatching(t, bs, 10*time.Second, "barrier from the new holder", func(b barrier) bool { return b.b.Coordinator == standby })
	gap := b.at.Sub(killed)
	t.Logf("first barrier of the new holder %s after the holder died (lease TTL %s + interval 200ms)", gap, leaseTTL)
	if gap > leaseTTL+200*time.Millisecond+4*time.Second { // the 4 s leave room for a loaded -race run
		t.Fatalf("fail-over took %s", gap)
	}
	drain()
	if b.b.CheckpointID <= last {
		t.Fatalf("new holder reused id %d (old holder reached %d)", b.b.CheckpointID, last)
	}
	if b.b.ConfigVersion != v.Version {
		t.Fatalf("new holder runs under version %d, want %d", b.b.ConfigVersion, v.Version)
	}
	nextMatching(t, evs, 10*time.Second, "completed checkpoint under the new holder", func(e *messages.CheckpointEvent) bool {
		return e.Outcome == messages.Completed && e.CheckpointID >= b.b.CheckpointID
	})
	if st := s.status("ha"); st.Holder != standby || st.Coordinator != standby {
		t.Fatalf("status after fail-over: holder %q answered by %q", st.Holder, st.Coordinator)
	}
}
