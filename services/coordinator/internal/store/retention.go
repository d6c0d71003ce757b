package store

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cairn-stream/cairn/pkg/cairnjs"
	"github.com/cairn-stream/cairn/pkg/messages"
	"github.com/cairn-stream/cairn/services/coordinator/internal/loop"
)

// fullScanEvery is how often (in passes) retention lists the whole snapshot store to
// find orphans: objects uploaded for checkpoints whose acks never arrived (an instance
// that died between upload and ack). Other passes delete only what the manifests they
// drop and the aborted checkpoints referenced, so their cost does not grow with the
// number of jobs and objects.
const fullScanEvery = 20

// quietScanAfter is how long after its last request the retention worker makes a pass of
// its own, with a full scan: orphans uploaded for checkpoints whose acks never arrived are
// then found even when the job stopped completing and aborting checkpoints. It is longer
// than loop.RetainAfter, the longest a busy job goes between requests: otherwise a job at an
// interval of a second or more, which asks every loop.RetainAfter, would race its own quiet
// scans and make every other pass a full one.
const quietScanAfter = 2 * loop.RetainAfter

// ObjectStore is what retention needs of a snapshot store (batchStore).
type ObjectStore interface {
	List(ctx context.Context, opts ...jetstream.ListObjectsOpt) ([]*jetstream.ObjectInfo, error)
	// Infos returns the infos of those of names that exist (deleted ones too), by name.
	Infos(ctx context.Context, names []string) (map[string]*jetstream.ObjectInfo, error)
	// Purge removes the object info describes, leaving no marker.
	Purge(ctx context.Context, info *jetstream.ObjectInfo) error
}

// retainer is the retention worker's state, owned by its goroutine.
type retainer struct {
	b *Backend
	// stores are the job's snapshot stores; own is the name of the job's store.
	stores Stores
	own    string
	passes int
	// candidates are objects that may be unreferenced, waiting until they are older than
	// the newest manifest, each with the store it is in. Object names are unique across
	// stores (they end in the uploader's incarnation).
	candidates map[string]string
	// legacy is set once a reference to the store shared before stores were per job
	// (cairnjs.SnapshotBucket) was seen: full scans then list that store too.
	legacy bool
	// trim trims the members' input after each pass.
	trim *Trimmer
	// markerTTL is the TTL given to manifest purge markers: the manifest bucket's
	// LimitMarkerTTL, read at the first pass (markerRead); 0 when the bucket has none.
	markerTTL  time.Duration
	markerRead bool
	// manifests are the job's manifests by id: those of the last listing and those handed
	// over since (loop.RetainRequest.written); those read or handed over with their content, the
	// others nil until read.
	manifests map[uint64]*messages.Manifest
	// savepoints are the job's savepoints as of the last listing; listed is false until
	// the first listing.
	savepoints map[string]*messages.Manifest
	listed     bool
	// purged is the highest manifest id purged: a manifest handed over at or below it is
	// gone (manifests are written in id order, so it was listed and purged) and is not
	// taken back.
	purged uint64
}

func newRetainer(b *Backend, stores Stores, trim *Trimmer) *retainer {
	return &retainer{b: b, stores: stores, own: stores.Own(), candidates: map[string]string{}, trim: trim, manifests: map[uint64]*messages.Manifest{}}
}

// candidate makes ref's object a candidate for deletion.
func (r *retainer) candidate(ref messages.SnapshotRef) {
	r.candidates[ref.Object] = cairnjs.SnapshotStoreOf(ref.Store)
	r.legacy = r.legacy || ref.Store == ""
}

// reference marks ref's object referenced in referenced.
func (r *retainer) reference(referenced map[string]bool, ref messages.SnapshotRef) {
	referenced[ref.Object] = true
	r.legacy = r.legacy || ref.Store == ""
}

// Retain implements loop.Backend: it queues a retention pass; a newer request replaces one
// not yet started, keeping its dropped and freed snapshots, its written manifests, its scan
// and its listing (a listing is also asked for when the backend set relist).
func (b *Backend) Retain(req loop.RetainRequest) {
	req.List, b.relist = req.List || b.relist, false
	for {
		select {
		case b.retainCh <- req:
			return
		default:
		}
		select {
		case old := <-b.retainCh:
			req.Dropped = append(req.Dropped, old.Dropped...)
			req.Freed = append(req.Freed, old.Freed...)
			req.Written = append(req.Written, old.Written...)
			req.Scan = req.Scan || old.Scan
			req.List = req.List || old.List
		default:
		}
	}
}

