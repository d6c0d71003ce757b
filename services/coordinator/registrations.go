package coordinator

import (
	"context"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cairn-stream/cairn/internal/retry"
	"github.com/cairn-stream/cairn/pkg/messages"
	"github.com/cairn-stream/cairn/services/coordinator/internal/loop"
	"github.com/cairn-stream/cairn/services/coordinator/internal/store"
)

// followRegistrations routes instance registrations to their jobs. The watch delivers
// every current registration first; at the end of that snapshot each job gets the full
// set, so that an instance that vanished while no watch was running is dropped. After a
// reconnect the watch is restarted at once: a KV watch notices a server restart only after
// missed heartbeats, seconds later, and a stale participant set would make checkpoints
// wait for dead incarnations.
func (s *Service) followRegistrations(ctx context.Context, f *store.Follow, updates <-chan jetstream.KeyValueEntry) {
	for s.routeRegistrations(ctx, updates, f.Reconnected()) {
		err := retry.Do(ctx, func(ctx context.Context) error {
			var err error
			updates, err = f.Start(ctx)
			return err
		}, func(err error, _ time.Duration) {
			if msg := "cannot watch registrations; retrying"; s.noise.Allow(msg) {
				s.log.Warn().Err(err).Msg(msg)
			}
		})
		if err != nil {
			return // ctx ended
		}
	}
}

// routeRegistrations consumes one watch until ctx ends (false) or the connection was
// re-established or the watch closed (true: watch again).
func (s *Service) routeRegistrations(ctx context.Context, updates <-chan jetstream.KeyValueEntry, reconnected <-chan nats.Status) bool {
	initial := map[string]map[string]string{} // job → instance → incarnation, until the snapshot ends
	for {
		select {
		case <-ctx.Done():
			return false
		case <-reconnected:
			s.log.Info().Msg("reconnected: re-reading registrations")
			return true
		case e, ok := <-updates:
			if !ok {
				return ctx.Err() == nil
			}
			if e == nil {
				s.syncRegistrations(ctx, initial)
				initial = nil
				s.syncOnce.Do(func() { close(s.synced) })
				continue
			}
			job, u, ok := s.registration(e)
			if !ok {
				continue
			}
			if initial != nil {
				if u.Incarnation != "" {
					if initial[job] == nil {
						initial[job] = map[string]string{}
					}
					initial[job][u.Instance] = u.Incarnation
				}
				continue
			}
			s.noteRegistration(ctx, job, u)
		}
	}
}

// registration decodes a registration entry into its job and update; ok is false for an
// entry to skip.
func (s *Service) registration(e jetstream.KeyValueEntry) (string, loop.Registration, bool) {
	parts := strings.Split(e.Key(), ".")
	if len(parts) != 3 || !s.wanted(parts[1]) {
		return "", loop.Registration{}, false
	}
	u := loop.Registration{Instance: parts[2]}
	if e.Operation() == jetstream.KeyValuePut {
		var r messages.Registration
		if err := messages.Unmarshal(e.Value(), &r); err != nil || r.Job != parts[1] || r.Instance != parts[2] {
			if msg := "registration skipped: cannot decode or does not match its key"; s.noise.Allow(msg) {
				s.log.Error().Err(err).Str("key", e.Key()).Msg(msg)
			}
			return "", loop.Registration{}, false
		}
		u.Incarnation = r.Incarnation
	}
	return parts[1], u, true
}
