package store

import (
	"context"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// keyWatcher starts KV watches (jetstream.KeyValue).
type keyWatcher interface {
	Watch(ctx context.Context, keys string, opts ...jetstream.WatchOpt) (jetstream.KeyWatcher, error)
}

// statusNotifier tells about connection state changes (*nats.Conn).
type statusNotifier interface {
	StatusChanged(statuses ...nats.Status) chan nats.Status
	RemoveStatusListener(ch chan nats.Status)
}

// Follow is a KV watch of some keys that its owner starts again after every reconnect
// (Reconnected): a KV watch notices a server restart only after missed heartbeats, seconds
// later, and meanwhile delivers nothing. It is used by one goroutine.
type Follow struct {
	kv          keyWatcher
	keys        string
	conn        statusNotifier
	reconnected chan nats.Status
	w           jetstream.KeyWatcher
}

// NewFollow returns a follow of keys in kv, told of reconnects by conn; Close releases it.
func NewFollow(kv keyWatcher, conn statusNotifier, keys string) *Follow {
	return &Follow{kv: kv, keys: keys, conn: conn, reconnected: conn.StatusChanged(nats.CONNECTED)}
}

// Reconnected receives a value after every reconnect: the owner then calls Start.
func (f *Follow) Reconnected() <-chan nats.Status { return f.reconnected }

// Start stops the current watch, if any, and starts a new one, which delivers every
// current value, then a nil entry, then the changes. On error there is no watch.
func (f *Follow) Start(ctx context.Context) (<-chan jetstream.KeyValueEntry, error) {
	f.Stop()
	w, err := f.kv.Watch(ctx, f.keys)
	if err != nil {
		return nil, err
	}
	f.w = w
	return w.Updates(), nil
}

// Stop stops the current watch, if any.
func (f *Follow) Stop() {
	if f.w != nil {
		_ = f.w.Stop()
		f.w = nil
	}
}

// Close stops the watch and stops listening for reconnects.
func (f *Follow) Close() {
	f.Stop()
	f.conn.RemoveStatusListener(f.reconnected)
}