// RunRetention serves retention passes until ctx is done; after each successful pass,
// trim trims the members' input below the retained manifests. quietScanAfter after the
// last request it makes one pass of its own, a full scan, with that request's keep and
// live snapshots. A pass runs only while it holds a slot of slots, which the retention
// workers of every job share: retention is background work, and many jobs' passes at once
// must not delay the lease renewals and checkpoints that share the connection.
func (b *Backend) RunRetention(ctx context.Context, trim *Trimmer, slots chan struct{}) {
	r := newRetainer(b, b.stores, trim)
	quiet := time.NewTimer(quietScanAfter)
	quiet.Stop()
	defer quiet.Stop()
	var last loop.RetainRequest
	for {
		var req loop.RetainRequest
		select {
		case <-ctx.Done():
			return
		case req = <-b.retainCh:
			last = loop.RetainRequest{Keep: req.Keep, Live: req.Live}
			quiet.Reset(quietScanAfter)
		case <-quiet.C:
			req = last
			req.Scan = true
		}
		select {
		case <-ctx.Done():
			return
		case slots <- struct{}{}:
		}
		r.run(ctx, req)
		<-slots
	}
}

// run makes one pass and trims, logging the outcome.
func (r *retainer) run(ctx context.Context, req loop.RetainRequest) {
	b := r.b
	pctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	manifests, objects, retained, err := r.pass(pctx, req)
	if err == nil && r.trim != nil {
		err = r.trim.trim(pctx, retained)
	}
	if err != nil {
		if ctx.Err() == nil {
			b.log.Warn().Err(err).Msg("retention pass incomplete; the next one retries")
		}
		return
	}
	if manifests+objects > 0 {
		b.log.Debug().Int("manifests_deleted", manifests).Int("objects_deleted", objects).Msg("retention")
	}
}

// pass deletes the manifests beyond the newest req.Keep, then every candidate snapshot
// object — one a deleted manifest or an aborted checkpoint referenced, or on a full scan
// any object of the job — that is older than the newest manifest (or freed) and that no
// retained manifest, no savepoint and no live ack references. An object shared by several
// checkpoints (an unchanged snapshot, a base or delta of a chain) stays while any retained
// manifest or savepoint references it. Manifests are purged with a marker that expires,
// objects removed without leaving one. It returns the manifests whose input must stay: the
// retained ones, newest first, then the savepoints.
func (r *retainer) pass(ctx context.Context, req loop.RetainRequest) (manifests, objects int, retained []*messages.Manifest, err error) {
	b := r.b
	for _, ref := range req.Dropped {
		r.candidate(ref)
	}
	freed := map[string]bool{}
	for _, ref := range req.Freed {
		r.candidate(ref)
		freed[ref.Object] = true
	}
	if err := r.readMarkerTTL(ctx); err != nil {
		return 0, 0, nil, err
	}
	full := req.Scan || r.passes%fullScanEvery == 0
	if full || req.List || !r.listed {
		if err := r.list(ctx); err != nil {
			return 0, 0, nil, err
		}
	}
	for _, m := range req.Written {
		if m.CheckpointID > r.purged {
			r.manifests[m.CheckpointID] = m
		}
	}
	if len(r.manifests) == 0 {
		return 0, 0, nil, nil
	}
	ids := slices.SortedFunc(maps.Keys(r.manifests), func(x, y uint64) int { return cmp.Compare(y, x) })
	keep := min(max(req.Keep, 1), len(ids))
	for _, id := range ids[keep:] {
		m, err := r.manifest(ctx, id)
		if err != nil {
			return manifests, 0, nil, err
		}
		if m != nil {
			for _, s := range m.Instances {
				for _, ref := range s.Refs() {
					r.candidate(ref)
				}
			}
		}
		if err := r.purgeManifest(ctx, id); err != nil {
			return manifests, 0, nil, err
		}
		delete(r.manifests, id)
		r.purged = max(r.purged, id)
		manifests++
	}
	referenced := map[string]bool{}
	for _, ref := range req.Live {
		r.reference(referenced, ref)
	}
	for _, id := range ids[:keep] {
		m, err := r.manifest(ctx, id)
		if err != nil {
			return manifests, 0, nil, err
		}
		if m == nil {
			continue
		}
		retained = append(retained, m)
		for _, s := range m.Instances {
			for _, ref := range s.Refs() {
				r.reference(referenced, ref)
			}
		}
	}
	// Savepoints are retained until deleted: their objects stay and their input is kept.
	for _, m := range r.savepoints {
		retained = append(retained, m)
		for _, s := range m.Instances {
			for _, ref := range s.Refs() {
				r.reference(referenced, ref)
			}
		}
	}
	infos := map[string]*jetstream.ObjectInfo{}
	if full {
		n, err := r.scan(ctx, infos)
		objects += n
		if err != nil {
			return manifests, objects, nil, err
		}
	}
	r.passes++
	newest := ids[0]
	var remove []string
	unknown := map[string][]string{} // store → names
	for name, store := range r.candidates {
		id, ok := objectCheckpoint(b.job, name)
		switch {
		case !ok || referenced[name]:
			delete(r.candidates, name)
			continue
		case id >= newest && !freed[name]:
			continue // may still be referenced by a checkpoint not yet completed
		}
		remove = append(remove, name)
		if infos[name] == nil {
			unknown[store] = append(unknown[store], name)
		}
	}
	for store, names := range unknown {
		st, err := r.stores.Open(ctx, store)
		if errors.Is(err, errStoreMissing) {
			continue // nothing to delete there
		}
		if err != nil {
			return manifests, objects, nil, fmt.Errorf("open snapshot store %s: %w", store, err)
		}
		found, err := st.Infos(ctx, names)
		if errors.Is(err, errStoreMissing) {
			continue // deleted since it was opened
		}
		if err != nil {
			return manifests, objects, nil, err
		}
		maps.Copy(infos, found)
	}
	for _, name := range remove {
		if info := infos[name]; info != nil {
			store := r.candidates[name]
			st, err := r.stores.Open(ctx, store)
			if err != nil {
				return manifests, objects, nil, fmt.Errorf("open snapshot store %s: %w", store, err)
			}
			if err := st.Purge(ctx, info); err != nil {
				return manifests, objects, nil, err
			}
			objects++
		}
		delete(r.candidates, name)
	}
	return manifests, objects, retained, nil
}

