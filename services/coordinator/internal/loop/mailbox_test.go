package loop

import (
	"slices"
	"testing"

	"github.com/cairn-stream/cairn/pkg/messages"
)

// TestMailboxOverflowRules checks the rules a slow loop's mailbox applies: nothing blocks,
// and what the loop takes when it wakes is what the rules promise.
func TestMailboxOverflowRules(t *testing.T) {
	m := newMailbox()
	cfg := func(v uint64) *messages.ConfigEvent { return &messages.ConfigEvent{Version: v} }

	// Lease: the newest state wins.
	m.offerLease(Lease{Held: true, Rev: 5, Tenure: 5})
	m.offerLease(Lease{Held: true, Rev: 8, Tenure: 5})
	// Config: the newest version wins; an event not newer than the pending one is stale.
	m.offerConfig(cfg(3))
	m.offerConfig(cfg(2))
	m.offerConfig(cfg(4))
	m.offerConfig(cfg(4))
	// Registrations: per instance the newest; a full set drops what came before it.
	m.offerReg(Registration{Instance: "a", Incarnation: "a1"})
	m.offerReg(Registration{Sync: true, All: map[string]string{"b": "b1"}})
	m.offerReg(Registration{Instance: "c", Incarnation: "c1"})
	m.offerReg(Registration{Instance: "d", Incarnation: "d1"})
	m.offerReg(Registration{Instance: "c"})
	// Acks: bounded, the overflow dropped and counted.
	for i := range AckMailbox + 3 {
		if ok := m.offerAck(&messages.Ack{CheckpointID: uint64(i)}); ok != (i < AckMailbox) {
			t.Fatalf("ack %d: offered %v", i, ok)
		}
	}
	if len(m.wake) != 1 {
		t.Fatalf("%d wake-ups pending, want 1", len(m.wake))
	}

	lease, config, regs := m.take()
	if lease == nil || lease.Rev != 8 {
		t.Fatalf("lease %+v, want the newest (rev 8)", lease)
	}
	if config == nil || config.Version != 4 || m.staleConfigs.Load() != 2 {
		t.Fatalf("config %+v with %d stale, want version 4 and 2 stale", config, m.staleConfigs.Load())
	}
	want := []Registration{{Sync: true, All: map[string]string{"b": "b1"}}, {Instance: "c"}, {Instance: "d", Incarnation: "d1"}}
	if !slices.EqualFunc(regs, want, func(a, b Registration) bool {
		return a.Instance == b.Instance && a.Incarnation == b.Incarnation && a.Sync == b.Sync && len(a.All) == len(b.All)
	}) {
		t.Fatalf("registrations %+v, want %+v", regs, want)
	}
	if m.droppedAcks.Load() != 3 || len(m.acks) != AckMailbox {
		t.Fatalf("%d acks dropped, %d queued; want 3 and %d", m.droppedAcks.Load(), len(m.acks), AckMailbox)
	}

	// Once taken to be applied, an event not newer than it is stale too.
	m.offerConfig(cfg(4))
	if _, config, _ := m.take(); config != nil || m.staleConfigs.Load() != 3 {
		t.Fatalf("config %+v after applying 4, stale %d; want none pending, 3 stale", config, m.staleConfigs.Load())
	}
}
