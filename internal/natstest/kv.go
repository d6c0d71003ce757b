package natstest

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Keys lists the keys of kv that match filter, until ctx ends. nats.go's listing ends its
// initial pass only when it has received as many entries as were pending when its
// consumer started, or one with nothing pending after it: a purge marker that expires in
// between leaves it waiting, and when its context ends it closes with a partial list and
// no error. So each attempt has a deadline of its own, and one cut off by it is tried
// again.
func Keys(ctx context.Context, kv jetstream.KeyValue, filter string) ([]string, error) {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		keys, complete, err := keysOnce(ctx, kv, filter)
		if err != nil || complete {
			return keys, err
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("listing %s: %w", filter, ctx.Err())
		case <-tick.C:
		}
	}
}

// keysOnce lists the keys of kv that match filter within 3 s; complete is false when the
// listing was cut off by that deadline.
func keysOnce(ctx context.Context, kv jetstream.KeyValue, filter string) (keys []string, complete bool, err error) {
	lctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	lister, err := kv.ListKeysFiltered(lctx, filter)
	if lctx.Err() != nil {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("listing %s: %w", filter, err)
	}
	for k := range lister.Keys() {
		keys = append(keys, k)
	}
	return keys, lctx.Err() == nil, nil
}