// scan lists the job's snapshot store, and the store shared before stores were per job
// while references to it were seen: every object of the job becomes a candidate (its info
// kept in infos), and the delete markers of the job's deleted objects — left by
// deployments before markers were removed, or by a pass interrupted between the two purges
// of a removal — are removed. It returns how many markers it removed.
func (r *retainer) scan(ctx context.Context, infos map[string]*jetstream.ObjectInfo) (int, error) {
	names := []string{r.own}
	if r.legacy {
		names = append(names, cairnjs.SnapshotBucket)
	}
	removed := 0
	for _, name := range names {
		st, err := r.stores.Open(ctx, name)
		if errors.Is(err, errStoreMissing) {
			continue
		}
		if err != nil {
			return removed, fmt.Errorf("open snapshot store %s: %w", name, err)
		}
		list, err := st.List(ctx, jetstream.ListObjectsShowDeleted())
		if (errors.Is(err, jetstream.ErrStreamNotFound) || errors.Is(err, nats.ErrStreamNotFound)) && name != r.own {
			continue // deleted since it was opened (the listing's consumer reports it as nats.go's legacy API does)
		}
		if err != nil && !errors.Is(err, jetstream.ErrNoObjectsFound) {
			return removed, fmt.Errorf("list snapshots in %s: %w", name, err)
		}
		for _, info := range list {
			if _, ok := objectCheckpoint(r.b.job, info.Name); !ok {
				continue
			}
			if info.Deleted {
				if err := st.Purge(ctx, info); err != nil {
					return removed, err
				}
				removed++
				continue
			}
			r.candidates[info.Name] = name
			infos[info.Name] = info
		}
	}
	return removed, nil
}

// readMarkerTTL reads, once, the manifest bucket's LimitMarkerTTL. A bucket created before
// Cairn set one has none: its purge markers then stay until an operator of the deployment
// updates the bucket (docs/failure-model.md, "Storage bounds"), which is logged once.
func (r *retainer) readMarkerTTL(ctx context.Context) error {
	if r.markerRead {
		return nil
	}
	st, err := r.b.manifests.Status(ctx)
	if err != nil {
		return fmt.Errorf("read %s status: %w", cairnjs.ManifestBucket, err)
	}
	kst, ok := st.(*jetstream.KeyValueBucketStatus)
	if ok {
		r.markerTTL = kst.LimitMarkerTTL()
	}
	if r.markerTTL <= 0 {
		r.b.log.Warn().Str("bucket", cairnjs.ManifestBucket).
			Msg("bucket has no LimitMarkerTTL: the markers of purged manifests stay until it is given one (see docs/failure-model.md, Storage bounds)")
	}
	r.markerRead = true
	return nil
}

