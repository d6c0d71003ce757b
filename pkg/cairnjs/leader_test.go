package cairnjs

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// scripted answers requests with the replies and errors it was given, in order.
type scripted struct {
	replies []*nats.Msg
	errs    []error
	calls   int
}

func (s *scripted) RequestWithContext(context.Context, string, []byte) (*nats.Msg, error) {
	i := s.calls
	s.calls++
	return s.replies[i], s.errs[i]
}

// TestLeaderRequestWaitsOutAnElection: a stream electing its leader answers 503, or no
// server answers at all; the request is sent again until the leader answers, and any
// other error ends it at once.
func TestLeaderRequestWaitsOutAnElection(t *testing.T) {
	unavailable := &nats.Msg{Data: []byte(`{"error":{"code":503,"err_code":10008,"description":"JetStream system temporarily unavailable"}}`)}
	found := &nats.Msg{Data: []byte(`{"message":{"seq":7}}`)}
	s := &scripted{replies: []*nats.Msg{unavailable, nil, found}, errs: []error{nil, nats.ErrNoResponders, nil}}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	reply, err := leaderRequest(ctx, s, "x", nil)
	if err != nil || reply != found || s.calls != 3 {
		t.Fatalf("reply %v, %v after %d calls; want the leader's after 3", reply, err, s.calls)
	}

	boom := errors.New("permissions")
	s = &scripted{replies: []*nats.Msg{nil}, errs: []error{boom}}
	if _, err := leaderRequest(ctx, s, "x", nil); !errors.Is(err, boom) || s.calls != 1 {
		t.Fatalf("%v after %d calls; want the error at once", err, s.calls)
	}

	s = &scripted{replies: []*nats.Msg{unavailable, unavailable, unavailable, unavailable, unavailable, unavailable}, errs: make([]error, 6)}
	short, cancelShort := context.WithTimeout(context.Background(), 60*time.Millisecond)
	defer cancelShort()
	if reply, err := leaderRequest(short, s, "x", nil); err != nil || reply != unavailable {
		t.Fatalf("after the deadline: %v, %v; want the last 503 reply", reply, err)
	}
}
