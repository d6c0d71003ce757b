package operatortest

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/cairn-stream/cairn/internal/natstest"
	"github.com/cairn-stream/cairn/pkg/cairnjs"
)

// StartServer starts an embedded nats-server with JetStream on a free port, storing in a
// t.TempDir, creates Cairn's streams and buckets on it, and returns a connection to it
// (nc.ConnectedUrl() is its URL). The connection is closed and the server shut down when
// the test ends.
func StartServer(t testing.TB) *nats.Conn {
	t.Helper()
	nc, _, _ := natstest.Start(t).Resources(t, cairnjs.Options{})
	return nc
}

// Eventually polls cond until it returns true, and fails the test with msg when timeout
// passes first.
func Eventually(t testing.TB, timeout time.Duration, msg string, cond func() bool) {
	t.Helper()
	natstest.Eventually(t, timeout, msg, cond)
}
