package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cairn-stream/cairn/internal/authgen"
	"github.com/cairn-stream/cairn/internal/natstest"
	"github.com/cairn-stream/cairn/pkg/cairnjs"
	"github.com/cairn-stream/cairn/pkg/messages"
	"github.com/cairn-stream/cairn/pkg/operator/operatortest"
)

const instance = "orders-0"

// totals asks the operator for its totals.
func totals(t *testing.T, nc *nats.Conn) map[string]Totals {
	t.Helper()
	msg, err := nc.Request("cairn.op.orders."+instance+".totals", nil, operatortest.Wait)
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]Totals
	if err := json.Unmarshal(msg.Data, &got); err != nil {
		t.Fatalf("totals %s: %v", msg.Data, err)
	}
	return got
}

// waitPosition waits until the operator is running and its info shows position seq, and
// returns the info.
func waitPosition(t *testing.T, nc *nats.Conn, seq uint64) messages.OperatorInfo {
	t.Helper()
	var info messages.OperatorInfo
	operatortest.Eventually(t, operatortest.Wait, fmt.Sprintf("position never reached %d", seq), func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, err := natstest.RequestJSON(ctx, nc, cairnjs.Subjects{}.OperatorInfo("orders", instance), nil, &info)
		return err == nil && info.Position >= seq
	})
	return info
}

func TestOrders(t *testing.T) {
	s := natstest.Start(t)
	nc, js, res := s.Resources(t, cairnjs.Options{Memory: true})
	exercise(t, nc, js, res, cairnjs.ConnectOptions{URLs: s.URL})
}

// TestOrdersWithGeneratedPermissions runs the operator as the user `cairn auth` generates
// for it (its input stream and filters in the spec), with its nkey and inbox prefix, and
// finds no permission violation.
func TestOrdersWithGeneratedPermissions(t *testing.T) {
	spec := authgen.Spec{Jobs: []authgen.Job{{Name: "orders", Instances: []string{instance},
		Input: &authgen.Stream{Stream: "ORDERS", Subjects: []string{"orders.eu.>", "orders.us.>"}}}}}
	users, err := authgen.Generate(spec, authgen.NoSeeds)
	if err != nil {
		t.Fatal(err)
	}
	var conf strings.Builder
	if err := authgen.WriteServerConfig(&conf, spec, users, t.Name()); err != nil {
		t.Fatal(err)
	}
	var log natstest.LogBuffer
	s := natstest.StartConfig(t, conf.String(), &log)
	connect := func(name string) cairnjs.ConnectOptions {
		for _, u := range users {
			if u.Name == name {
				return cairnjs.ConnectOptions{URLs: s.URL, NKeySeed: string(u.Seed), InboxPrefix: u.InboxPrefix, Name: name}
			}
		}
		t.Fatalf("no user %s", name)
		return cairnjs.ConnectOptions{}
	}
	admin, err := cairnjs.Connect(connect("admin.admin"))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	js, err := jetstream.New(admin)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), operatortest.Wait)
	defer cancel()
	res, err := cairnjs.Ensure(ctx, js, cairnjs.Options{Memory: true})
	if err != nil {
		t.Fatal(err)
	}
	exercise(t, admin, js, res, connect("op.orders."+instance))
	if strings.Contains(log.String(), "Violation") {
		t.Fatalf("permission violations:\n%s", log.String())
	}
}

// exercise starts the operator connecting with opts before its stream exists, feeds it orders, takes a
// checkpoint, restarts it after more orders and checks its totals; nc, js and res are an
// admin's, playing the coordinator.
func exercise(t *testing.T, nc *nats.Conn, js jetstream.JetStream, res *cairnjs.Resources, opts cairnjs.ConnectOptions) {
	t.Helper()
	coord := operatortest.NewCoordinator(t, nc, "orders")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))

	start := func() (stop func()) {
		rctx, rcancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- run(rctx, opts, instance, log) }()
		return func() {
			rcancel()
			if err := <-done; err != nil {
				t.Errorf("run = %v", err)
			}
		}
	}
	// The operator starts before its stream exists and waits for it.
	stop := start()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "ORDERS", Subjects: []string{"orders.>"}, Storage: jetstream.MemoryStorage}); err != nil {
		t.Fatal(err)
	}
	want := map[string]Totals{}
	var last uint64
	publish := func(n int) {
		for i := range n {
			region := []string{"eu", "us", "asia"}[i%3]
			ack, err := js.Publish(ctx, "orders."+region+".web", fmt.Appendf(nil, `{"amount":%d}`, i+1))
			if err != nil {
				t.Fatal(err)
			}
			if region != "asia" { // not among the operator's filters
				tt := want[region]
				want[region] = Totals{Count: tt.Count + 1, Amount: tt.Amount + int64(i+1)}
				last = ack.Sequence
			}
		}
	}
	publish(30)
	waitPosition(t, nc, last)
	ack := coord.Checkpoint(1)
	coord.Complete(1, ack)
	publish(30) // after the checkpoint: replayed after the restart
	waitPosition(t, nc, last)
	stop()

	publish(9)
	stop = start()
	defer stop()
	if info := waitPosition(t, nc, last); info.RestoredCheckpoint != 1 {
		t.Fatalf("info after the restart %+v, want checkpoint 1 restored", info)
	}
	if got := totals(t, nc); !maps.Equal(got, want) {
		t.Fatalf("totals after the restart %v, want %v", got, want)
	}
}
