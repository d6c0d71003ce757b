package natstest

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
)

// FirstSeq returns the stream sequence of the first message left on subject in stream, 0
// when the subject holds none. Trimming or purging moves it forward.
func FirstSeq(ctx context.Context, stream jetstream.Stream, subject string) (uint64, error) {
	m, err := stream.GetMsg(ctx, 1, jetstream.WithGetMsgSubject(subject))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("first message of %s: %w", subject, err)
	}
	return m.Sequence, nil
}

// ReadSubject returns the messages stored in stream on subject (a filter), in stream order.
func ReadSubject(ctx context.Context, stream jetstream.Stream, subject string) ([]jetstream.Msg, error) {
	info, err := stream.Info(ctx, jetstream.WithSubjectFilter(subject))
	if err != nil {
		return nil, err
	}
	var total uint64
	for _, n := range info.State.Subjects {
		total += n
	}
	if total == 0 {
		return nil, nil
	}
	cons, err := stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{FilterSubjects: []string{subject}})
	if err != nil {
		return nil, err
	}
	it, err := cons.Messages()
	if err != nil {
		return nil, err
	}
	defer it.Stop()
	out := make([]jetstream.Msg, 0, total)
	for uint64(len(out)) < total {
		m, err := it.Next(jetstream.NextContext(ctx))
		if err != nil {
			return nil, fmt.Errorf("read %s after %d of %d messages: %w", subject, len(out), total, err)
		}
		out = append(out, m)
	}
	return out, nil
}

// SetDuplicateWindow changes the duplicate window of stream name to d, so that a test
// proves a deduplication that does not rely on the window.
func SetDuplicateWindow(ctx context.Context, js jetstream.JetStream, name string, d time.Duration) error {
	st, err := js.Stream(ctx, name)
	if err != nil {
		return err
	}
	cfg := st.CachedInfo().Config
	cfg.Duplicates = d
	if _, err := js.UpdateStream(ctx, cfg); err != nil {
		return fmt.Errorf("set the duplicate window of %s to %s: %w", name, d, err)
	}
	return nil
}

// PassDuplicateWindow publishes a probe on subject with a new Nats-Msg-Id and publishes
// it again, every 100 ms, until the stream stores it again instead of dropping it as a
// duplicate: the stream's duplicate window then no longer holds any id published before
// the probe. It returns when ctx ends first. The subject gets two probe messages.
func PassDuplicateWindow(ctx context.Context, js jetstream.JetStream, subject string) error {
	id := "window-probe-" + nuid.Next()
	if _, err := js.Publish(ctx, subject, []byte("probe"), jetstream.WithMsgID(id)); err != nil {
		return fmt.Errorf("publish the duplicate window probe on %s: %w", subject, err)
	}
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for the duplicate window of %s to pass: %w", subject, ctx.Err())
		case <-tick.C:
		}
		ack, err := js.Publish(ctx, subject, []byte("probe"), jetstream.WithMsgID(id))
		if err != nil {
			return fmt.Errorf("publish the duplicate window probe on %s: %w", subject, err)
		}
		if !ack.Duplicate {
			return nil
		}
	}
}

// asyncBatch is how many publishes PublishMany has in flight: with more than the client's
// limit of pending async publishes (4 000), a loaded machine stalls the publisher into an
// error.
const asyncBatch = 500

// PublishMany publishes n messages on subject, the i-th with payload(i), asynchronously in
// batches that wait for their acks, and returns once every one is stored or ctx ends.
func PublishMany(ctx context.Context, js jetstream.JetStream, subject string, n int, payload func(i int) []byte) error {
	for i := range n {
		if _, err := js.PublishAsync(subject, payload(i)); err != nil {
			return fmt.Errorf("publish message %d of %d on %s: %w", i+1, n, subject, err)
		}
		if (i+1)%asyncBatch != 0 && i+1 != n {
			continue
		}
		select {
		case <-js.PublishAsyncComplete():
		case <-ctx.Done():
			return fmt.Errorf("messages on %s not acknowledged: %w", subject, ctx.Err())
		}
	}
	return nil
}
