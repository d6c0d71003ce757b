package main

import (
	"context"
	"fmt"
	"maps"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/cairn-stream/cairn/internal/natstest"
	"github.com/cairn-stream/cairn/internal/proctest"
	"github.com/cairn-stream/cairn/pkg/cairnjs"
	"github.com/cairn-stream/cairn/pkg/messages"
	"github.com/cairn-stream/cairn/pkg/operator/operatortest"
	"github.com/cairn-stream/cairn/services/configsvc"
	"github.com/cairn-stream/cairn/services/coordinator"
)

// feed publishes orders to eu, us and asia until stop is closed, and keeps the totals
// the operator must end with.
type feed struct {
	mu   sync.Mutex
	want map[string]Totals
	last uint64
	err  error
}

func (f *feed) run(ctx context.Context, js jetstream.JetStream, stop <-chan struct{}) {
	for i := 0; ; i++ {
		select {
		case <-stop:
			return
		default:
		}
		region := []string{"eu", "us", "asia"}[i%3]
		ack, err := js.Publish(ctx, "orders."+region+".app", fmt.Appendf(nil, `{"amount":%d}`, i%50))
		f.mu.Lock()
		if err != nil {
			f.err = err
			f.mu.Unlock()
			return
		}
		if region != "asia" {
			t := f.want[region]
			f.want[region] = Totals{Count: t.Count + 1, Amount: t.Amount + int64(i%50)}
			f.last = ack.Sequence
		}
		f.mu.Unlock()
	}
}

// startCairn runs the config service and a coordinator on nc until the test ends, and
// sets job orders to checkpoint every 200ms, as `cairn dev` and the guide's
// `nats req cairn.config.set.orders` do.
func startCairn(t *testing.T, nc *nats.Conn, js jetstream.JetStream, res *cairnjs.Resources) {
	t.Helper()
	cfgsvc, err := configsvc.New(configsvc.DefaultConfig(), nc, js, res.Config, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	coord, err := coordinator.New(coordinator.DefaultConfig(), nc, js, res, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errs := make(chan error, 2)
	go func() { errs <- cfgsvc.Run(ctx) }()
	go func() { errs <- coord.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		for range 2 {
			if err := <-errs; err != nil {
				t.Errorf("cairn service: %v", err)
			}
		}
	})
	rctx, rcancel := context.WithTimeout(context.Background(), operatortest.Wait)
	defer rcancel()
	var applied map[string]any
	if _, err := natstest.RequestJSON(rctx, nc, cairnjs.Subjects{}.ConfigSet("orders"), []byte(`{"interval":"200ms"}`), &applied); err != nil {
		t.Fatalf("set the checkpoint interval: %v", err)
	}
}

// waitCompleted waits for n checkpoints newer than after to complete and returns the id
// of the last.
func waitCompleted(t *testing.T, events <-chan *nats.Msg, after uint64, n int) uint64 {
	t.Helper()
	timeout := time.NewTimer(operatortest.Wait)
	defer timeout.Stop()
	for n > 0 {
		select {
		case msg := <-events:
			var e messages.CheckpointEvent
			if err := messages.Unmarshal(msg.Data, &e); err != nil {
				t.Fatalf("checkpoint event: %v", err)
			}
			if e.CheckpointID > after {
				after = e.CheckpointID
				n--
			}
		case <-timeout.C:
			t.Fatalf("no checkpoint after %d completed within %s", after, operatortest.Wait)
		}
	}
	return after
}

// waitBarrier waits for the barrier of a checkpoint newer than after.
func waitBarrier(t *testing.T, barriers <-chan *nats.Msg, after uint64) {
	t.Helper()
	timeout := time.NewTimer(operatortest.Wait)
	defer timeout.Stop()
	for {
		select {
		case msg := <-barriers:
			var b messages.Barrier
			if err := messages.Unmarshal(msg.Data, &b); err != nil {
				t.Fatalf("barrier: %v", err)
			}
			if b.CheckpointID > after {
				return
			}
		case <-timeout.C:
			t.Fatalf("no barrier after checkpoint %d within %s", after, operatortest.Wait)
		}
	}
}

// TestGuideOperatorSurvivesSIGKILLUnderLoad is acceptance 2 of the operator guide: the
// guide's program, built in a module of its own, runs under Cairn's coordinator, is
// SIGKILLed (after a completed checkpoint, or during one) and restarted while orders keep
// arriving on its two subjects and others, and ends with its totals exact, restored from
// the newest completed checkpoint.
func TestGuideOperatorSurvivesSIGKILLUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the guide's program and starts processes")
	}
	bin := buildGuide(t)
	s := natstest.Start(t)
	nc, js, res := s.Resources(t, cairnjs.Options{Memory: true})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "ORDERS", Subjects: []string{"orders.>"}, Storage: jetstream.MemoryStorage}); err != nil {
		t.Fatal(err)
	}
	completed := make(chan *nats.Msg, 1024)
	sub, err := nc.ChanSubscribe(cairnjs.Subjects{}.CheckpointEvent("orders", "completed"), completed)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	barriers := make(chan *nats.Msg, 1024)
	bsub, err := nc.ChanSubscribe(cairnjs.Subjects{}.Barrier("orders"), barriers)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = bsub.Unsubscribe() }()
	startCairn(t, nc, js, res)

	env := append(proctest.ServiceEnv(s.URL), "INSTANCE="+instance)
	p, err := proctest.New("orders", filepath.Join(t.TempDir(), "orders.log"), bin, env)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := p.Terminate(10 * time.Second); err != nil {
			t.Errorf("stop the operator: %v", err)
		}
		if t.Failed() {
			t.Logf("operator log:\n%s", p.Tail(60))
		}
		p.Close()
	})

	f := &feed{want: map[string]Totals{}}
	stop := make(chan struct{})
	fed := make(chan struct{})
	go func() { defer close(fed); f.run(ctx, js, stop) }()
	const kills = 4
	var last uint64 // the newest completed checkpoint
	for kill := range kills {
		if err := p.Start(); err != nil {
			t.Fatal(err)
		}
		restored := waitPosition(t, nc, 0).RestoredCheckpoint
		if restored < last {
			t.Fatalf("start %d restored checkpoint %d, want %d or newer", kill+1, restored, last)
		}
		// Two completed checkpoints: the second was triggered after this incarnation
		// registered, so it holds a snapshot of this run.
		last = waitCompleted(t, completed, max(restored, last), 2)
		if kill%2 == 1 {
			// Every other kill lands in the middle of the next checkpoint.
			waitBarrier(t, barriers, last)
		}
		if _, err := p.Kill(); err != nil {
			t.Fatalf("kill %d: %v", kill+1, err)
		}
	}
	close(stop)
	<-fed
	if f.err != nil {
		t.Fatalf("feed: %v", f.err)
	}
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	info := waitPosition(t, nc, f.last)
	if info.RestoredCheckpoint < last {
		t.Fatalf("restored checkpoint %d, want %d or newer", info.RestoredCheckpoint, last)
	}
	if got := totals(t, nc); !maps.Equal(got, f.want) {
		t.Fatalf("totals after %d kills %v, want %v", kills, got, f.want)
	}
	t.Logf("exact after %d kills: %v up to input sequence %d, restored checkpoint %d", kills, f.want, f.last, info.RestoredCheckpoint)
}
