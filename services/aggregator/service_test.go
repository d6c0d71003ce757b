package aggregator_test

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
	"github.com/rs/zerolog"

	"github.com/cairn-stream/cairn/internal/natstest"
	"github.com/cairn-stream/cairn/pkg/cairnjs"
	"github.com/cairn-stream/cairn/pkg/messages"
	op "github.com/cairn-stream/cairn/pkg/operator"
	"github.com/cairn-stream/cairn/services/aggregator"
)

const (
	testJob  = "orders"
	waitLong = 15 * time.Second
)

// env is one test's server and connection.
type env struct {
	t    *testing.T
	s    *natstest.Server
	js   jetstream.JetStream
	subj cairnjs.Subjects
}

// running is a Service running in the background.
type running struct {
	svc  *aggregator.Service
	stop func()
}

// startService runs the reference operator for instance and waits until it is ready.
func (e *env) startService(instance string) *running {
	e.t.Helper()
	nc, _, _ := e.s.Resources(e.t, cairnjs.Options{LeaseTTL: time.Second})
	svc, err := aggregator.NewService(aggregator.DefaultConfig(testJob, instance), nc, zerolog.Nop())
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				e.t.Errorf("Run = %v", err)
			}
		})
	}
	select {
	case <-svc.Runtime().Ready():
	case err := <-done:
		cancel()
		e.t.Fatalf("Run returned before it was ready: %v", err)
	case <-time.After(waitLong):
		cancel()
		e.t.Fatal("service not ready")
	}
	e.t.Cleanup(stop)
	return &running{svc: svc, stop: stop}
}
func TestStateEndpoint(t *testing.T) {
	s := natstest.Start(t)
	nc := s.Connect(t)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, s: s, js: js}
	r := e.startService("counter-1")

	totals := map[string]messages.KeyTotals{}
	var last uint64
	for i := range 12 {
		key, value := []string{"x", "y", "z"}[i%3], int64(i-3)
		last = e.publish(fmt.Sprintf(`{"key":%q,"value":%d}`, key, value))
		t := totals[key]
		totals[key] = messages.KeyTotals{Count: t.Count + 1, Sum: t.Sum + value}
	}
	last = e.publish(`{"key":"x","value":0.5}`)
	natstest.Eventually(t, waitLong, "position not reached", func() bool { return r.svc.Runtime().Position() >= last })

	msg, err := nc.Request(e.subj.OperatorState(testJob, "counter-1"), nil, waitLong)
	if err != nil {
		t.Fatal(err)
	}
	if code := msg.Header.Get(micro.ErrorCodeHeader); code != "" {
		t.Fatalf("error %s: %s", code, msg.Data)
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(msg.Data, &raw); err != nil {
		t.Fatalf("reply %s: %v", msg.Data, err)
	}
	for _, f := range []string{"instance", "position", "keys", "rejected"} {
		if _, ok := raw[f]; !ok || len(raw) != 4 {
			t.Fatalf("reply %s, want exactly the fields instance, position, keys, rejected", msg.Data)
		}
	}
	var st messages.OperatorState
	if err := json.Unmarshal(msg.Data, &st); err != nil {
		t.Fatal(err)
	}
	if st.Instance != "counter-1" || st.Position != last || st.Rejected != 1 {
		t.Fatalf("state %+v, want instance counter-1, position %d, 1 rejected", st, last)
	}
	if !maps.Equal(st.Keys, totals) {
		t.Fatalf("totals %v, want %v", st.Keys, totals)
	}

	// The service is discoverable like every Cairn service.
	info, err := nc.Request("$SRV.INFO."+op.ServiceName, nil, waitLong)
	if err != nil {
		t.Fatal(err)
	}
	var si micro.Info
	if err := json.Unmarshal(info.Data, &si); err != nil {
		t.Fatal(err)
	}
	subjects := []string{e.subj.OperatorInfo(testJob, "counter-1"), e.subj.OperatorState(testJob, "counter-1")}
	if si.Version != messages.ServiceVersion || len(si.Endpoints) != 2 || si.Endpoints[0].Subject != subjects[0] || si.Endpoints[1].Subject != subjects[1] {
		t.Fatalf("service info %+v, want the endpoints %v", si, subjects)
	}

	// An empty instance answers an empty object, not null.
	r.stop()
	e.startService("empty-0")
	msg, err = nc.Request(e.subj.OperatorState(testJob, "empty-0"), nil, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"instance":"empty-0","position":0,"keys":{},"rejected":0}`; string(msg.Data) != want {
		t.Fatalf("reply %s, want %s", msg.Data, want)
	}
}

// publish publishes one event to counter-1's input subject and returns its sequence.
func (e *env) publish(data string) uint64 {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	ack, err := e.js.Publish(ctx, e.subj.Input(testJob, "counter-1"), []byte(data))
	if err != nil {
		e.t.Fatal(err)
	}
	return ack.Sequence
}
