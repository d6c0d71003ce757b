package operator_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cairn-stream/cairn/pkg/cairnjs"
	"github.com/cairn-stream/cairn/pkg/embedded"
	"github.com/cairn-stream/cairn/pkg/messages"
	"github.com/cairn-stream/cairn/pkg/operator"
	"github.com/cairn-stream/cairn/pkg/operator/state"
)

// counter is a minimal Machine: it counts the records it applied. Its state is a decimal
// number, snapshotted with BytesSnapshot.
type counter struct{ n uint64 }

func (c *counter) Apply(operator.Record) error { c.n++; return nil }

func (c *counter) Snapshot() (operator.Snapshot, error) {
	return operator.BytesSnapshot(strconv.AppendUint(nil, c.n, 10)), nil
}

func (c *counter) Restore(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err // state unchanged: the runtime may fall back to an older snapshot
	}
	n, err := strconv.ParseUint(string(b), 10, 64)
	if err != nil {
		return err
	}
	c.n = n
	return nil
}

// Run your own stateful logic under Cairn's checkpoints: the runtime restores the latest
// completed checkpoint, consumes cairn.input.<job>.<instance> from there, snapshots on
// every barrier and acks to the coordinator. Every instance answers
// cairn.op.<job>.<instance>.info.
func ExampleRun() {
	// A NATS server with Cairn's streams and buckets: in production your deployment, or
	// `cairn dev`, and nats.Connect(os.Getenv("NATS_URL")).
	dir, _ := os.MkdirTemp("", "cairn-example-")
	defer os.RemoveAll(dir)
	srv, err := embedded.Start(embedded.Options{Port: -1, StoreDir: dir})
	if err != nil {
		panic(err)
	}
	defer srv.Shutdown()
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		panic(err)
	}
	defer nc.Close()
	ctx, cancel := context.WithCancel(context.Background())
	js, _ := jetstream.New(nc)
	if _, err := cairnjs.Ensure(ctx, js, cairnjs.Options{Memory: true}); err != nil {
		panic(err)
	}

	done := make(chan error, 1)
	go func() { done <- operator.Run(ctx, nc, operator.DefaultConfig("orders", "counter-0"), &counter{}) }()

	for range 3 {
		if _, err := js.Publish(ctx, "cairn.input.orders.counter-0", []byte("{}")); err != nil {
			panic(err)
		}
	}
	var info messages.OperatorInfo
	for info.Position < 3 {
		if msg, err := nc.Request("cairn.op.orders.counter-0.info", nil, time.Second); err == nil {
			_ = json.Unmarshal(msg.Data, &info)
		}
	}
	fmt.Printf("position %d, applied %d, filters %v\n", info.Position, info.Stats.Applied, info.InputFilters)
	cancel()
	fmt.Println("Run returned", <-done)
	// Output:
	// position 3, applied 3, filters [cairn.input.orders.counter-0]
	// Run returned <nil>
}

// wordCount is a KeyedMachine: its state lives in the runtime's keyed state store, so it
// writes no Snapshot or Restore code and every checkpoint uploads only the words that
// changed since the last one.
type wordCount struct{}

func (wordCount) Apply(rec operator.Record, st *state.Store) error {
	counts := state.NewMap(st, "count/", state.Uint64)
	n, _, err := counts.Get(string(rec.Data))
	if err != nil {
		return err // a malformed stored value: the record is counted as rejected
	}
	return counts.Put(string(rec.Data), n+1)
}

// A Machine on the keyed state store: NewKeyed wraps it, and the result runs like any
// Machine (operator.Run or operator.New). The zero KeyedConfig keeps the default chain
// bounds (a new base after 512 deltas, or once the deltas reach 3 times the base).
func ExampleNewKeyed() {
	m, err := operator.NewKeyed(wordCount{}, operator.KeyedConfig{})
	if err != nil {
		panic(err)
	}
	st := m.Store() // the store Apply changes; read it on the processing goroutine only
	for _, w := range []string{"to", "be", "or", "not", "to", "be"} {
		if err := m.Apply(operator.Record{Data: []byte(w)}); err != nil {
			panic(err)
		}
	}
	_ = state.NewMap(st, "count/", state.Uint64).Range(func(word string, n uint64) bool {
		fmt.Println(word, n)
		return true
	})
	// Output:
	// be 2
	// not 1
	// or 1
	// to 2
}
