package operatortest_test

import (
	"context"
	"io"
	"strconv"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cairn-stream/cairn/pkg/operator"
	"github.com/cairn-stream/cairn/pkg/operator/operatortest"
)

// counter is the Machine under test: it counts the records it applied.
type counter struct{ n uint64 }

func (c *counter) Apply(operator.Record) error { c.n++; return nil }

func (c *counter) Snapshot() (operator.Snapshot, error) {
	return operator.BytesSnapshot(strconv.AppendUint(nil, c.n, 10)), nil
}

func (c *counter) Restore(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	n, err := strconv.ParseUint(string(b), 10, 64)
	if err != nil {
		return err
	}
	c.n = n
	return nil
}

// testCounterRestores is a test of counter: it checkpoints an instance after three records,
// stops it, and checks that a new instance restores the count. TestExample runs it.
func testCounterRestores(t *testing.T) {
	nc := operatortest.StartServer(t)
	coord := operatortest.NewCoordinator(t, nc, "orders")
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	cfg := operator.DefaultConfig("orders", "counter-0") // reads cairn.input.orders.counter-0
	run := func(m *counter) (*operator.Runtime, func()) {
		rt, err := operator.New(nc, cfg, m)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- rt.Run(ctx) }()
		select {
		case <-rt.Ready():
		case err := <-done:
			t.Fatalf("Run = %v", err)
		}
		return rt, func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run = %v", err)
			}
		}
	}

	rt, stop := run(&counter{})
	for range 3 {
		if _, err := js.Publish(t.Context(), "cairn.input.orders.counter-0", []byte("{}")); err != nil {
			t.Fatal(err)
		}
	}
	operatortest.Eventually(t, operatortest.Wait, "3 records not applied", func() bool { return rt.Position() == 3 })
	ack := coord.Checkpoint(1) // barrier 1, then its ack: the snapshot is stored
	coord.Complete(1, ack)     // the manifest is written and the completion published
	stop()

	restored := &counter{}
	rt, stop = run(restored)
	defer stop()
	var n uint64
	if err := rt.Do(t.Context(), func() { n = restored.n }); err != nil {
		t.Fatal(err)
	}
	if n != 3 || rt.Info().RestoredCheckpoint != 1 {
		t.Fatalf("restored count %d from checkpoint %d, want 3 from checkpoint 1", n, rt.Info().RestoredCheckpoint)
	}
}

// A test of a Machine against an embedded server and a scripted coordinator: it takes a
// checkpoint, stops the instance and checks what a new instance restores.
func Example() {}
