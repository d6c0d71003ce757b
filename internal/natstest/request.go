package natstest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// Request sends a request, retrying while the subject has no responder yet (a service
// still starting) for up to wait; any other error fails the test. A reply may take up to
// wait too (at least 5 s): some requests wait for a whole checkpoint.
func Request(t testing.TB, nc *nats.Conn, subject string, body []byte, wait time.Duration) *nats.Msg {
	t.Helper()
	var reply *nats.Msg
	Eventually(t, wait, "no responder on "+subject, func() bool {
		m, err := nc.Request(subject, body, max(wait, 5*time.Second))
		if errors.Is(err, nats.ErrNoResponders) {
			return false
		}
		if err != nil {
			t.Fatalf("request %s: %v", subject, err)
		}
		reply = m
		return true
	})
	return reply
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// ServiceError is a reply that carried a micro error code, as RequestJSON returns it.
type ServiceError struct {
	Subject, Code, Body string
}

func (e *ServiceError) Error() string {
	return fmt.Sprintf("%s answered %s: %s", e.Subject, e.Code, e.Body)
}

// IsServiceError reports whether err is (or wraps) a ServiceError with the code.
func IsServiceError(err error, code string) bool {
	var se *ServiceError
	return errors.As(err, &se) && se.Code == code
}

// RequestJSON sends a request until a reply decodes into v, asking again after no
// responders, a timeout or a 503 (a service starting, failing over or cut off), until ctx
// ends; a reply with another error code is an error. It returns how many attempts it took.
//
// The first attempt waits 2 s for its reply, and each one after a timeout twice as long as
// the one before (up to 32 s): a service answers an endpoint's requests one at a time and
// still answers those whose requester left, so with a fixed wait shorter than the answer
// takes on a loaded machine (a history of 10 000 records) every attempt would queue behind
// the abandoned ones and none be answered in time.
func RequestJSON(ctx context.Context, nc *nats.Conn, subject string, body []byte, v any) (int, error) {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	wait := 2 * time.Second
	for attempts := 1; ; attempts++ {
		retry, err := requestOnce(ctx, nc, subject, body, v, wait)
		if err == nil {
			return attempts, nil
		}
		if !retry {
			return attempts, err
		}
		if errors.Is(err, context.DeadlineExceeded) {
			wait = min(2*wait, 32*time.Second)
		}
		select {
		case <-ctx.Done():
			return attempts, fmt.Errorf("waiting for a reply on %s: %w (last attempt: %w)", subject, ctx.Err(), err)
		case <-tick.C:
		}
	}
}

// requestOnce asks once, waiting up to wait for the reply; retry reports whether an error
// is worth asking again for.
func requestOnce(ctx context.Context, nc *nats.Conn, subject string, body []byte, v any, wait time.Duration) (retry bool, err error) {
	rctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	m, err := nc.RequestWithContext(rctx, subject, body)
	if err != nil {
		return true, err
	}
	switch code := m.Header.Get("Nats-Service-Error-Code"); code {
	case "":
	case "503":
		return true, fmt.Errorf("%s answered 503: %s", subject, m.Data)
	default:
		return false, &ServiceError{Subject: subject, Code: code, Body: string(m.Data)}
	}
	if err := json.Unmarshal(m.Data, v); err != nil {
		return false, fmt.Errorf("reply %q: %w", m.Data, err)
	}
	return false, nil
}
