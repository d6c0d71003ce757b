package configsvc

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/cairn-stream/cairn/internal/natstest"
	cjs "github.com/cairn-stream/cairn/pkg/jetstream"
)

// lostAcks publishes for real through JetStream, then reports a timeout for the first
// lose publishes as if their acknowledgement had been lost on the way back.
type lostAcks struct {
	publisher
	lose  atomic.Int32
	calls atomic.Int32
}

func (p *lostAcks) PublishMsg(ctx context.Context, msg *nats.Msg, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error) {
	p.calls.Add(1)
	ack, err := p.publisher.PublishMsg(ctx, msg, opts...)
	if err == nil && p.lose.Add(-1) >= 0 {
		return nil, context.DeadlineExceeded
	}
	return ack, err
}

// unacked never reaches the server and always times out.
type unacked struct{}

func (unacked) PublishMsg(context.Context, *nats.Msg, ...jetstream.PublishOpt) (*jetstream.PubAck, error) {
	return nil, nats.ErrTimeout
}

func newTestService(t *testing.T) (*Service, *cjs.Resources) {
	t.Helper()
	srv := natstest.Start(t)
	nc, js, res := srv.Resources(t, cjs.Options{Memory: true})
	s, err := New(DefaultConfig(), nc, js, res.Config, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	return s, res
}

func streamMsgs(t *testing.T, res *cjs.Resources) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	info, err := res.Config.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

// A publish whose acknowledgement is lost is retried with the same message id. The
// server answers the retry with "wrong last sequence" (it checks the expected sequence
// before duplicates), and the service must recognise its own event rather than store
// the change again as the next version.
func TestLostAckIsNotAppliedTwice(t *testing.T) {
	for _, lose := range []int32{1, publishTries} {
		s, res := newTestService(t)
		p := &lostAcks{publisher: s.pub}
		p.lose.Store(lose)
		s.pub = p
		ctx := context.Background()
		view, err := s.set(ctx, s.log, "lost", "", []byte(`{"retain":5}`))
		if err != nil {
			t.Fatalf("lose %d: set: %v", lose, err)
		}
		if view.Version != 1 || view.Retain != 5 {
			t.Fatalf("lose %d: set answered %+v, want version 1", lose, view)
		}
		if n := streamMsgs(t, res); n != 1 {
			t.Fatalf("lose %d: stream holds %d events, want 1", lose, n)
		}
		if c := p.calls.Load(); c != 2 {
			t.Fatalf("lose %d: %d publishes, want the first and one retry", lose, c)
		}
		next, err := s.set(ctx, s.log, "lost", "", []byte(`{"retain":6}`))
		if err != nil || next.Version != 2 {
			t.Fatalf("lose %d: next set = %+v, %v; want version 2", lose, next, err)
		}
	}
}

func TestNoAckAnswersUnavailable(t *testing.T) {
	s, res := newTestService(t)
	s.pub = unacked{}
	_, err := s.set(context.Background(), s.log, "silent", "", []byte(`{"retain":5}`))
	if code(err) != CodeUnavailable || !strings.Contains(err.Error(), "no acknowledgement after 3 tries; the change may still be stored") {
		t.Fatalf("set = %v (code %s), want 503 saying the ack never came", err, code(err))
	}
	if n := streamMsgs(t, res); n != 0 {
		t.Fatalf("stream holds %d events", n)
	}
}
