package proctest

import (
	"context"
	"fmt"
	"os"
	"strings"
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

// ServiceEnv is the environment of the cairn processes: the test's own, without any NATS,
// Cairn or log settings it may carry, plus the server's URL and LOG_LEVEL=info.
func ServiceEnv(url string) []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "NATS_") || strings.HasPrefix(k, "CAIRN_") || k == "LOG_LEVEL" {
			continue
		}
		env = append(env, kv)
	}
	return append(env, "NATS_URL="+url, "LOG_LEVEL=info")
}
