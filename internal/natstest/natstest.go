package natstest

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cairn-stream/cairn/pkg/cairnjs"
	"github.com/cairn-stream/cairn/pkg/embedded"
)

// Server is a running embedded nats-server for one test.
type Server struct {
	*server.Server
	// URL is the client URL of the server.
	URL string
	// Dir is the JetStream store directory.
	Dir string
}

// Start starts an embedded nats-server with JetStream on a free port, storing in a
// t.TempDir, and shuts it down when the test ends.
func Start(t testing.TB) *Server {
	t.Helper()
	dir := t.TempDir()
	return StartIn(t, dir, -1)
}

// StartIn starts an embedded nats-server storing in dir on port (-1 for a free one), shut
// down when the test ends; restarting on the same dir and port simulates a server restart.
func StartIn(t testing.TB, dir string, port int) *Server {
	t.Helper()
	return StartWith(t, embedded.Options{Port: port, StoreDir: dir, MaxMemory: 512 << 20, MaxStore: 2 << 30})
}

// StartWith starts an embedded nats-server with o, shut down when the test ends. A zero
// Port means a free one (not embedded's 4222), an empty StoreDir a t.TempDir; zero limits
// are embedded's defaults, those of `cairn dev`.
func StartWith(t testing.TB, o embedded.Options) *Server {
	t.Helper()
	if o.Port == 0 {
		o.Port = -1
	}
	if o.StoreDir == "" {
		o.StoreDir = t.TempDir()
	}
	s, err := embedded.Start(o)
	if err != nil {
		t.Fatalf("start nats-server: %v", err)
	}
	t.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
	return &Server{Server: s, URL: s.ClientURL(), Dir: o.StoreDir}
}

// Connect opens a client connection that is closed when the test ends.
func (s *Server) Connect(t testing.TB) *nats.Conn {
	t.Helper()
	nc, err := cairnjs.Connect(cairnjs.ConnectOptions{URLs: s.URL, Name: t.Name()})
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// Resources connects and creates Cairn's resources with opts, returning the connection,
// its JetStream context and the resources.
func (s *Server) Resources(t testing.TB, opts cairnjs.Options) (*nats.Conn, jetstream.JetStream, *cairnjs.Resources) {
	t.Helper()
	nc := s.Connect(t)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("jetstream: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := cairnjs.Ensure(ctx, js, opts)
	if err != nil {
		t.Fatalf("ensure resources: %v", err)
	}
	return nc, js, r
}

// Eventually polls cond every 5ms until it returns true or timeout passes, then fails the
// test with msg. It never sleeps longer than the poll period.
func Eventually(t testing.TB, timeout time.Duration, msg string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %s", timeout, msg)
		}
		<-tick.C
	}
}
