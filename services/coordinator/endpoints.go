package coordinator

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/cairn-stream/cairn/internal/reply"
	"github.com/cairn-stream/cairn/pkg/messages"
)

// endpoint is one request endpoint of the coordinator; the job is its subject's last
// token. One with a direct subject is answered at the job's lease holder: any replica may
// receive it (micro's queue group), and a standby forwards it to the holder's direct
// subject and relays the answer.
type endpoint struct {
	// name is the micro endpoint's name, subject its subject for every job.
	name    string
	subject string
	// direct is coordinator id's direct subject for job; nil: any replica answers.
	direct func(id, job string) string
	// what names the request in error messages ("removal"); unchanged says what the caller
	// can rely on when no holder answered ("nothing was removed").
	what, unchanged string
	// wait bounds how long a standby waits for the holder's answer.
	wait time.Duration
	// ownView: a standby answers with its own status when no holder answers (status).
	ownView bool
	// accept checks the body and returns what serves the request here; a bad body is
	// answered wherever the request arrives.
	accept acceptFunc
}

// endpoints is the table of the coordinator's request endpoints.
func (s *Service) endpoints() []*endpoint {
	sub := s.cfg.Subjects
	return []*endpoint{
		{
			name: "status", subject: sub.Status("*"), direct: sub.CoordinatorStatus,
			what: "status request", wait: time.Second, ownView: true, accept: s.acceptStatus,
		},
		{
			name: "members-remove", subject: sub.MembersRemove("*"), direct: sub.CoordinatorMembersRemove,
			what: "removal", unchanged: "nothing was removed", wait: forwardRemovalWait, accept: atLoop(s, parseRemoveRequest, removeMember),
		},
		{
			name: "checkpoint-trigger", subject: sub.CheckpointTrigger("*"),
			direct: func(id, job string) string { return sub.CoordinatorCheckpoint(id, "trigger", job) },
			what:   "trigger", unchanged: "no checkpoint was triggered", wait: forwardTriggerWait, accept: atLoop(s, parseTriggerRequest, trigger),
		},
		{name: "checkpoint-list", subject: sub.CheckpointList("*"), accept: s.acceptList},
		{
			name: "checkpoint-delete", subject: sub.CheckpointDelete("*"),
			direct: func(id, job string) string { return sub.CoordinatorCheckpoint(id, "delete", job) },
			what:   "deletion", unchanged: "nothing was deleted", wait: forwardRemovalWait, accept: atLoop(s, parseSavepointRequest, deleteSavepoint),
		},
	}
}

// serveEndpoints subscribes to the direct subjects and adds the micro endpoints; stop
// undoes both.
func (s *Service) serveEndpoints(ctx context.Context) (stop func(), err error) {
	var subs []*nats.Subscription
	var svc micro.Service
	stop = func() {
		if svc != nil {
			_ = svc.Stop()
		}
		for _, sub := range subs {
			_ = sub.Unsubscribe()
		}
	}
	eps := s.endpoints()
	for _, ep := range eps {
		if ep.direct == nil {
			continue
		}
		sub, err := s.nc.Subscribe(ep.direct(s.cfg.ID, "*"), func(m *nats.Msg) { s.onDirect(ctx, ep, m) })
		if err != nil {
			stop()
			return nil, fmt.Errorf("subscribe to direct %s requests: %w", ep.name, err)
		}
		subs = append(subs, sub)
	}
	svc, err = micro.AddService(s.nc, micro.Config{
		Name:        ServiceName,
		Version:     messages.ServiceVersion,
		Description: "Cairn checkpoint coordinator: barriers, acks, manifests, job status, member removal, manual checkpoints and savepoints",
		Metadata:    map[string]string{"id": s.cfg.ID},
	})
	if err != nil {
		stop()
		return nil, fmt.Errorf("add micro service: %w", err)
	}
	for _, ep := range eps {
		h := micro.HandlerFunc(func(r micro.Request) { s.onRequest(ctx, ep, r) })
		if err := svc.AddEndpoint(ep.name, h, micro.WithEndpointSubject(ep.subject)); err != nil {
			stop()
			return nil, fmt.Errorf("add %s endpoint: %w", ep.name, err)
		}
	}
	return stop, nil
}

