package coordinator

import (
	"github.com/nats-io/nats.go"

	"github.com/cairn-stream/cairn/pkg/cairnjs"
	"github.com/cairn-stream/cairn/pkg/messages"
)

// onAck hands an ack to its job's loop. An ack dropped here is logged rate-limited
// (noise): anyone may publish on the ack subjects.
func (s *Service) onAck(m *nats.Msg) {
	var a messages.Ack
	if err := messages.Unmarshal(m.Data, &a); err != nil {
		if msg := "ack dropped: cannot decode"; s.noise.Allow(msg) {
			s.log.Warn().Err(err).Str("subject", m.Subject).Msg(msg)
		}
		return
	}
	job, instance, _ := s.cfg.Subjects.ParseAck(m.Subject)
	if job != a.Job || instance != "" && instance != a.Instance {
		if msg := "ack dropped: its job or instance does not match its subject"; s.noise.Allow(msg) {
			s.log.Warn().Str("subject", m.Subject).Str("ack_job", a.Job).Str("ack_instance", a.Instance).Msg(msg)
		}
		return
	}
	for _, ref := range a.Refs() {
		if ref.Store != "" && ref.Store != cairnjs.SnapshotStoreFor(a.Job, s.cfg.Snapshots.SharedSnapshotStore) {
			s.log.Warn().Str("subject", m.Subject).Str("store", ref.Store).Str("object", ref.Object).
				Msg("ack dropped: it references a snapshot store other than its job's")
			return
		}
	}
	if j := s.lookup(a.Job); j != nil && !j.OfferAck(&a) {
		if msg := "ack dropped: the job's mailbox is full (its loop is slow); a resent barrier or the timeout recovers"; s.noise.Allow(msg) {
			s.log.Warn().Str("job", a.Job).Uint64("dropped_acks", j.DroppedAcks()).Msg(msg)
		}
	}
}
