package operator_test

import (
	"context"
	"encoding/binary"
	"io"
	"os/signal"
	"syscall"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	cjs "github.com/cairn-stream/cairn/pkg/jetstream"
	"github.com/cairn-stream/cairn/pkg/operator"
)

// counter is a minimal Machine: it counts the records it applied.
type counter struct{ n uint64 }

func (c *counter) Apply(operator.Record) error { c.n++; return nil }

func (c *counter) Snapshot() (operator.Snapshot, error) { return countSnapshot(c.n), nil }

func (c *counter) Restore(r io.Reader) error {
	var n uint64
	if err := binary.Read(r, binary.BigEndian, &n); err != nil {
		return err // state unchanged: the runtime may fall back to an older snapshot
	}
	c.n = n
	return nil
}

// countSnapshot is an immutable copy of the state, persisted off the processing goroutine.
type countSnapshot uint64

func (s countSnapshot) Persist(w io.Writer) error {
	return binary.Write(w, binary.BigEndian, uint64(s))
}
func (countSnapshot) Release() {}

// Run your own stateful logic under Cairn's checkpoints: the runtime restores the latest
// completed checkpoint, consumes cairn.input.<job>.<instance> from there, snapshots on
// every barrier and acks to the coordinator.
func ExampleNew() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	log := zerolog.Nop()
	nc, err := cjs.Connect(cjs.ConnectOptionsFromEnv("my-operator"))
	if err != nil {
		panic(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		panic(err)
	}
	res, err := cjs.Ensure(ctx, js, cjs.Options{LookupOnly: true})
	if err != nil {
		panic(err)
	}
	rt, err := operator.New(operator.DefaultConfig("orders", "counter-0"), nc, js, res, &counter{}, log)
	if err != nil {
		panic(err)
	}
	if err := rt.Run(ctx); err != nil {
		panic(err)
	}
}
