package main

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cairn-stream/cairn/internal/cairntest"
	"github.com/cairn-stream/cairn/internal/natstest"
	"github.com/cairn-stream/cairn/internal/proctest"
	cjs "github.com/cairn-stream/cairn/pkg/jetstream"
)

// TestHelperProcess is the operator as a separate process, started by
// TestOrdersSurvivesSIGKILLUnderLoad with ORDERS_HELPER=1 so that it can be SIGKILLed.
func TestHelperProcess(t *testing.T) {
	if os.Getenv("ORDERS_HELPER") != "1" {
		t.Skip("run by TestOrdersSurvivesSIGKILLUnderLoad")
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Getenv("NATS_URL"), instance, slog.New(slog.NewTextHandler(os.Stderr, nil))); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

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

// TestOrdersSurvivesSIGKILLUnderLoad SIGKILLs the operator process at checkpoints while
// orders keep arriving, restarts it, and finds its totals exact.
func TestOrdersSurvivesSIGKILLUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	s := natstest.Start(t)
	nc, js, res := s.Resources(t, cjs.Options{Memory: true})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "ORDERS", Subjects: []string{"orders.>"}, Storage: jetstream.MemoryStorage}); err != nil {
		t.Fatal(err)
	}
	coord := cairntest.NewCoordinator(t, nc, res.Manifests, "orders")
	env := append(os.Environ(), "ORDERS_HELPER=1", "NATS_URL="+s.URL)
	p, err := proctest.New("orders", filepath.Join(t.TempDir(), "orders.log"), os.Args[0], env, "-test.run=^TestHelperProcess$", "-test.count=1")
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
	id := uint64(0)
	for kill := range 4 {
		if err := p.Start(); err != nil {
			t.Fatal(err)
		}
		waitPosition(t, nc, 0)
		for range 3 {
			id++
			coord.Complete(id, coord.Checkpoint(id))
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
	if info := waitPosition(t, nc, f.last); info.RestoredCheckpoint != id {
		t.Fatalf("restored checkpoint %d, want %d", info.RestoredCheckpoint, id)
	}
	if got := totals(t, nc); !maps.Equal(got, f.want) {
		t.Fatalf("totals after %d kills %v, want %v", 4, got, f.want)
	}
}
