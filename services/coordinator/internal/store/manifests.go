package store

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cairn-stream/cairn/pkg/cairnjs"
	"github.com/cairn-stream/cairn/pkg/messages"
	"github.com/cairn-stream/cairn/services/coordinator/internal/loop"
)

// Savepoints implements loop.Backend: it reads the job's savepoints
// (<job>.savepoint.<name>), by name.
func (b *Backend) Savepoints(ctx context.Context) (map[string]*messages.Manifest, error) {
	return readSavepoints(ctx, b.leader, b.manifests, b.job)
}

// readSavepoints reads job's savepoints from the manifest bucket, by name.
func readSavepoints(ctx context.Context, leader cairnjs.Requester, kv jetstream.KeyValue, job string) (map[string]*messages.Manifest, error) {
	lister, err := kv.ListKeysFiltered(ctx, cairnjs.SavepointKey(job, "*"))
	if err != nil {
		return nil, fmt.Errorf("list savepoints: %w", err)
	}
	defer func() { _ = lister.Stop() }()
	var keys []string
	for k := range lister.Keys() {
		keys = append(keys, k)
	}
	return readSavepointKeys(ctx, leader, kv, job, keys)
}

// readSavepointKeys reads job's savepoints under keys, by name; those gone are left out.
func readSavepointKeys(ctx context.Context, leader cairnjs.Requester, kv jetstream.KeyValue, job string, keys []string) (map[string]*messages.Manifest, error) {
	out := make(map[string]*messages.Manifest, len(keys))
	for _, k := range keys {
		m, _, err := readManifestKey(ctx, leader, kv, k)
		if err != nil {
			return nil, err
		}
		if m != nil {
			out[strings.TrimPrefix(k, cairnjs.SavepointKey(job, ""))] = m
		}
	}
	return out, nil
}

// readManifestKey reads the manifest under key of bucket kv and its revision from the
// bucket stream's leader; nil, 0 when it is gone: the one manifest reader of the
// coordinator. Never from a replica that may lag: retention takes a
// manifest it reads as gone for deleted, and would free what only that manifest
// references.
func readManifestKey(ctx context.Context, leader cairnjs.Requester, kv jetstream.KeyValue, key string) (*messages.Manifest, uint64, error) {
	value, rev, err := cairnjs.CurrentEntry(ctx, leader, kv.Bucket(), key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("read %s: %w", key, err)
	}
	var m messages.Manifest
	if err := messages.Unmarshal(value, &m); err != nil {
		return nil, 0, fmt.Errorf("%s: %w", key, err)
	}
	return &m, rev, nil
}

// WriteSavepoint implements loop.Backend: a create of <job>.savepoint.<name>.
func (b *Backend) WriteSavepoint(ctx context.Context, m *messages.Manifest) error {
	b.relist = true
	data, err := messages.Marshal(m)
	if err != nil {
		return err
	}
	if _, err := b.manifests.Create(ctx, cairnjs.SavepointKey(b.job, m.Savepoint), data); err != nil {
		if errors.Is(err, jetstream.ErrKeyExists) {
			return loop.ErrSavepointExists
		}
		return fmt.Errorf("put savepoint %s: %w", m.Savepoint, err)
	}
	return nil
}

// DeleteSavepoint implements loop.Backend: a read, then a purge of <job>.savepoint.<name>.
func (b *Backend) DeleteSavepoint(ctx context.Context, name string) (*messages.Manifest, error) {
	b.relist = true
	key := cairnjs.SavepointKey(b.job, name)
	m, _, err := readManifestKey(ctx, b.leader, b.manifests, key)
	if err != nil || m == nil {
		return nil, err
	}
	if err := b.manifests.Purge(ctx, key); err != nil {
		return nil, fmt.Errorf("delete savepoint %s: %w", name, err)
	}
	return m, nil
}

// ListCheckpoints reads job's retained checkpoints, newest first, and its savepoints, by
// name, from manifest bucket kv (reads of values go to the bucket stream's leader).
func ListCheckpoints(ctx context.Context, leader cairnjs.Requester, kv jetstream.KeyValue, job string) (*messages.CheckpointList, error) {
	ids, savepointKeys, err := listManifestKeys(ctx, kv, job)
	if err != nil {
		return nil, err
	}
	slices.Sort(ids)
	slices.Reverse(ids)
	list := &messages.CheckpointList{Job: job, Checkpoints: []messages.CheckpointInfo{}, Savepoints: []messages.CheckpointInfo{}}
	for _, id := range ids {
		m, _, err := readManifestKey(ctx, leader, kv, cairnjs.ManifestKey(job, id))
		if err != nil {
			return nil, err
		}
		if m != nil {
			list.Checkpoints = append(list.Checkpoints, messages.NewCheckpointInfo(m))
		}
	}
	sps, err := readSavepointKeys(ctx, leader, kv, job, savepointKeys)
	if err != nil {
		return nil, err
	}
	for _, name := range slices.Sorted(maps.Keys(sps)) {
		ci := messages.NewCheckpointInfo(sps[name])
		ci.Savepoint = name
		list.Savepoints = append(list.Savepoints, ci)
	}
	return list, nil
}
