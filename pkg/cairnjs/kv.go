package cairnjs

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
)

// KVWriter writes the keys of a KV bucket with compare-and-set (jetstream.KeyValue).
type KVWriter interface {
	Bucket() string
	Create(ctx context.Context, key string, value []byte, opts ...jetstream.KVCreateOpt) (uint64, error)
	Update(ctx context.Context, key string, value []byte, revision uint64) (uint64, error)
}

// ErrNoChange is returned by the change function of UpdateKey to leave the key as it is.
var ErrNoChange = errors.New("no change")

// updateAttempts bounds the compare-and-set rounds of one UpdateKey when other writers keep
// changing the key.
const updateAttempts = 8

// UpdateKey changes key in kv with compare-and-set: it reads the key's current value from
// the bucket's leader (CurrentEntry; nil when the key is absent), hands it to change, and
// writes what change returns, creating the key when it was absent and otherwise updating the
// revision read. When another writer changed the key in between it reads again, up to 8
// times. change returning ErrNoChange leaves the key as it is (UpdateKey returns the
// revision read and nil); any other error is returned as it is. It returns the revision
// written.
func UpdateKey(ctx context.Context, nc Requester, kv KVWriter, key string, change func(cur []byte) ([]byte, error)) (uint64, error) {
	for range updateAttempts {
		cur, rev, err := CurrentEntry(ctx, nc, kv.Bucket(), key)
		if err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
			return 0, err
		}
		next, err := change(cur)
		if errors.Is(err, ErrNoChange) {
			return rev, nil
		}
		if err != nil {
			return 0, err
		}
		rev, err = CompareAndSet(ctx, kv, key, next, rev)
		if err == nil {
			return rev, nil
		}
		if !IsConflict(err) {
			return 0, fmt.Errorf("write %s in %s: %w", key, kv.Bucket(), err)
		}
	}
	return 0, fmt.Errorf("write %s in %s: the key changed under %d compare-and-set attempts", key, kv.Bucket(), updateAttempts)
}

// CompareAndSet writes value under key if the key is at revision rev, 0 meaning absent, and
// returns the revision written. When the key is elsewhere the error is jetstream's
// ErrKeyExists or ErrKeyRevisionMismatch (IsConflict).
func CompareAndSet(ctx context.Context, kv KVWriter, key string, value []byte, rev uint64) (uint64, error) {
	if rev == 0 {
		return kv.Create(ctx, key, value)
	}
	return kv.Update(ctx, key, value, rev)
}

// IsConflict reports whether err says that a compare-and-set found its key elsewhere than
// at the revision it expected: another writer was first.
func IsConflict(err error) bool {
	return errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch)
}
