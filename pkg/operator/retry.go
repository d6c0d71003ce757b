package operator

import (
	"context"
	"fmt"
	"time"
)

// Backoff bounds of Retry.
const (
	// RetryFirstWait is the wait after the first failed attempt.
	RetryFirstWait = 250 * time.Millisecond
	// RetryMaxWait caps the wait, which doubles after every failed attempt.
	RetryMaxWait = 5 * time.Second
)

// Retry calls try until it returns nil or ctx ends, waiting RetryFirstWait after the first
// failure and twice as long after each further one, up to RetryMaxWait. onRetry, when not
// nil, is called after each failed attempt with its error and the wait before the next.
// When ctx ends first Retry returns an error wrapping both the last error and ctx's.
//
// It is the loop the runtime waits for its streams and buckets with, exported for an
// embedder's own setup (creating its streams, say) while NATS or JetStream come up.
func Retry(ctx context.Context, try func(context.Context) error, onRetry func(err error, wait time.Duration)) error {
	wait := RetryFirstWait
	for {
		err := try(ctx)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("%w (last attempt: %w)", ctx.Err(), err)
		}
		if onRetry != nil {
			onRetry(err, wait)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%w (last attempt: %w)", ctx.Err(), err)
		case <-t.C:
		}
		wait = min(2*wait, RetryMaxWait)
	}
}
