package chaos

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cairn-stream/cairn/internal/natstest"
	"github.com/cairn-stream/cairn/pkg/cairnjs"
	"github.com/cairn-stream/cairn/pkg/messages"
)

// barrierSeen is a barrier as the observer received it.
type barrierSeen struct {
	at          time.Time
	id          uint64
	version     uint64 // from the Cairn-Config-Version header
	coordinator string
	triggered   time.Time
}

// eventSeen is a checkpoint event as the observer received it live.
type eventSeen struct {
	at time.Time
	ev messages.CheckpointEvent
}

// observer watches the job from the harness's own connection, which reconnects forever:
// every barrier on cairn.barrier.<job>, every ack on cairn.ack.<job>.<instance> and every checkpoint
// event published on cairn.checkpoints.<job>.* (the member audit events on
// cairn.checkpoints.<job>.members are not checkpoint events and are skipped). All are core
// subscriptions, so what is published while the nats-server is down is not seen here; the
// stored checkpoint events are read back from their stream at the end.
type observer struct {
	nc *nats.Conn
	js jetstream.JetStream

	mu       sync.Mutex
	barriers []barrierSeen
	events   []eventSeen
	answers  map[string]map[uint64]bool // instance → checkpoint ids it acked or declined
	problems []string                   // malformed barriers, acks or events
	changed  chan struct{}              // closed and replaced whenever a barrier or event arrives
}

// newObserver subscribes on nc; the subscriptions reach the server once nc is connected.
func newObserver(nc *nats.Conn) (*observer, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	o := &observer{nc: nc, js: js, changed: make(chan struct{}), answers: map[string]map[uint64]bool{}}
	if _, err := nc.Subscribe(subjects.Barrier(job), o.onBarrier); err != nil {
		return nil, err
	}
	if _, err := nc.Subscribe(subjects.InstanceAck(job, "*"), o.onAck); err != nil {
		return nil, err
	}
	if _, err := nc.Subscribe(subjects.CheckpointEvent(job, "*"), o.onEvent); err != nil {
		return nil, err
	}
	return o, nil
}

func (o *observer) onBarrier(m *nats.Msg) {
	at := time.Now()
	var b messages.Barrier
	err := messages.Unmarshal(m.Data, &b)
	o.mu.Lock()
	defer o.mu.Unlock()
	if err != nil {
		o.problems = append(o.problems, fmt.Sprintf("barrier not decodable: %v", err))
		return
	}
	hid, herr := strconv.ParseUint(m.Header.Get(messages.HeaderCheckpointID), 10, 64)
	hver, verr := strconv.ParseUint(m.Header.Get(messages.HeaderConfigVersion), 10, 64)
	if herr != nil || verr != nil || hid != b.CheckpointID || hver != b.ConfigVersion {
		o.problems = append(o.problems, fmt.Sprintf("barrier %d (config version %d) has headers %s=%q %s=%q",
			b.CheckpointID, b.ConfigVersion, messages.HeaderCheckpointID, m.Header.Get(messages.HeaderCheckpointID),
			messages.HeaderConfigVersion, m.Header.Get(messages.HeaderConfigVersion)))
	}
	o.barriers = append(o.barriers, barrierSeen{at: at, id: b.CheckpointID, version: hver, coordinator: b.Coordinator, triggered: b.TriggeredAt})
	o.notify()
}

func (o *observer) onAck(m *nats.Msg) {
	var a messages.Ack
	err := messages.Unmarshal(m.Data, &a)
	o.mu.Lock()
	defer o.mu.Unlock()
	if err != nil {
		o.problems = append(o.problems, fmt.Sprintf("ack not decodable: %v", err))
		return
	}
	if o.answers[a.Instance] == nil {
		o.answers[a.Instance] = map[uint64]bool{}
	}
	o.answers[a.Instance][a.CheckpointID] = true
}

// answered reports whether instance acked or declined checkpoint id.
func (o *observer) answered(instance string, id uint64) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.answers[instance][id]
}

func (o *observer) onEvent(m *nats.Msg) {
	if m.Subject == subjects.MemberEvents(job) || m.Subject == subjects.Alarms(job) {
		return // member audit and alarm events share the checkpoint events' subject space
	}
	at := time.Now()
	var e messages.CheckpointEvent
	err := messages.Unmarshal(m.Data, &e)
	o.mu.Lock()
	defer o.mu.Unlock()
	if err != nil {
		o.problems = append(o.problems, fmt.Sprintf("checkpoint event on %s not decodable: %v", m.Subject, err))
		return
	}
	o.events = append(o.events, eventSeen{at: at, ev: e})
	o.notify()
}

