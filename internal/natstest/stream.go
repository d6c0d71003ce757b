package natstest

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
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
