package proctest

import (
	"context"
	"fmt"
	"time"
)

// Poll calls cond every period until it returns true or an error, or ctx ends.
func Poll(ctx context.Context, period time.Duration, what string, cond func() (bool, error)) error {
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