// notify wakes the waiters; o.mu is held.
func (o *observer) notify() {
	close(o.changed)
	o.changed = make(chan struct{})
}

// wait waits until found (called with o.mu held) reports true.
func (o *observer) wait(ctx context.Context, what string, found func() bool) error {
	for {
		o.mu.Lock()
		ok, ch := found(), o.changed
		o.mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w", what, ctx.Err())
		}
	}
}

// barrierAfter waits for the first barrier received after t from a coordinator other
// than not (a barrier the killed holder sent just before dying may still be in flight).
func (o *observer) barrierAfter(ctx context.Context, t time.Time, not string) (barrierSeen, error) {
	var got barrierSeen
	err := o.wait(ctx, "a barrier after "+clock(t), func() bool {
		for i := len(o.barriers) - 1; i >= 0 && o.barriers[i].at.After(t); i-- {
			if b := o.barriers[i]; b.coordinator != not {
				got = b
			}
		}
		return got.id != 0
	})
	return got, err
}

// waitBarriers waits until more than n barriers have been seen.
func (o *observer) waitBarriers(ctx context.Context, n int) error {
	return o.wait(ctx, "the next barrier", func() bool { return len(o.barriers) > n })
}

// lastBarrier returns the newest barrier received before t.
func (o *observer) lastBarrier(t time.Time) (barrierSeen, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for i := len(o.barriers) - 1; i >= 0; i-- {
		if !o.barriers[i].at.After(t) {
			return o.barriers[i], true
		}
	}
	return barrierSeen{}, false
}

// barrierCount returns how many barriers have been seen.
func (o *observer) barrierCount() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.barriers)
}

// completedAfter waits for a completed checkpoint triggered after t.
func (o *observer) completedAfter(ctx context.Context, t time.Time) (eventSeen, error) {
	var got eventSeen
	err := o.wait(ctx, "a checkpoint triggered after "+clock(t)+" to complete", func() bool {
		for _, e := range o.events {
			if e.ev.Outcome == messages.Completed && e.ev.TriggeredAt.After(t) {
				got = e
				return true
			}
		}
		return false
	})
	return got, err
}

// seen returns copies of the barriers received and of the problems found.
func (o *observer) seen() ([]barrierSeen, []string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return slices.Clone(o.barriers), slices.Clone(o.problems)
}

// requestJSON asks until a reply decodes into v, retrying what is worth retrying, until
// ctx ends; it returns how many attempts it took.
func (o *observer) requestJSON(ctx context.Context, subject string, body []byte, v any) (int, error) {
	return natstest.RequestJSON(ctx, o.nc, subject, body, v)
}

// status asks a coordinator for the job's status.
func (o *observer) status(ctx context.Context) (messages.Status, error) {
	var st messages.Status
	_, err := o.requestJSON(ctx, subjects.Status(job), nil, &st)
	return st, err
}

// operatorState asks an operator instance for its state.
func (o *observer) operatorState(ctx context.Context, instance string) (messages.OperatorState, error) {
	var st messages.OperatorState
	_, err := o.requestJSON(ctx, subjects.OperatorState(job, instance), nil, &st)
	return st, err
}

// ready reports whether the nats-server answers JetStream requests.
func (o *observer) ready(ctx context.Context) error {
	_, err := o.js.AccountInfo(ctx)
	return err
}

// readStream returns the messages stored in stream on filter, in stream order.
func (o *observer) readStream(ctx context.Context, stream, filter string) ([]jetstream.Msg, error) {
	st, err := o.js.Stream(ctx, stream)
	if err != nil {
		return nil, err
	}
	return natstest.ReadSubject(ctx, st, filter)
}

// firstSeq returns the first sequence left on subject in CAIRN_INPUT, 0 when it holds none.
func (o *observer) firstSeq(ctx context.Context, subject string) (uint64, error) {
	st, err := o.js.Stream(ctx, cairnjs.InputStream)
	if err != nil {
		return 0, err
	}
	return natstest.FirstSeq(ctx, st, subject)
}

// subjects are the default-prefix subjects the processes use.
var subjects = cairnjs.Subjects{}
