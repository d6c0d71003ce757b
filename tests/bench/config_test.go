package bench

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cairn-stream/cairn/pkg/cairnjs"
)

// BenchmarkConfigSetApplied measures how long a config change takes to reach the
// coordinator: a real configsvc and coordinator, one reference operator, file storage.
//
// The job runs on interval 24h (see trigger). Each sample sends {"interval":"100ms"} to
// cairn.config.set.<job> at t0, when that interval is already overdue, so the coordinator
// sends a barrier the moment it applies the new version. It records:
//   - set→applied: the applied_at the coordinator stamps when it applies the version, read
//     with one status request after the barrier (not polled), minus t0; everything runs in
//     one process, so on one clock;
//   - set→barrier: the arrival of the first barrier under the new version at a subscriber,
//     minus t0: set→applied plus re-arming the timer, one KV compare-and-set for the
//     checkpoint id and one core publish.
//
// Then it sets 24h again and waits until the checkpoint has completed (not timed). The
// floor is measured before each sample, both after an idle pause (see pause): a raw
// JetStream publish→consume (a stream with CAIRN_CONFIG's settings, an ordered consumer on
// another connection) plus a raw core request→reply to a plain responder, the two
// transfers any config change needs. The table also gives the round trip of one more
// transfer that configsvc's compare-and-set makes first, reading the job's last event,
// measured on the floor's stream.
func BenchmarkConfigSetApplied(b *testing.B) {
	c := newCluster(b)
	c.startConfigsvc()
	c.startCoordinator()
	c.startAggregator("op-0")
	trig := newTrigger(c)
	floor := newPathFloor(c)
	c.waitStatus("lease held and the operator registered", leading(1))
	for range 3 {
		floor.sample(b)
	}

	var applied, onWire, replied, floors, pubs, rtts, reads sample
	for b.Loop() {
		trig.quiet()
		trig.due()
		pub, rtt, read := floor.sample(b)
		pubs, rtts, floors, reads = append(pubs, pub), append(rtts, rtt), append(floors, pub+rtt), append(reads, read)
		rest()

		sent, reply, version, br := trig.fire()
		replied = append(replied, reply.Sub(sent))
		onWire = append(onWire, br.at.Sub(sent))
		st, _ := c.status()
		if st.Config.Version != version || st.AppliedAt == nil {
			b.Fatalf("status shows version %d applied at %v; want version %d", st.Config.Version, st.AppliedAt, version)
		}
		applied = append(applied, st.AppliedAt.Sub(sent))
		trig.postpone()
	}
	b.ReportMetric(0, "ns/op")
	const floorName = "JS publish→consume + request RTT"
	figs := []figure{
		{name: "config set→applied", floorName: floorName, got: applied, floor: floors},
		{name: "config set→barrier", floorName: floorName, got: onWire, floor: floors},
	}
	figs[0].report(b, "", true)
	figs[1].report(b, "barrier-", false)
	b.Log(table(figs,
		"set→reply (configsvc answered): "+quantiles(replied),
		"floor parts: JS publish→consume "+quantiles(pubs)+"; request RTT "+quantiles(rtts),
		"not in the floor: a JS last-message-for-subject read, which configsvc makes first, "+quantiles(reads)))
}

// pathFloor measures the raw NATS transfers a config change rides on.
type pathFloor struct {
	js       jetstream.JetStream
	stream   jetstream.Stream
	nc       *nats.Conn
	subject  string
	echo     string
	payload  []byte
	received chan time.Time
}

func newPathFloor(c *cluster) *pathFloor {
	c.b.Helper()
	f := &pathFloor{
		subject:  "bench.floor.events",
		echo:     "bench.floor.echo",
		payload:  bytes.Repeat([]byte{'x'}, 128),
		received: make(chan time.Time, 16),
	}
	f.nc, f.js = c.connect()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()

	cfg := cairnjs.Options{}.StreamConfigs()[0]
	cfg.Name, cfg.Description, cfg.Subjects = "BENCH_FLOOR", "benchmark floor: CAIRN_CONFIG's settings", []string{f.subject}
	var err error
	if f.stream, err = f.js.CreateStream(ctx, cfg); err != nil {
		c.b.Fatalf("create floor stream: %v", err)
	}
	_, consumerJS := c.connect()
	cons, err := consumerJS.OrderedConsumer(ctx, cfg.Name, jetstream.OrderedConsumerConfig{FilterSubjects: []string{f.subject}})
	if err != nil {
		c.b.Fatalf("floor consumer: %v", err)
	}
	cc, err := cons.Consume(func(m jetstream.Msg) { f.received <- time.Now() })
	if err != nil {
		c.b.Fatalf("floor consumer: %v", err)
	}
	c.b.Cleanup(cc.Stop)

	responder, _ := c.connect()
	sub, err := responder.Subscribe(f.echo, func(m *nats.Msg) { _ = m.Respond(m.Data) })
	if err != nil {
		c.b.Fatalf("floor responder: %v", err)
	}
	if err := responder.Flush(); err != nil {
		c.b.Fatalf("floor responder: %v", err)
	}
	c.b.Cleanup(func() { _ = sub.Unsubscribe() })
	return f
}

// sample measures one JetStream publish→consume (from the call to Publish until the
// consumer's handler runs), one core request round trip and one read of the stream's last
// message on the subject.
func (f *pathFloor) sample(b *testing.B) (pub, rtt, read time.Duration) {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	t0 := time.Now()
	if _, err := f.js.Publish(ctx, f.subject, f.payload); err != nil {
		b.Fatalf("floor publish: %v", err)
	}
	select {
	case at := <-f.received:
		pub = at.Sub(t0)
	case <-ctx.Done():
		b.Fatalf("floor consumer received nothing within %s", waitTimeout)
	}
	t1 := time.Now()
	if _, err := f.nc.RequestWithContext(ctx, f.echo, f.payload); err != nil {
		b.Fatalf("floor request: %v", err)
	}
	rtt = time.Since(t1)
	t2 := time.Now()
	if _, err := f.stream.GetLastMsgForSubject(ctx, f.subject); err != nil {
		b.Fatalf("floor read: %v", err)
	}
	return pub, rtt, time.Since(t2)
}
