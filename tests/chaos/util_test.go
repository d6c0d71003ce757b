package chaos

import (
	"context"
	"fmt"
	"time"
)

// poll calls cond every period until it returns true or an error, or ctx ends.
func poll(ctx context.Context, period time.Duration, what string, cond func() (bool, error)) error {
	tick := time.NewTicker(period)
	defer tick.Stop()
	for {
		ok, err := cond()
		if err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w", what, ctx.Err())
		case <-tick.C:
		}
	}
}

// pause waits d, the randomized gap a schedule puts between two chaos actions; it
// returns false when ctx ends first.
func pause(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
