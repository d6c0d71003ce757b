package chaos

import (
	"context"
	"time"

	"github.com/cairn-stream/cairn/internal/proctest"
)

// poll calls cond every period until it returns true or an error, or ctx ends.
var poll = proctest.Poll

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
