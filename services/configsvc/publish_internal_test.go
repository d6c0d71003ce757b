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

	"github.com/cairn-stream/cairn/internal/configlog"
	"github.com/cairn-stream/cairn/internal/natstest"
	"github.com/cairn-stream/cairn/internal/reply"
	"github.com/cairn-stream/cairn/pkg/cairnjs"
)

// lostAcks publishes for real through JetStream, then reports a timeout for the first
// lose publishes of events (not heads) as if their acknowledgement had been lost on the
// way back.
type lostAcks struct {
	publisher
	lose  atomic.Int32
	calls atomic.Int32
}

func (p *lostAcks) PublishMsg(ctx context.Context, msg *nats.Msg, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error) {
	if strings.HasSuffix(msg.Subject, ".head") {
		return p.publisher.PublishMsg(ctx, msg, opts...)
	}
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

func newTestService(t *testing.T) (*Service, *cairnjs.Resources) {
	t.Helper()
	srv := natstest.Start(t)
	nc, js, res := srv.Resources(t, cairnjs.Options{Memory: true})
	s, err := New(DefaultConfig(), nc, js, res.Config, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	return s, res
}

// events counts the messages on job's events subject.
func events(t *testing.T, res *cairnjs.Resources, job string) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	subject := cairnjs.Subjects{}.ConfigEvents(job)
	info, err := res.Config.Info(ctx, jetstream.WithSubjectFilter(subject))
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Subjects[subject]
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
		if n := events(t, res, "lost"); n != 1 {
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
	if code(err) != reply.Unavailable || !strings.Contains(err.Error(), "no acknowledgement after 3 tries; the change may still be stored") {
		t.Fatalf("set = %v (code %s), want 503 saying the ack never came", err, code(err))
	}
	if n := events(t, res, "silent"); n != 0 {
		t.Fatalf("stream holds %d events", n)
	}
}

// countingReader counts the reads of the real config stream.
type countingReader struct {
	configlog.Reader
	reads atomic.Int64
}

func (c *countingReader) GetLastMsgForSubject(ctx context.Context, subject string) (*jetstream.RawStreamMsg, error) {
	c.reads.Add(1)
	return c.Reader.GetLastMsgForSubject(ctx, subject)
}

func (c *countingReader) GetMsg(ctx context.Context, seq uint64, opts ...jetstream.GetMsgOpt) (*jetstream.RawStreamMsg, error) {
	c.reads.Add(1)
	return c.Reader.GetMsg(ctx, seq, opts...)
}

// Reading the config in force costs two reads however much garbage follows the last
// valid event, and a set two more (the read after a lost race aside).
func TestGetAndSetReadTwiceWhateverWasPublished(t *testing.T) {
	s, res := newTestService(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, patch := range []string{`{"retain":5}`, `{"interval":"2s"}`} {
		if _, err := s.set(ctx, s.log, "bounded", "", []byte(patch)); err != nil {
			t.Fatal(err)
		}
	}
	js, err := jetstream.New(s.nc)
	if err != nil {
		t.Fatal(err)
	}
	for range 1000 {
		if _, err := js.PublishAsync(s.cfg.Subjects.ConfigEvents("bounded"), []byte("garbage")); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-ctx.Done():
		t.Fatal("garbage not acknowledged")
	}
	r := &countingReader{Reader: res.Config}
	s.last = r
	view, err := s.get(ctx, s.log, "bounded")
	if err != nil || view.Version != 2 || view.Interval != "2s" {
		t.Fatalf("get = %+v, %v; want version 2", view, err)
	}
	if n := r.reads.Load(); n != 2 {
		t.Fatalf("get read %d messages, want 2", n)
	}
	r.reads.Store(0)
	if view, err = s.set(ctx, s.log, "bounded", "", []byte(`{"retain":6}`)); err != nil || view.Version != 3 {
		t.Fatalf("set = %+v, %v; want version 3", view, err)
	}
	if n := r.reads.Load(); n != 2 {
		t.Fatalf("set read %d messages, want 2", n)
	}
}

// deniedHeads publishes events for real and never acknowledges a head, as a server whose
// auth config denies configsvc the head subject.
type deniedHeads struct{ publisher }

func (p deniedHeads) PublishMsg(ctx context.Context, msg *nats.Msg, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error) {
	if strings.HasSuffix(msg.Subject, ".head") {
		return nil, nats.ErrTimeout
	}
	return p.publisher.PublishMsg(ctx, msg, opts...)
}

// A head that cannot be written does not fail the set (its version is stored and in
// force); the next request that can write it does.
func TestUnwrittenHeadIsWrittenByTheNextRequest(t *testing.T) {
	s, res := newTestService(t)
	var logs natstest.LogBuffer
	s.log = zerolog.New(&logs)
	real := s.pub
	s.pub = deniedHeads{real}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	view, err := s.set(ctx, s.log, "unheaded", "", []byte(`{"retain":5}`))
	if err != nil || view.Version != 1 {
		t.Fatalf("set = %+v, %v; want version 1", view, err)
	}
	if !strings.Contains(logs.String(), "config head not written") {
		t.Fatalf("no error logged for the head:\n%s", logs.String())
	}
	head, _, _, err := configlog.ReadHead(ctx, res.Config, s.cfg.Subjects, "unheaded", time.Second)
	if err != nil || head != nil {
		t.Fatalf("head %+v (%v), want none", head, err)
	}
	s.pub = real
	if view, err := s.get(ctx, s.log, "unheaded"); err != nil || view.Version != 1 {
		t.Fatalf("get = %+v, %v; want version 1", view, err)
	}
	head, _, _, err = configlog.ReadHead(ctx, res.Config, s.cfg.Subjects, "unheaded", time.Second)
	if err != nil || head == nil || head.Version != 1 {
		t.Fatalf("head %+v (%v) after the get, want version 1", head, err)
	}
}
