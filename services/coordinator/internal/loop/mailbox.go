package loop

import (
	"context"
	"sync"
	"sync/atomic"

	"github.com/cairn-stream/cairn/pkg/messages"
)

// AckMailbox is how many acks may wait for a job's loop; an ack beyond it is dropped.
const AckMailbox = 256

// mailbox hands a job's loop what NATS callbacks and the lease keeper deliver, without ever
// making them wait for the loop: a job whose loop is stuck in a slow Backend call must not
// stall the shared subscriptions (acks, config events, registrations) nor its own lease
// renewals. Every offer returns at once. The overflow rules:
//
//   - lease: a latest-value slot. Only the newest state matters; a new tenure (acquired at
//     another revision) is recognised by its tenure field, so a lost-and-retaken lease in
//     between is never missed (the loop fences, then takes over).
//   - config: a latest-value slot keeping the highest version offered; only the newest
//     version is ever applied, so a pending one is replaced by a newer one, and an event not
//     newer than the applied or pending version is dropped and counted as stale.
//   - registrations: coalesced per instance (the newest update of each instance wins); a
//     full set (sync) supersedes every per-instance update offered before it.
//   - acks: a bounded queue (AckMailbox); when full the ack is dropped and counted. The
//     barrier resend on the instance's next heartbeat, and otherwise the checkpoint's
//     timeout, recover.
//
// After an offer to a slot the loop is nudged through wake (capacity 1, non-blocking).
type mailbox struct {
	wake chan struct{}
	acks chan *messages.Ack
	// droppedAcks counts acks dropped because acks was full.
	droppedAcks atomic.Uint64
	// staleConfigs counts the config events offerConfig dropped as not newer.
	staleConfigs atomic.Uint64

	mu sync.Mutex // guards the fields below; never held across a blocking call
	// applied is the config version the loop took last, to apply it (set by take): the
	// one version check of a config event is offerConfig's, against it and the pending one.
	applied uint64
	lease   *Lease
	config  *messages.ConfigEvent
	sync    *Registration
	regs    map[string]Registration
	order   []string // instances of regs in the order first offered
}

func newMailbox() *mailbox {
	return &mailbox{wake: make(chan struct{}, 1), acks: make(chan *messages.Ack, AckMailbox), regs: map[string]Registration{}}
}

// nudge wakes the loop unless a wake-up is already pending.
func (m *mailbox) nudge() {
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

// offerLease replaces the pending lease state.
func (m *mailbox) offerLease(l Lease) {
	m.mu.Lock()
	m.lease = &l
	m.mu.Unlock()
	m.nudge()
}

// offerConfig keeps ev unless it is not newer than the applied version or the pending
// one: such an event (a duplicate, a redelivery) is dropped and counted as stale. A pending
// version that a newer one replaces is superseded: it is never applied.
func (m *mailbox) offerConfig(ev *messages.ConfigEvent) {
	m.mu.Lock()
	stale := ev.Version <= m.applied || (m.config != nil && ev.Version <= m.config.Version)
	if !stale {
		m.config = ev
	}
	m.mu.Unlock()
	if stale {
		m.staleConfigs.Add(1)
		return
	}
	m.nudge()
}

// offerReg queues a registration update, coalescing it with pending ones.
func (m *mailbox) offerReg(u Registration) {
	m.mu.Lock()
	if u.Sync {
		m.sync, m.order = &u, m.order[:0]
		clear(m.regs)
	} else {
		if _, ok := m.regs[u.Instance]; !ok {
			m.order = append(m.order, u.Instance)
		}
		m.regs[u.Instance] = u
	}
	m.mu.Unlock()
	m.nudge()
}

// offerAck queues an ack; it reports false when the mailbox is full and the ack dropped.
func (m *mailbox) offerAck(a *messages.Ack) bool {
	select {
	case m.acks <- a:
		return true
	default:
		m.droppedAcks.Add(1)
		return false
	}
}

// pendingLease returns the lease state offered but not yet taken, if any.
func (m *mailbox) pendingLease() (Lease, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.lease == nil {
		return Lease{}, false
	}
	return *m.lease, true
}

// take empties the slots: the pending lease state, config event and registration updates
// (a sync first, then per-instance updates in the order offered).
func (m *mailbox) take() (lease *Lease, config *messages.ConfigEvent, regs []Registration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	lease, config = m.lease, m.config
	m.lease, m.config = nil, nil
	if config != nil {
		// Taken to be applied: from now on an event not newer is stale.
		m.applied = config.Version
	}
	if m.sync != nil {
		regs = append(regs, *m.sync)
		m.sync = nil
	}
	for _, inst := range m.order {
		regs = append(regs, m.regs[inst])
	}
	m.order = m.order[:0]
	clear(m.regs)
	return lease, config, regs
}

// drain takes what the mailbox's slots hold: the lease state first (it may fence), then
// the newest config event, then the registration updates.
func (j *Job) drain(ctx context.Context) {
	lease, config, regs := j.mail.take()
	if lease != nil {
		j.setLease(ctx, *lease)
	}
	if config != nil {
		j.applyConfig(config)
	}
	for _, r := range regs {
		j.register(ctx, r)
	}
}