// purgeManifest purges manifest id, with a marker that expires after the bucket's
// LimitMarkerTTL when it has one.
func (r *retainer) purgeManifest(ctx context.Context, id uint64) error {
	var opts []jetstream.KVDeleteOpt
	if r.markerTTL > 0 {
		opts = append(opts, jetstream.PurgeTTL(r.markerTTL))
	}
	if err := r.b.manifests.Purge(ctx, cairnjs.ManifestKey(r.b.job, id), opts...); err != nil {
		return fmt.Errorf("delete manifest %d: %w", id, err)
	}
	return nil
}

// errStaleListing is returned by a pass whose listing of the job's keys lacks the
// manifest <job>.latest names.
var errStaleListing = errors.New("the listing of the job's keys lacks its newest manifest (a replica that lags answered it); the next pass lists again")

// list lists the job's manifest ids and savepoint keys (listManifestKeys) and reads the
// savepoints. The listing is a consumer that any replica of the bucket may serve, and one
// that lags (a node that was stopped or cut off) would leave out the newest manifests:
// the pass would then free what only they reference. So <job>.latest is read from the
// bucket's leader first, and the listing must hold the manifest it names (a replica that
// holds it holds every key written before it); otherwise the pass fails with
// errStaleListing. The manifests kept follow the listing: those no longer listed are dropped,
// new ones added unread. Between listings the pass relies on the manifests the job's loop
// hands over: while this coordinator holds the lease, only its loop writes the job's keys,
// and the loop asks for a listing (loop.RetainRequest.list) whenever they may have changed
// otherwise. A listing every fullScanEvery passes catches anything else.
func (r *retainer) list(ctx context.Context) error {
	latest, _, err := r.b.readLatest(ctx)
	if err != nil {
		return err
	}
	ids, savepointKeys, err := listManifestKeys(ctx, r.b.manifests, r.b.job)
	if err != nil {
		return err
	}
	if latest != nil && !slices.Contains(ids, latest.CheckpointID) {
		return fmt.Errorf("%w: manifest %d is not listed", errStaleListing, latest.CheckpointID)
	}
	savepoints, err := readSavepointKeys(ctx, r.b.leader, r.b.manifests, r.b.job, savepointKeys)
	if err != nil {
		return err
	}
	listed := make(map[uint64]bool, len(ids))
	for _, id := range ids {
		listed[id] = true
		if _, ok := r.manifests[id]; !ok {
			r.manifests[id] = nil
		}
	}
	for id := range r.manifests {
		if !listed[id] {
			delete(r.manifests, id)
		}
	}
	r.savepoints, r.listed = savepoints, true
	return nil
}

// listManifestKeys lists, in one listing of job's keys, the checkpoint ids that have a
// manifest (<job>.<id>) and the keys of its savepoints (<job>.savepoint.<name>).
func listManifestKeys(ctx context.Context, kv jetstream.KeyValue, job string) (ids []uint64, savepointKeys []string, err error) {
	lister, err := kv.ListKeysFiltered(ctx, job+".>")
	if err != nil {
		return nil, nil, fmt.Errorf("list manifests: %w", err)
	}
	defer func() { _ = lister.Stop() }()
	for k := range lister.Keys() {
		rest := strings.TrimPrefix(k, job+".")
		if strings.HasPrefix(rest, "savepoint.") {
			savepointKeys = append(savepointKeys, k)
		} else if id, err := strconv.ParseUint(rest, 10, 64); err == nil {
			ids = append(ids, id)
		}
	}
	return ids, savepointKeys, nil
}

// manifest returns manifest id of the job, read once and then kept; nil when it is gone
// (then forgotten).
func (r *retainer) manifest(ctx context.Context, id uint64) (*messages.Manifest, error) {
	if m := r.manifests[id]; m != nil {
		return m, nil
	}
	m, _, err := readManifestKey(ctx, r.b.leader, r.b.manifests, cairnjs.ManifestKey(r.b.job, id))
	if err != nil {
		return nil, err
	}
	if m == nil {
		delete(r.manifests, id)
		return nil, nil
	}
	r.manifests[id] = m
	return m, nil
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
