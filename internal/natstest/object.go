package natstest

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Objects lists the objects of store, deleted ones left out, until ctx ends. nats.go's
// listing ends its initial pass only at a meta message with nothing pending after it, and
// otherwise waits until its context ends: when meta messages are removed between its check
// for an empty store and its consumer's start (retention and marker expiry do that), it
// can wait for ever. So each attempt has a deadline of its own, and one cut off by it is
// tried again.
func Objects(ctx context.Context, store jetstream.ObjectStore) ([]*jetstream.ObjectInfo, error) {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		lctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		infos, err := store.List(lctx)
		cut := lctx.Err() != nil
		cancel()
		switch {
		case errors.Is(err, jetstream.ErrNoObjectsFound):
			return nil, nil
		case err == nil:
			return infos, nil
		case !cut || ctx.Err() != nil:
			return nil, fmt.Errorf("listing objects: %w", err)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("listing objects: %w", ctx.Err())
		case <-tick.C:
		}
	}
}
