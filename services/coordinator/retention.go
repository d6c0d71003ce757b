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

// fullScanEvery is how often (in passes) retention lists the whole snapshot store to
// find orphans: objects uploaded for checkpoints whose acks never arrived (an instance
// that died between upload and ack). Other passes delete only what the manifests they
// drop and the aborted checkpoints referenced, so their cost does not grow with the
// number of jobs and objects.
const fullScanEvery = 20

// retainRequest asks the retention worker for one pass.
type retainRequest struct {
	keep int
	// live are snapshots acked for checkpoints still pending.
	live []messages.SnapshotRef
	// dropped are snapshots acked for checkpoints aborted since the last request.
	dropped []messages.SnapshotRef
}

// objectStore is what retention needs of the snapshot store.
type objectStore interface {
	List(ctx context.Context, opts ...jetstream.ListObjectsOpt) ([]*jetstream.ObjectInfo, error)
	Delete(ctx context.Context, name string) error
}

// retainer is the retention worker's state, owned by its goroutine.
type retainer struct {
	b      *natsBackend
	store  objectStore
	passes int
	// candidates are objects that may be unreferenced, waiting until they are older than
	// the newest manifest.
	candidates map[string]bool
	// trim trims the members' input after each pass.
	trim *trimmer
}

// retain queues a retention pass; a newer request replaces one not yet started, keeping
// its dropped snapshots.
func (b *natsBackend) retain(keep int, live, dropped []messages.SnapshotRef) {
	req := retainRequest{keep: keep, live: live, dropped: dropped}
	for {
		select {
		case b.retainCh <- req:
			return
		default:
		}
		select {
		case old := <-b.retainCh:
			req.dropped = append(req.dropped, old.dropped...)
		default:
		}
	}
}

// runRetention serves retention passes until ctx is done; after each successful pass,
// trim trims the members' input below the retained manifests.
func (b *natsBackend) runRetention(ctx context.Context, store objectStore, trim *trimmer) {
	r := &retainer{b: b, store: store, candidates: map[string]bool{}, trim: trim}
	for {
		select {
		case <-ctx.Done():
			return
		case req := <-b.retainCh:
			pctx, cancel := context.WithTimeout(ctx, time.Minute)
			manifests, objects, retained, err := r.pass(pctx, req)
			if err == nil && r.trim != nil {
				err = r.trim.trim(pctx, retained)
			}
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

// pass deletes the manifests beyond the newest req.keep, then every candidate snapshot
// object — one a deleted manifest or an aborted checkpoint referenced, or on a full scan
// any object of the job — that is older than the newest manifest and that no retained
// manifest and no live ack references. An object shared by several checkpoints (an
// unchanged snapshot, a base or delta of a chain) stays while any retained manifest
// references it. It returns the
// retained manifests, newest first.
func (r *retainer) pass(ctx context.Context, req retainRequest) (manifests, objects int, retained []*messages.Manifest, err error) {
	b := r.b
	for _, ref := range req.dropped {
		r.candidates[ref.Object] = true
	}
	ids, err := b.manifestIDs(ctx)
	if err != nil || len(ids) == 0 {
		return 0, 0, nil, err
	}
	slices.SortFunc(ids, func(x, y uint64) int { return cmp.Compare(y, x) })
	keep := min(max(req.keep, 1), len(ids))
	for _, id := range ids[keep:] {
		m, err := b.readManifest(ctx, id)
		if err != nil {
			return manifests, 0, nil, err
		}
		if m != nil {
			for _, s := range m.Instances {
				for _, ref := range s.Refs() {
					r.candidates[ref.Object] = true
				}
			}
		}
		if err := b.manifests.Purge(ctx, cjs.ManifestKey(b.job, id)); err != nil {
			return manifests, 0, nil, fmt.Errorf("delete manifest %d: %w", id, err)
		}
		manifests++
	}
	referenced := map[string]bool{}
	for _, ref := range req.live {
		referenced[ref.Object] = true
	}
	for _, id := range ids[:keep] {
		m, err := b.readManifest(ctx, id)
		if err != nil {
			return manifests, 0, nil, err
		}
		if m == nil {
			continue
		}
		retained = append(retained, m)
		for _, s := range m.Instances {
			for _, ref := range s.Refs() {
				referenced[ref.Object] = true
			}
		}
	}
	if r.passes%fullScanEvery == 0 {
		infos, err := r.store.List(ctx)
		if err != nil && !errors.Is(err, jetstream.ErrNoObjectsFound) {
			return manifests, 0, nil, fmt.Errorf("list snapshots: %w", err)
		}
		for _, info := range infos {
			if _, ok := objectCheckpoint(b.job, info.Name); ok {
				r.candidates[info.Name] = true
			}
		}
	}
	r.passes++
	newest := ids[0]
	for name := range r.candidates {
		id, ok := objectCheckpoint(b.job, name)
		switch {
		case !ok || referenced[name]:
			delete(r.candidates, name)
			continue
		case id >= newest:
			continue // may still be referenced by a checkpoint not yet completed
		}
		if err := r.store.Delete(ctx, name); err != nil && !errors.Is(err, jetstream.ErrObjectNotFound) {
			return manifests, objects, nil, fmt.Errorf("delete snapshot %s: %w", name, err)
		}
		delete(r.candidates, name)
		objects++
	}
	return manifests, objects, retained, nil
}

// readManifest reads manifest id of the job; nil when it is gone.
func (b *natsBackend) readManifest(ctx context.Context, id uint64) (*messages.Manifest, error) {
	e, err := b.manifests.Get(ctx, cjs.ManifestKey(b.job, id))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read manifest %d: %w", id, err)
	}
	var m messages.Manifest
	if err := messages.Unmarshal(e.Value(), &m); err != nil {
		return nil, fmt.Errorf("manifest %d: %w", id, err)
	}
	return &m, nil
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