// jobOf returns the job of a request subject: its last token.
func jobOf(subject string) string {
	return subject[strings.LastIndexByte(subject, '.')+1:]
}

// check validates the job's name and the body of a request, alike on its endpoint and on
// its direct subject.
func (ep *endpoint) check(ctx context.Context, job string, body []byte) (func(answerFunc), *reply.Coded) {
	if err := messages.ValidateName("job", job); err != nil {
		return nil, badRequest(err)
	}
	return ep.accept(ctx, ep, job, body)
}

// onRequest answers a request on endpoint ep. A bad request is answered at once; the
// others on a goroutine of their own, to r's reply subject and never through r (whose
// state micro reads when the handler returns), so that a request that waits for a
// checkpoint, a stuck job or an unresponsive holder delays no other request.
func (s *Service) onRequest(ctx context.Context, ep *endpoint, r micro.Request) {
	job, replyTo, body := jobOf(r.Subject()), r.Reply(), r.Data()
	serve, e := ep.check(ctx, job, body)
	if e != nil {
		respondError(r, e)
		return
	}
	s.wg.Go(func() {
		answer := func(v any, e *reply.Coded) { s.publishReply(replyMsg(replyTo, v, e)) }
		if ep.direct == nil {
			serve(answer)
			return
		}
		s.atHolder(ctx, ep, job, body, serve, answer, func(m *nats.Msg) {
			out := nats.NewMsg(replyTo)
			for k, v := range m.Header {
				out.Header[k] = v
			}
			out.Data = m.Data
			if out.Header.Get(micro.ErrorCodeHeader) == "" {
				out.Header.Set("Content-Type", "application/json")
			}
			s.publishReply(out)
		})
	})
}

// atHolder answers a request at the job's lease holder: here when this replica holds the
// lease (or, for a parked job, is its preferred replica, which wakes it), otherwise
// forwarded to the holder's direct subject, its answer relayed. An ownView endpoint
// answers with this replica's status when no holder answers.
func (s *Service) atHolder(ctx context.Context, ep *endpoint, job string, body []byte, serve func(answerFunc), answer answerFunc,
	relay func(*nats.Msg),
) {
	st, code, msg := s.localStatus(ctx, job)
	if code != "" {
		answer(nil, reply.New(code, msg))
		return
	}
	holder := st.Holder
	if ep.ownView {
		serve = func(answer answerFunc) { answer(st, nil) }
	} else if st.Idle && holder == "" {
		holder = st.Preferred
	}
	switch {
	case holder == s.cfg.ID, holder == "" && ep.ownView:
		serve(answer)
	case holder == "":
		answer(nil, reply.New(reply.Unavailable, fmt.Sprintf("no coordinator holds the lease of job %s right now; %s, try again", job, ep.unchanged)))
	default:
		fctx, cancel := context.WithTimeout(ctx, ep.wait)
		m, err := s.nc.RequestWithContext(fctx, ep.direct(holder, job), body)
		cancel()
		switch {
		case err == nil && (!ep.ownView || m.Header.Get(micro.ErrorCodeHeader) == ""):
			relay(m)
		case ep.ownView:
			s.log.Debug().Err(err).Str("holder", holder).Msg("holder did not answer a forwarded status request; answering with this standby's view")
			serve(answer)
		default:
			answer(nil, reply.New(reply.Unavailable, fmt.Sprintf(
				"the lease holder %s of job %s did not answer the %s within %s: %v; check cairn.status.%s to see whether it happened",
				holder, job, ep.what, ep.wait, err, job)))
		}
	}
}

// onDirect answers a request a standby forwarded to this coordinator, on a goroutine of
// its own.
func (s *Service) onDirect(ctx context.Context, ep *endpoint, m *nats.Msg) {
	job := jobOf(m.Subject)
	s.wg.Go(func() {
		done := func(v any, e *reply.Coded) {
			if err := m.RespondMsg(replyMsg(m.Reply, v, e)); err != nil {
				s.log.Debug().Err(err).Str("subject", m.Subject).Msg("direct reply not sent")
			}
		}
		serve, e := ep.check(ctx, job, m.Data)
		if e != nil {
			done(nil, e)
			return
		}
		serve(done)
	})
}
