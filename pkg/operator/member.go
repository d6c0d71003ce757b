package operator

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cairn-stream/cairn/pkg/messages"
)

// memberEvent records a deliberate change to this member's state (a reset, an accepted
// input gap) on <prefix>.checkpoints.<job>.members in CAIRN_CHECKPOINTS. It returns an error when the
// event is not stored: a change that cannot be audited is not made.
func (r *Runtime) memberEvent(ctx context.Context, kind messages.MemberEventKind, checkpoint uint64, detail string) error {
	data, err := messages.Marshal(&messages.MemberEvent{
		Schema:      messages.SchemaVersion,
		Job:         r.cfg.Job,
		Instance:    r.cfg.Instance,
		Kind:        kind,
		At:          time.Now().UTC(),
		Incarnation: r.incarnation,
		Checkpoint:  checkpoint,
		Detail:      detail,
	})
	if err != nil {
		return fmt.Errorf("encode %s member event: %w", kind, err)
	}
	subject := r.cfg.subjects().MemberEvents(r.cfg.Job)
	m := nats.NewMsg(subject)
	m.Data = data
	pctx, cancel := context.WithTimeout(ctx, cleanupTimeout)
	defer cancel()
	if _, err := r.outputs.PublishMsg(pctx, m, jetstream.WithMsgID(fmt.Sprintf("%s.%s.%s", r.incarnation, r.cfg.Instance, kind))); err != nil {
		return fmt.Errorf("record the %s member event of job %s, instance %s on %s: %w", kind, r.cfg.Job, r.cfg.Instance, subject, err)
	}
	r.log.Info("member event recorded", "kind", kind.String(), "subject", subject)
	return nil
}
