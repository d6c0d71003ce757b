package coordinator

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
)

// objectPurger removes snapshot objects without leaving a marker behind. The object
// store's own Delete publishes a "deleted" meta message that stays for ever (one per
// retained-out snapshot); instead the object's chunks and then its meta subject are purged
// from the store's stream. A removal interrupted between the two purges leaves a meta
// without chunks, which the next full scan finds and removes again.
type objectPurger struct {
	// bucket is the object store's name; its stream is OBJ_<bucket>.
	bucket string
	// lookup returns a stream by name.
	lookup func(ctx context.Context, name string) (streamPurger, error)
	stream streamPurger
}

// remove removes the object name; info is its info when known (nil: looked up).
func (o *objectPurger) remove(ctx context.Context, store objectStore, name string, info *jetstream.ObjectInfo) error {
	if info == nil {
		var err error
		info, err = store.GetInfo(ctx, name, jetstream.GetObjectInfoShowDeleted())
		if errors.Is(err, jetstream.ErrObjectNotFound) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("look up snapshot %s: %w", name, err)
		}
	}
	return o.purge(ctx, info)
}

// purge purges the chunks and then the meta subject of the object info describes.
func (o *objectPurger) purge(ctx context.Context, info *jetstream.ObjectInfo) error {
	if o.stream == nil {
		st, err := o.lookup(ctx, "OBJ_"+o.bucket)
		if err != nil {
			return fmt.Errorf("look up the stream of object store %s: %w", o.bucket, err)
		}
		o.stream = st
	}
	if info.NUID != "" {
		chunks := fmt.Sprintf("$O.%s.C.%s", o.bucket, info.NUID)
		if err := o.stream.Purge(ctx, jetstream.WithPurgeSubject(chunks)); err != nil {
			return fmt.Errorf("delete snapshot %s: purge its chunks: %w", info.Name, err)
		}
	}
	meta := fmt.Sprintf("$O.%s.M.%s", o.bucket, base64.URLEncoding.EncodeToString([]byte(info.Name)))
	if err := o.stream.Purge(ctx, jetstream.WithPurgeSubject(meta)); err != nil {
		return fmt.Errorf("delete snapshot %s: purge its meta: %w", info.Name, err)
	}
	return nil
}
