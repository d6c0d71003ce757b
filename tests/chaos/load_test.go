package chaos

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cairn-stream/cairn/pkg/messages"
)

// load is the known event stream: every instance gets events {"key":"k<i%keys>",
// "value":<v>} at a steady rate, each with a deterministic Nats-Msg-Id and retried with
// that id until JetStream stores it, so the expected totals are exactly what was
// published.
type load struct {
	js   jetstream.JetStream
	seed uint64

	mu       sync.Mutex
	expected []map[string]messages.KeyTotals // per instance, per key
	values   [][]int64                       // per instance, the values in publish order
	retries  int
}

func newLoad(js jetstream.JetStream, seed uint64) *load {
	l := &load{js: js, seed: seed, expected: make([]map[string]messages.KeyTotals, instances), values: make([][]int64, instances)}
	for i := range l.expected {
		l.expected[i] = map[string]messages.KeyTotals{}
	}
	return l
}

// run publishes until stop ends, then returns once the events in flight are stored. A
// publish still not stored when ctx ends is an error.
func (l *load) run(ctx, stop context.Context) error {
	errs := make(chan error, instances)
	for i := range instances {
		go func() { errs <- l.feed(ctx, stop, i) }()
	}
	var first error
	for range instances {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	return first
}

// feed publishes instance i's events, one per tick; a tick missed while a publish is
// retried is dropped, so an outage slows the stream rather than bunching it up.
func (l *load) feed(ctx, stop context.Context, i int) error {
	rng := rand.New(rand.NewPCG(l.seed, uint64(i)))
	subject := subjects.Input(job, instanceName(i))
	tick := time.NewTicker(time.Duration(float64(time.Second) / rate))
	defer tick.Stop()
	for n := 0; ; n++ {
		select {
		case <-stop.Done():
			return nil
		case <-tick.C:
		}
		ev := messages.InputEvent{Key: keyOf(n), Value: 1 + rng.Int64N(100)}
		data, err := json.Marshal(ev)
		if err != nil {
			return err
		}
		if err := l.publish(ctx, subject, data, fmt.Sprintf("%s-%d", instanceName(i), n)); err != nil {
			return err
		}
		l.mu.Lock()
		kt := l.expected[i][ev.Key]
		kt.Count++
		kt.Sum += ev.Value
		l.expected[i][ev.Key] = kt
		l.values[i] = append(l.values[i], ev.Value)
		l.mu.Unlock()
	}
}

// publish retries with the same Nats-Msg-Id until the event is stored (a duplicate ack
// means an earlier attempt was) or ctx ends.
func (l *load) publish(ctx context.Context, subject string, data []byte, id string) error {
	wait := 20 * time.Millisecond
	for {
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := l.js.Publish(pctx, subject, data, jetstream.WithMsgID(id))
		cancel()
		if err == nil {
			return nil
		}
		l.mu.Lock()
		l.retries++
		l.mu.Unlock()
		if !pause(ctx, wait) {
			return fmt.Errorf("event %s on %s not stored: %w", id, subject, err)
		}
		wait = min(wait*2, time.Second)
	}
}

// totals returns what was published: per instance the values in publish order and the
// per-key totals, and how many publishes were retried.
func (l *load) totals() ([][]int64, []map[string]messages.KeyTotals, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	values := make([][]int64, len(l.values))
	exp := make([]map[string]messages.KeyTotals, len(l.expected))
	for i := range l.expected {
		values[i] = slices.Clone(l.values[i])
		exp[i] = maps.Clone(l.expected[i])
	}
	return values, exp, l.retries
}

// keyOf is the key of the n-th event of an instance.
func keyOf(n int) string { return fmt.Sprintf("k%d", n%keys) }
