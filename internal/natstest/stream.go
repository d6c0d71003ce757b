package natstest

import (
	"context"
	"errors"
	"fmt"
	"slices"
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

// ReadSubject returns the messages stored in stream on subject (a filter), in stream order:
// those its consumer finds, to the last one stored when it is created. Messages purged
// while it reads (a trim moving up) are not waited for.
func ReadSubject(ctx context.Context, stream jetstream.Stream, subject string) ([]jetstream.Msg, error) {
	cons, err := stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{FilterSubjects: []string{subject}})
	if err != nil {
		return nil, err
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return nil, err
	}
	pending := info.NumPending
	if pending == 0 {
		return nil, nil
	}
	it, err := cons.Messages()
	if err != nil {
		return nil, err
	}
	defer it.Stop()
	out := make([]jetstream.Msg, 0, pending)
	for {
		m, err := it.Next(jetstream.NextContext(ctx))
		if err != nil {
			return nil, fmt.Errorf("read %s after %d of %d messages: %w", subject, len(out), pending, err)
		}
		out = append(out, m)
		md, err := m.Metadata()
		if err != nil {
			return nil, fmt.Errorf("read %s: metadata of message %d: %w", subject, len(out), err)
		}
		if md.NumPending == 0 {
			return out, nil
		}
	}
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

// publishBatch is how many messages Publish has in flight at most.
const publishBatch = 500

// batchWait bounds the wait for the acks of one batch of Publish: a bound per batch, not
// for the whole series, which a loaded machine may need far longer for.
const batchWait = 30 * time.Second

// Publish publishes payloads on subject in order, asynchronously in batches of
// publishBatch that wait for their acks, and returns the stream sequence of the last. With
// more in flight than the client's limit (4 000), a loaded machine stalls the publisher
// into an error; one synchronous publish at a time is slow.
func Publish(ctx context.Context, js jetstream.JetStream, subject string, payloads [][]byte) (uint64, error) {
	var last uint64
	for batch := range slices.Chunk(payloads, publishBatch) {
		acks := make([]jetstream.PubAckFuture, len(batch))
		for i, p := range batch {
			f, err := js.PublishAsync(subject, p)
			if err != nil {
				return last, fmt.Errorf("publish on %s: %w", subject, err)
			}
			acks[i] = f
		}
		bctx, cancel := context.WithTimeout(ctx, batchWait)
		for _, f := range acks {
			select {
			case ack := <-f.Ok():
				last = max(last, ack.Sequence)
			case err := <-f.Err():
				cancel()
				return last, fmt.Errorf("publish on %s: %w", subject, err)
			case <-bctx.Done():
				cancel()
				return last, fmt.Errorf("%d publishes on %s not acknowledged: %w", len(batch), subject, bctx.Err())
			}
		}
		cancel()
	}
	return last, nil
}
