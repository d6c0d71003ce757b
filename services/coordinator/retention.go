package coordinator

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	cjs "github.com/cairn-stream/cairn/pkg/jetstream"
	"github.com/cairn-stream/cairn/pkg/messages"
)

// retainRequest asks the retention worker for one pass.
type retainRequest struct {
	keep int
	live []messages.SnapshotRef
}

// objectStore is what retention needs of the snapshot store.
type objectStore interface {
	List(ctx context.Context, opts ...jetstream.ListObjectsOpt) ([]*jetstream.ObjectInfo, error)
	Delete(ctx context.Context, name string) error
}

// retain queues a retention pass; a newer request replaces one not yet started.
func (b *natsBackend) retain(keep int, live []messages.SnapshotRef) {
	req := retainRequest{keep: keep, live: live}
	for {
		select {
		case b.retainCh <- req:
			return
		default:
		}
		select {
		case <-b.retainCh:
		default:
		}
	}
}

// runRetention serves retention passes until ctx is done.
func (b *natsBackend) runRetention(ctx context.Context, store objectStore) {
	for {
		select {
		case <-ctx.Done():
			return
		case req := <-b.retainCh:
			pctx, cancel := context.WithTimeout(ctx, time.Minute)
			manifests, objects, err := b.retainOnce(pctx, store, req)
			cancel()
			if err != nil {
				if ctx.Err() == nil {
					b.log.Warn().Err(err).Msg("retention pass incomplete; the next completion retries")
				}
				continue
			}
			if manifests+objects > 0 {
				b.log.Debug().Int("manifests_deleted", manifests).Int("objects_deleted", objects).Msg("retention")
			}
		}
	}
}

// retainOnce deletes the manifests beyond the newest req.keep and every snapshot object
// of the job older than the newest manifest that no retained manifest and no live
// reference uses. An object shared by several checkpoints (an unchanged snapshot) stays
// while any retained manifest references it.
func (b *natsBackend) retainOnce(ctx context.Context, store objectStore, req retainRequest) (manifests, objects int, err error) {
	ids, err := b.manifestIDs(ctx)
	if err != nil || len(ids) == 0 {
		return 0, 0, err
	}
	slices.SortFunc(ids, func(a, b uint64) int { return cmp.Compare(b, a) })
	keep := min(max(req.keep, 1), len(ids))
	for _, id := range ids[keep:] {
		if err := b.manifests.Purge(ctx, cjs.ManifestKey(b.job, id)); err != nil {
			return manifests, 0, fmt.Errorf("delete manifest %d: %w", id, err)
		}
		manifests++
	}
	referenced := map[string]bool{}
	for _, r := range req.live {
		referenced[r.Object] = true
	}
	for _, id := range ids[:keep] {
		e, err := b.manifests.Get(ctx, cjs.ManifestKey(b.job, id))
		if err != nil {
			return manifests, 0, fmt.Errorf("read retained manifest %d: %w", id, err)
		}
		var m messages.Manifest
		if err := messages.Unmarshal(e.Value(), &m); err != nil {
			return manifests, 0, fmt.Errorf("retained manifest %d: %w", id, err)
		}
		for _, s := range m.Instances {
			referenced[s.Snapshot.Object] = true
		}
	}
	infos, err := store.List(ctx)
	if errors.Is(err, jetstream.ErrNoObjectsFound) {
		return manifests, 0, nil
	}
	if err != nil {
		return manifests, 0, fmt.Errorf("list snapshots: %w", err)
	}
	newest := ids[0]
	for _, info := range infos {
		id, ok := objectCheckpoint(b.job, info.Name)
		if !ok || id >= newest || referenced[info.Name] {
			continue
		}
		if err := store.Delete(ctx, info.Name); err != nil && !errors.Is(err, jetstream.ErrObjectNotFound) {
			return manifests, objects, fmt.Errorf("delete snapshot %s: %w", info.Name, err)
		}
		objects++
	}
	return manifests, objects, nil
}

// manifestIDs lists the checkpoint ids that have a manifest (<job>.<id> keys).
func (b *natsBackend) manifestIDs(ctx context.Context) ([]uint64, error) {
	lister, err := b.manifests.ListKeysFiltered(ctx, b.job+".*")
	if err != nil {
		return nil, fmt.Errorf("list manifests: %w", err)
	}
	defer func() { _ = lister.Stop() }()
	var ids []uint64
	for k := range lister.Keys() {
		if id, err := strconv.ParseUint(strings.TrimPrefix(k, b.job+"."), 10, 64); err == nil {
			ids = append(ids, id)
		}
	}
	return ids, nil
}

// objectCheckpoint parses the checkpoint id of a snapshot object <job>/<id>/<instance>.
func objectCheckpoint(job, name string) (uint64, bool) {
	rest, ok := strings.CutPrefix(name, job+"/")
	if !ok {
		return 0, false
	}
	idText, _, ok := strings.Cut(rest, "/")
	if !ok {
		return 0, false
	}
	id, err := strconv.ParseUint(idText, 10, 64)
	return id, err == nil
}
