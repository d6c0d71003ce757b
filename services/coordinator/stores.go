package coordinator

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	cjs "github.com/cairn-stream/cairn/pkg/jetstream"
)

// snapshotStores are the object stores a job's snapshots are in (jobStores).
type snapshotStores interface {
	// open returns the object store name. The job's own store (cjs.SnapshotStore) is
	// created when missing; any other (cjs.SnapshotBucket, shared by every job before
	// stores were per job) is only looked up: errStoreMissing when it does not exist.
	open(ctx context.Context, name string) (objectStore, error)
	// own is the name of the job's store, where its snapshots are uploaded.
	own() string
}

// errStoreMissing is returned (wrapped) by snapshotStores.open for a store that does not
// exist and is not the job's own.
var errStoreMissing = errors.New("object store does not exist")

// jobStores opens a job's snapshot stores, each once; the job's loop and its retention
// worker share it. No lock is held while a store is looked up or created.
type jobStores struct {
	job string
	js  jetstream.JetStream
	nc  *nats.Conn
	// opts are what the job's store is created with (replicas, storage, size limit).
	opts cjs.Options
	// stream looks up the stream of a store for purges.
	stream func(ctx context.Context, name string) (streamPurger, error)

	mu     sync.Mutex
	stores map[string]objectStore
}

var _ snapshotStores = (*jobStores)(nil)

func (s *jobStores) own() string { return cjs.SnapshotStoreFor(s.job, s.opts.SharedSnapshotStore) }

func (s *jobStores) open(ctx context.Context, name string) (objectStore, error) {
	s.mu.Lock()
	st, ok := s.stores[name]
	s.mu.Unlock()
	if ok {
		return st, nil
	}
	var (
		obs jetstream.ObjectStore
		err error
	)
	if name == s.own() {
		obs, err = cjs.EnsureSnapshotStore(ctx, s.js, s.opts, s.job)
	} else {
		obs, err = s.js.ObjectStore(ctx, name)
		if errors.Is(err, jetstream.ErrBucketNotFound) || errors.Is(err, jetstream.ErrStreamNotFound) {
			err = fmt.Errorf("%w: %s", errStoreMissing, name)
		}
	}
	if err != nil {
		return nil, err
	}
	st = &batchStore{ObjectStore: obs, nc: s.nc, bucket: name, purger: objectPurger{bucket: name, lookup: s.stream}}
	s.mu.Lock()
	defer s.mu.Unlock()
	if prev, ok := s.stores[name]; ok {
		return prev, nil
	}
	if s.stores == nil {
		s.stores = map[string]objectStore{}
	}
	s.stores[name] = st
	return st, nil
}
