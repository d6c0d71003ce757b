package natstest

import (
	"errors"
	"net"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// Request sends a request, retrying while the subject has no responder yet (a service
// still starting) for up to wait; any other error fails the test.
func Request(t testing.TB, nc *nats.Conn, subject string, body []byte, wait time.Duration) *nats.Msg {
	t.Helper()
	var reply *nats.Msg
	Eventually(t, wait, "no responder on "+subject, func() bool {
		m, err := nc.Request(subject, body, 5*time.Second)
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
