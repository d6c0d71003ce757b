package loadgen

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
	"github.com/rs/zerolog"

	"github.com/cairn-stream/cairn/pkg/cairnjs"
	"github.com/cairn-stream/cairn/pkg/messages"
)

// Config says what to publish.
type Config struct {
	Subjects  cairnjs.Subjects
	Job       string
	Instances []string
	// Rate is events per second per instance.
	Rate float64
	// Keys is how many distinct keys the events spread over.
	Keys int
	// Count stops after this many events per instance; 0 runs until ctx is done.
	Count int
}

// DefaultConfig publishes 5 events per second to each instance over 8 keys.
func DefaultConfig(job string, instances ...string) Config {
	return Config{Job: job, Instances: instances, Rate: 5, Keys: 8}
}

// Validate checks names and ranges.
func (c Config) Validate() error {
	if err := messages.ValidateName("job", c.Job); err != nil {
		return err
	}
	if len(c.Instances) == 0 {
		return errors.New("loadgen: no instances given")
	}
	for _, i := range c.Instances {
		if err := messages.ValidateName("instance", i); err != nil {
			return err
		}
	}
	if c.Rate <= 0 || c.Rate > 100000 {
		return fmt.Errorf("loadgen: rate %g is out of range; allowed: more than 0 up to 100000 per second", c.Rate)
	}
	if c.Keys < 1 || c.Keys > 1000000 {
		return fmt.Errorf("loadgen: keys %d is out of range; allowed: 1 to 1000000", c.Keys)
	}
	if c.Count < 0 {
		return fmt.Errorf("loadgen: count %d is negative", c.Count)
	}
	return nil
}

// publisher is what the generator needs of JetStream.
type publisher interface {
	Publish(ctx context.Context, subject string, data []byte, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error)
}

// Run publishes until ctx is done or Count events per instance are out. A publish that
// fails is retried with the same Nats-Msg-Id until it is stored or ctx ends, so nothing is
// lost or stored twice.
func Run(ctx context.Context, cfg Config, js publisher, log zerolog.Logger) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	run := nuid.Next()
	tick := time.NewTicker(time.Duration(float64(time.Second) / cfg.Rate))
	defer tick.Stop()
	log.Info().Str("job", cfg.Job).Strs("instances", cfg.Instances).Float64("rate", cfg.Rate).Msg("load generator running")
	for n := 0; cfg.Count == 0 || n < cfg.Count; n++ {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		for _, inst := range cfg.Instances {
			data, err := json.Marshal(Event(n, cfg.Keys))
			if err != nil {
				return err
			}
			id := fmt.Sprintf("%s-%s-%d", run, inst, n)
			if err := publish(ctx, js, cfg.Subjects.Input(cfg.Job, inst), data, id, log); err != nil {
				return nil
			}
		}
	}
	return nil
}

// Event is the n-th event (from 0) the generator publishes to each instance: key
// k<n mod keys>, value n mod 10 + 1. Its Nats-Msg-Id is <run>-<instance>-<n>, run being new
// at every start.
func Event(n, keys int) messages.InputEvent {
	return messages.InputEvent{Key: fmt.Sprintf("k%d", n%keys), Value: int64(n%10 + 1)}
}

// Totals are the per-key count and sum of events 0 to count-1 of one run: what an
// aggregator that applied each of them once holds.
func Totals(count, keys int) map[string]messages.KeyTotals {
	totals := map[string]messages.KeyTotals{}
	for n := range count {
		ev := Event(n, keys)
		k := totals[ev.Key]
		k.Count++
		k.Sum += ev.Value
		totals[ev.Key] = k
	}
	return totals
}

// SequenceOf returns n of a Nats-Msg-Id <run>-<instance>-<n> the generator set; ok is false
// for any other id.
func SequenceOf(msgID string) (n int, ok bool) {
	i := strings.LastIndexByte(msgID, '-')
	if i < 0 {
		return 0, false
	}
	n, err := strconv.Atoi(msgID[i+1:])
	return n, err == nil && n >= 0
}

// publish retries until stored or ctx is done (then it returns ctx's error).
func publish(ctx context.Context, js publisher, subject string, data []byte, id string, log zerolog.Logger) error {
	wait := 50 * time.Millisecond
	for {
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := js.Publish(pctx, subject, data, jetstream.WithMsgID(id))
		cancel()
		if err == nil {
			return nil
		}
		log.Warn().Err(err).Str("subject", subject).Msg("publish failed; retrying")
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		wait = min(wait*2, 2*time.Second)
	}
}
