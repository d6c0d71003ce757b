package operator

import (
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go/micro"

	"github.com/cairn-stream/cairn/internal/reply"
	"github.com/cairn-stream/cairn/pkg/cairnjs"
	"github.com/cairn-stream/cairn/pkg/messages"
)

// Names of the micro service every Runtime adds.
const (
	// ServiceName is the micro service's name, as listed by `nats micro ls`.
	ServiceName = "cairn-operator"
	// InfoEndpoint is the name of the endpoint answering on <prefix>.op.<job>.<instance>.info
	// with the instance's Info as JSON.
	InfoEndpoint = "info"
)

// endpoint is an endpoint added with AddEndpoint.
type endpoint struct {
	name, subject string
	h             micro.Handler
}

// AddEndpoint adds an endpoint to the instance's micro service ("cairn-operator", which
// also serves InfoEndpoint) on subject, for a Machine's own requests such as a state
// query; name is the endpoint's name in micro. The permissions `cairn auth` generates let
// an operator serve subjects under cairn.op.<job>.<instance>. Call it before Run (after,
// it returns ErrAlreadyStarted); the handler runs on micro's goroutine, so it reads the
// Machine through Do and answers failures with micro's Request.Error.
func (r *Runtime) AddEndpoint(name, subject string, h micro.Handler) error {
	if r.started.Load() {
		return ErrAlreadyStarted
	}
	if err := cairnjs.ValidateSubject(subject, true); err != nil {
		return fmt.Errorf("endpoint %s: subject %q: %w", name, subject, err)
	}
	r.endpoints = append(r.endpoints, endpoint{name: name, subject: subject, h: h})
	return nil
}

// serve adds the micro service with the info endpoint and those added with AddEndpoint.
func (r *Runtime) serve() (micro.Service, error) {
	svc, err := micro.AddService(r.nc, micro.Config{
		Name:        ServiceName,
		Version:     messages.ServiceVersion,
		Description: "Cairn operator instance",
		Metadata:    map[string]string{"job": r.cfg.Job, "instance": r.cfg.Instance, "incarnation": r.incarnation},
	})
	if err != nil {
		return nil, fmt.Errorf("add micro service %s: %w", ServiceName, err)
	}
	eps := append([]endpoint{{name: InfoEndpoint, subject: r.cfg.subjects().OperatorInfo(r.cfg.Job, r.cfg.Instance), h: micro.HandlerFunc(r.handleInfo)}}, r.endpoints...)
	for _, ep := range eps {
		if err := svc.AddEndpoint(ep.name, ep.h, micro.WithEndpointSubject(ep.subject)); err != nil {
			_ = svc.Stop()
			return nil, fmt.Errorf("add endpoint %s on %s: %w", ep.name, ep.subject, err)
		}
	}
	return svc, nil
}

// Info is what an instance reports about itself: what Runtime.Info returns and, as JSON, what
// the info endpoint (InfoEndpoint, on <prefix>.op.<job>.<instance>.info) answers.
type Info struct {
	// Job, Instance and Incarnation name the instance and this run of it.
	Job, Instance, Incarnation string
	// InputStream and InputFilters are what the instance reads.
	InputStream  string
	InputFilters []string
	// Position is the input stream sequence of the last record applied (or restored).
	Position uint64
	// RestoredCheckpoint is the id of the checkpoint the state was restored from, 0 for an
	// empty start or before the state is restored; RestoredFrom names it ("checkpoint 7",
	// "savepoint before-upgrade", "latest") and is empty then.
	RestoredCheckpoint uint64
	RestoredFrom       string
	// Stats are the Runtime's counters.
	Stats Stats
	// PoisonPolicy is Config.OnPoison.
	PoisonPolicy PoisonPolicy
	// Stopped is set once the runtime stopped processing (see Runtime.Health).
	Stopped *Stopped
}

// Stopped says where and why a Runtime stopped processing.
type Stopped struct {
	// Reason says what failed, in the words of a dead letter's Cairn-Deadletter-Reason
	// header ("panic", "output_too_large", ...).
	Reason string
	// Sequence, Stream and Subject name the record it stopped at: the first record not
	// applied; zero when no record is to blame (a CheckpointListener panicked).
	Sequence uint64
	Stream   string
	Subject  string
	// Position is the input sequence of the last record applied.
	Position uint64
	// Error is the error, or the panic's value.
	Error string
	// At is when it stopped.
	At time.Time
}

// Info returns what the info endpoint answers.
func (r *Runtime) Info() Info {
	info := Info{
		Job:          r.cfg.Job,
		Instance:     r.cfg.Instance,
		Incarnation:  r.incarnation,
		InputStream:  r.cfg.InputStream,
		InputFilters: slices.Clone(r.cfg.InputFilters),
		Position:     r.Position(),
		Stats:        r.Stats(),
		PoisonPolicy: r.cfg.OnPoison,
	}
	if h := r.halted.Load(); h != nil {
		info.Stopped = &Stopped{Reason: string(h.Reason), Sequence: h.Sequence, Stream: h.Stream, Subject: h.Subject,
			Position: h.Position, Error: h.Error, At: h.At}
	}
	select {
	case <-r.ready:
		info.RestoredCheckpoint, info.RestoredFrom = r.restoredCheckpoint, r.restoredFrom
	default:
	}
	return info
}

// infoMessage is info in the wire form the info endpoint answers with.
func infoMessage(info Info) messages.OperatorInfo {
	st := info.Stats
	m := messages.OperatorInfo{
		Schema:             messages.SchemaVersion,
		Job:                info.Job,
		Instance:           info.Instance,
		Incarnation:        info.Incarnation,
		InputStream:        info.InputStream,
		InputFilters:       info.InputFilters,
		Position:           info.Position,
		RestoredCheckpoint: info.RestoredCheckpoint,
		RestoredFrom:       info.RestoredFrom,
		Stats: messages.OperatorStats{
			Applied: st.Applied, Rejected: st.Rejected, Emitted: st.Emitted, Suppressed: st.Suppressed, Acked: st.Acked,
			Declined: st.Declined, Reused: st.Reused, BytesUploaded: st.BytesUploaded,
			DeadLettered: st.DeadLettered, DeadLettersReplayed: st.DeadLettersReplayed, Panics: st.Panics,
		},
		PoisonPolicy: string(info.PoisonPolicy),
	}
	if h := info.Stopped; h != nil {
		m.Stopped = &messages.OperatorStopped{Reason: messages.PoisonReason(h.Reason), Sequence: h.Sequence, Stream: h.Stream,
			Subject: h.Subject, Position: h.Position, Error: h.Error, At: h.At}
	}
	return m
}

func (r *Runtime) handleInfo(req micro.Request) {
	select {
	case <-r.ready:
	default:
		_ = reply.Error(req, reply.Unavailable, "instance "+r.cfg.Instance+" is restoring its state; retry shortly")
		return
	}
	if err := req.RespondJSON(infoMessage(r.Info())); err != nil {
		r.log.Warn("respond to info request", "error", err)
	}
}
