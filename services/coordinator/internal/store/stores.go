package store

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cairn-stream/cairn/pkg/cairnjs"
)

// Stores are the object stores a job's snapshots are in (JobStores).
type Stores interface {
	// Open returns the object store name. The job's own store (cairnjs.SnapshotStore) is
	// created when missing; any other (cairnjs.SnapshotBucket, shared by every job before
	// stores were per job) is only looked up: errStoreMissing when it does not exist.
	Open(ctx context.Context, name string) (ObjectStore, error)
	// Own is the name of the job's store, where its snapshots are uploaded.
	Own() string
}

// errStoreMissing is returned (wrapped) by Stores.open for a store that does not
// exist and is not the job's own.
var errStoreMissing = errors.New("object store does not exist")

// JobStores opens a job's snapshot stores, each once; the job's loop and its retention
// worker share it. No lock is held while a store is looked up or created.
type JobStores struct {
	job string
	js  jetstream.JetStream
	nc  *nats.Conn
	// opts are what the job's store is created with (replicas, storage, size limit).
	opts cairnjs.Options
	// stream looks up the stream of a store for purges.
	stream func(ctx context.Context, name string) (StreamPurger, error)

	mu     sync.Mutex
	stores map[string]ObjectStore
}

var _ Stores = (*JobStores)(nil)

// NewJobStores returns job's snapshot stores on js; its own store is created with opts
// (replicas, storage, size limit), and stream looks up a store's stream for purges.
func NewJobStores(job string, js jetstream.JetStream, opts cairnjs.Options, stream func(ctx context.Context, name string) (StreamPurger, error)) *JobStores {
	return &JobStores{job: job, js: js, nc: js.Conn(), opts: opts, stream: stream}
}

// Own implements Stores.
func (s *JobStores) Own() string { return cairnjs.SnapshotStoreFor(s.job, s.opts.SharedSnapshotStore) }

// Open implements Stores.
func (s *JobStores) Open(ctx context.Context, name string) (ObjectStore, error) {
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
	if name == s.Own() {
		obs, err = cairnjs.EnsureSnapshotStore(ctx, s.js, s.opts, s.job)
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
		s.stores = map[string]ObjectStore{}
	}
	s.stores[name] = st
	return st, nil
}
