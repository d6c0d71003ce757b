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
func RequestJSON(ctx context.Context, nc *nats.Conn, subject string, body []byte, v any) (int, error) {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for attempts := 1; ; attempts++ {
		retry, err := requestOnce(nc, subject, body, v)
		if err == nil {
			return attempts, nil
		}
		if !retry {
			return attempts, err
		}
		select {
		case <-ctx.Done():
			return attempts, fmt.Errorf("waiting for a reply on %s: %w (last attempt: %w)", subject, ctx.Err(), err)
		case <-tick.C:
		}
	}
}

// requestOnce asks once; retry reports whether an error is worth asking again for.
func requestOnce(nc *nats.Conn, subject string, body []byte, v any) (retry bool, err error) {
	m, err := nc.Request(subject, body, 2*time.Second)
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
