package operator

import (
	"context"
	"fmt"
	"sync"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cairn-stream/cairn/pkg/cairnjs"
	"github.com/cairn-stream/cairn/pkg/messages"
)

// objectStores looks object stores up by name (jetstream.JetStream).
type objectStores interface {
	ObjectStore(ctx context.Context, bucket string) (jetstream.ObjectStore, error)
}

// snapshotStores opens the object stores that hold the instance's snapshots, each once:
// the job's own (cairnjs.SnapshotStore), where every snapshot is uploaded, and the store of
// each snapshot reference restored (cairnjs.SnapshotBucket for a reference from before stores
// were per job). The coordinator creates the job's store before its first barrier; a store
// that cannot be looked up is looked up again at its next use. A mutex guards it: the
// persister and a restore's downloads use it.
type snapshotStores struct {
	js   objectStores
	mu   sync.Mutex
	open map[string]objectStore
}

// get returns the object store name, looking it up the first time.
func (s *snapshotStores) get(ctx context.Context, name string) (objectStore, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if st, ok := s.open[name]; ok {
		return st, nil
	}
	lctx, cancel := context.WithTimeout(ctx, lookupTimeout)
	defer cancel()
	st, err := s.js.ObjectStore(lctx, name)
	if err != nil {
		if missing(err) {
			return nil, fmt.Errorf("object store %s does not exist: %w", name, err)
		}
		return nil, fmt.Errorf("look up object store %s: %w", name, err)
	}
	if s.open == nil {
		s.open = map[string]objectStore{}
	}
	s.open[name] = st
	return st, nil
}

// uploadStore is the name of the store snapshots are uploaded into: the job's own, or with
// Config.SharedSnapshotStore the store every job shares.
func (r *Runtime) uploadStore() string {
	return cairnjs.SnapshotStoreFor(r.cfg.Job, r.cfg.SharedSnapshotStore)
}

// jobStore returns the store snapshots are uploaded into (uploadStore).
func (r *Runtime) jobStore(ctx context.Context) (objectStore, error) {
	return r.stores.get(ctx, r.uploadStore())
}

// openSnapshot is openObject in the store ref names, looked up at the first read.
func (r *Runtime) openSnapshot(ctx context.Context, ref messages.SnapshotRef) *verifiedObject {
	return &verifiedObject{ref: ref, open: func() (jetstream.ObjectResult, context.CancelFunc, error) {
		store, err := r.stores.get(ctx, cairnjs.SnapshotStoreOf(ref.Store))
		if err != nil {
			return nil, nil, err
		}
		return openObject(ctx, store, ref).open()
	}}
}
