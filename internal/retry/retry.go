package retry

import (
	"context"
	"fmt"
	"time"
)

// Backoff bounds of Do.
const (
	// FirstWait is the wait after the first failed attempt.
	FirstWait = 250 * time.Millisecond
	// MaxWait caps the wait, which doubles after every failed attempt.
	MaxWait = 5 * time.Second
)

// Do calls try until it returns nil or ctx ends, waiting FirstWait after the first failure
// and twice as long after each further one, up to MaxWait. onRetry, when not nil, is called
// after each failed attempt with its error and the wait before the next. When ctx ends
// first Do returns an error wrapping both the last error and ctx's.
func Do(ctx context.Context, try func(context.Context) error, onRetry func(err error, wait time.Duration)) error {
	for failures := 0; ; failures++ {
		err := try(ctx)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("%w (last attempt: %w)", ctx.Err(), err)
		}
		wait := Doubling(FirstWait, failures, MaxWait)
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
	}
}

// Doubling returns first doubled n times, at most limit (n ≤ 0: first): the wait of Do
// after n+1 failed attempts, and of anything else that waits longer with each repeat.
func Doubling(first time.Duration, n int, limit time.Duration) time.Duration {
	d := first
	for i := 0; i < n && d < limit; i++ {
		d *= 2
	}
	return min(d, limit)
}
