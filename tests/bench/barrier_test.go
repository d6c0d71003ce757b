package bench

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/cairn-stream/cairn/pkg/messages"
)

// barrierInterval is the checkpoint interval whose emission error is measured: the
// smallest the config allows.
const barrierInterval = 100 * time.Millisecond

// BenchmarkBarrierEmission measures how regularly the coordinator emits barriers at
// interval 100ms: a real configsvc and coordinator, one reference operator acking every
// checkpoint, file storage. Each sample is |gap between the arrivals of two consecutive
// barriers at a subscriber − 100ms|. The table also gives the same error computed from the
// barriers' TriggeredAt stamps (the coordinator's timer alone, without the KV
// compare-and-set for the id and the publish that follow it).
//
// The floor runs alongside, in the same process and the same 100ms rhythm: a goroutine
// with one time.Timer re-armed from the moment it fired, as the coordinator's loop re-arms
// its timer, publishing a core message that a subscriber on another connection timestamps:
// the same re-arming rule with nothing else in the way. The table's last line gives the
// mean gaps: re-arming from the moment the timer fired carries its lateness into every
// interval.
func BenchmarkBarrierEmission(b *testing.B) {
	c := newCluster(b)
	c.startConfigsvc()
	c.startCoordinator()
	c.startAggregator("op-0")
	barriers := follow[messages.Barrier](c, c.subjects.Barrier(job))
	c.waitStatus("lease held and the operator registered", leading(1))

	version := c.set(`{"interval":"100ms"}`).Version
	underVersion := func(a arrival[*messages.Barrier]) bool { return a.msg.ConfigVersion == version }
	next(b, barriers, "first barrier at 100ms", underVersion)
	prev := next(b, barriers, "second barrier at 100ms", underVersion)
	ticks := startTicker(c, barrierInterval)

	var onWire, scheduled sample
	first, skipped := prev, 0
	for b.Loop() {
		br := next(b, barriers, "next barrier", underVersion)
		if br.msg.CheckpointID != prev.msg.CheckpointID+1 {
			skipped++
		}
		onWire = append(onWire, abs(br.at.Sub(prev.at)-barrierInterval))
		scheduled = append(scheduled, abs(br.msg.TriggeredAt.Sub(prev.msg.TriggeredAt)-barrierInterval))
		prev = br
	}
	floor, floorMean := ticks.stop(b)
	b.ReportMetric(0, "ns/op")
	const floorName = "Go timer + core publish, same rhythm"
	figs := []figure{
		{name: "barrier |gap−100ms|, arrivals", floorName: floorName, got: onWire, floor: floor},
		{name: "barrier |gap−100ms|, TriggeredAt", floorName: floorName, got: scheduled, floor: floor},
	}
	figs[0].report(b, "", true)
	figs[1].report(b, "triggered-", false)
	mean := prev.at.Sub(first.at) / time.Duration(max(len(onWire), 1))
	notes := []string{fmt.Sprintf("mean gap (drift): barriers %.3fms, floor %.3fms", ms(mean), ms(floorMean))}
	if skipped > 0 {
		notes = append(notes, fmt.Sprintf("%d checkpoint ids skipped: a trigger failed and was retried", skipped))
	}
	b.Log(table(figs, notes...))
}

// ticker is the floor of BenchmarkBarrierEmission: a timer loop publishing core messages
// and a subscriber recording their arrival.
type ticker struct {
	every  time.Duration
	cancel context.CancelFunc
	done   chan struct{}
	sub    *nats.Subscription

	mu       sync.Mutex
	arrivals []time.Time
}

func startTicker(c *cluster, every time.Duration) *ticker {
	c.b.Helper()
	const subject = "bench.floor.tick"
	pub, _ := c.connect()
	recv, _ := c.connect()
	t := &ticker{every: every, done: make(chan struct{})}
	var err error
	t.sub, err = recv.Subscribe(subject, func(*nats.Msg) {
		at := time.Now()
		t.mu.Lock()
		t.arrivals = append(t.arrivals, at)
		t.mu.Unlock()
	})
	if err != nil {
		c.b.Fatalf("floor subscriber: %v", err)
	}
	if err := recv.Flush(); err != nil {
		c.b.Fatalf("floor subscriber: %v", err)
	}
	var ctx context.Context
	ctx, t.cancel = context.WithCancel(context.Background())
	go func() {
		defer close(t.done)
		timer := time.NewTimer(every)
		defer timer.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-timer.C:
			}
			fired := time.Now()
			if err := pub.Publish(subject, nil); err != nil {
				c.b.Errorf("floor publish: %v", err)
				return
			}
			timer.Reset(time.Until(fired.Add(every)))
		}
	}()
	return t
}

// stop ends the loop and returns |gap − interval| of every pair of consecutive arrivals,
// and the mean gap.
func (t *ticker) stop(b *testing.B) (sample, time.Duration) {
	b.Helper()
	t.cancel()
	<-t.done
	if err := t.sub.Unsubscribe(); err != nil {
		b.Errorf("floor subscriber: %v", err)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	var s sample
	for i := 1; i < len(t.arrivals); i++ {
		s = append(s, abs(t.arrivals[i].Sub(t.arrivals[i-1])-t.every))
	}
	if len(s) == 0 {
		return s, 0
	}
	return s, t.arrivals[len(t.arrivals)-1].Sub(t.arrivals[0]) / time.Duration(len(s))
}
