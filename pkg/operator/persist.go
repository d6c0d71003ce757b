package operator

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cairn-stream/cairn/pkg/cairnjs"
	"github.com/cairn-stream/cairn/pkg/messages"
)

const (
	// maxChunkSize is the object store chunk size, lowered to the server's max_payload
	// when that is smaller.
	maxChunkSize = 1 << 20
	// firstRetryWait and maxRetryWait bound the backoff between upload attempts.
	firstRetryWait = 250 * time.Millisecond
	maxRetryWait   = 4 * time.Second
	// infoTimeout bounds the look-up of an earlier object before reusing it (when it
	// fails, the snapshot is uploaded again).
	infoTimeout = 2 * time.Second
)

// attemptBudget bounds one upload attempt of size bytes: 2 s plus 1 s per 4 MiB, at most
// a third of transferBudget. An attempt begins with a look-up of the object's info, a
// direct get that any replica of the store may answer: one routed to a node that hangs
// gets no answer, and the next attempt most likely reaches another, so a small snapshot
// does not wait long on it.
func attemptBudget(size uint64) time.Duration {
	return min(transferBudget(size)/3, 2*time.Second+time.Duration(size/(4<<20))*time.Second)
}

// objectStore is the part of a snapshot object store the runtime uses.
type objectStore interface {
	Get(ctx context.Context, name string, opts ...jetstream.GetObjectOpt) (jetstream.ObjectResult, error)
	GetInfo(ctx context.Context, name string, opts ...jetstream.GetObjectInfoOpt) (*jetstream.ObjectInfo, error)
	Put(ctx context.Context, meta jetstream.ObjectMeta, r io.Reader) (*jetstream.ObjectInfo, error)
}

// persistJob is a snapshot taken for a barrier, waiting to be stored and acked.
type persistJob struct {
	checkpoint uint64
	snap       Snapshot
	positions  map[string]uint64
	log        *slog.Logger
}

// persister stores snapshots and acks them, one at a time in barrier order. It runs on its
// own goroutine and owns last.
type persister struct {
	r *Runtime
	// last is the snapshot this instance acked (or restored) last.
	last *messages.SnapshotRef
}

// run persists every job until jobs is closed. Once ctx is done the remaining jobs are
// declined; once the runtime is replaced they are only released.
func (p *persister) run(ctx context.Context, jobs <-chan persistJob) {
	for j := range jobs {
		p.persist(ctx, j)
	}
}

// persist stores one snapshot and acks it, or declines it, and releases it. A panic in
// the snapshot's Persist (or Release) declines the checkpoint; it is logged with its
// stack.
func (p *persister) persist(ctx context.Context, j persistJob) {
	defer func() {
		_ = p.r.guard("Release", func() error { j.snap.Release(); return nil }, "checkpoint", j.checkpoint)
	}()
	if p.r.isFenced() {
		return
	}
	if ctx.Err() != nil {
		p.r.decline(context.WithoutCancel(ctx), j.log, j.checkpoint, "instance stopped before the snapshot was stored")
		return
	}
	start := time.Now()
	var (
		ref     messages.SnapshotRef
		deltas  []messages.SnapshotRef
		written uint64
		err     error
	)
	err = p.r.guard("Persist", func() (err error) {
		ref, deltas, written, err = p.r.cp.save(ctx, p, j)
		return err
	}, "checkpoint", j.checkpoint)
	if err != nil {
		p.r.declineAck(ctx, j.log, j.checkpoint, err.Error(), cairnjs.IsStorageFull(err))
		return
	}
	kind := messages.AckDone
	if len(deltas) > 0 {
		kind = messages.AckChain
	}
	// Counted before the ack is published: whoever has seen the ack sees it counted.
	p.last = &ref
	p.r.stats.acked.Add(1)
	if written > 0 {
		p.r.stats.bytesUploaded.Add(written)
	} else {
		p.r.stats.reused.Add(1)
	}
	p.r.publishAck(ctx, j.log, &messages.Ack{
		Schema:       messages.SchemaVersion,
		Job:          p.r.cfg.Job,
		CheckpointID: j.checkpoint,
		Instance:     p.r.cfg.Instance,
		Incarnation:  p.r.incarnation,
		Kind:         kind,
		Snapshot:     ref,
		Deltas:       deltas,
		Written:      written,
		Positions:    j.positions,
		Filters:      map[string][]string{p.r.cfg.InputStream: slices.Clone(p.r.cfg.InputFilters)},
	})
	j.log.Debug("snapshot stored and acked", "object", ref.Object, "size", ref.Size, "deltas", len(deltas), "bytes_written", written,
		"reused", written == 0, "took", time.Since(start))
}

// storeKeyed stores a Keyed snapshot: its delta (or new base) is uploaded under the
// checkpoint's object name (a base with the suffix ".base"), and the chain it extends or
// starts is recorded for the outcome before the caller acks. A snapshot with no change
// since the last completed checkpoint uploads nothing and acks that checkpoint's chain.
func (p *persister) storeKeyed(ctx context.Context, j persistJob, s *keyedSnapshot) (base messages.SnapshotRef, deltas []messages.SnapshotRef, written uint64, err error) {
	if s.unchanged() {
		s.k.stored(j.checkpoint, s.prev)
		return *s.prev.base, s.prev.deltas, 0, nil
	}
	name := cairnjs.ObjectName(p.r.cfg.Job, j.checkpoint, p.r.cfg.Instance, p.r.incarnation)
	if s.isBase() {
		name += ".base"
	}
	ref, sp, err := p.spoolSnapshot(j, name)
	defer p.closeSpool(j, sp)
	if err != nil {
		return base, nil, 0, err
	}
	if err := p.upload(ctx, j, ref, sp); err != nil {
		return base, nil, 0, err
	}
	c := chain{base: &ref}
	if !s.isBase() {
		c = chain{base: s.prev.base, deltas: append(slices.Clone(s.prev.deltas), ref)}
	}
	s.k.stored(j.checkpoint, c)
	return *c.base, c.deltas, ref.Size, nil
}

// store persists the snapshot into a spool while hashing it, then references the last
// acked object when it holds the same bytes and is in the job's store (an object of the
// store shared before is not referenced again, so that its references die out), or
// uploads the spool. uploaded reports whether bytes were written to the object store.
func (p *persister) store(ctx context.Context, j persistJob) (ref messages.SnapshotRef, uploaded bool, err error) {
	ref, sp, err := p.spoolSnapshot(j, cairnjs.ObjectName(p.r.cfg.Job, j.checkpoint, p.r.cfg.Instance, p.r.incarnation))
	defer p.closeSpool(j, sp)
	if err != nil {
		return ref, false, err
	}
	if p.last != nil && p.last.Store == ref.Store && p.last.Digest == ref.Digest && p.last.Size == ref.Size && p.exists(ctx, j.log, *p.last) {
		return *p.last, false, nil
	}
	if err := p.upload(ctx, j, ref, sp); err != nil {
		return ref, false, err
	}
	return ref, true, nil
}

// spoolSnapshot persists the snapshot into a spool while hashing it, and returns its
// reference under the object name in the job's store. The caller closes the spool
// (closeSpool).
func (p *persister) spoolSnapshot(j persistJob, name string) (messages.SnapshotRef, *spool, error) {
	sp := newSpool(spoolMemLimit)
	h := sha256.New()
	if err := j.snap.Persist(io.MultiWriter(sp, h)); err != nil {
		return messages.SnapshotRef{}, sp, fmt.Errorf("persist: %w", err)
	}
	if p.r.isFenced() {
		// Replaced: publish nothing more.
		return messages.SnapshotRef{}, sp, p.r.replacedError()
	}
	return messages.SnapshotRef{Store: p.r.uploadStore(), Object: name, Size: uint64(sp.Size()), Digest: digest(h)}, sp, nil
}

// closeSpool frees a spool, logging a temporary file it could not remove.
func (p *persister) closeSpool(j persistJob, sp *spool) {
	if err := sp.Close(); err != nil {
		j.log.Warn("remove snapshot spool", "error", err)
	}
}

// exists reports whether the object ref names is still stored with the same content.
func (p *persister) exists(ctx context.Context, log *slog.Logger, ref messages.SnapshotRef) bool {
	ictx, cancel := context.WithTimeout(ctx, infoTimeout)
	defer cancel()
	store, err := p.r.stores.get(ictx, cairnjs.SnapshotStoreOf(ref.Store))
	if err != nil {
		log.Warn("look up the previous snapshot's store; uploading again", "error", err, "object", ref.Object)
		return false
	}
	info, err := store.GetInfo(ictx, ref.Object)
	if err != nil {
		if !errors.Is(err, jetstream.ErrObjectNotFound) {
			log.Warn("look up the previous snapshot; uploading again", "error", err, "object", ref.Object)
		}
		return false
	}
	return info.Digest == ref.Digest && info.Size == ref.Size
}

// upload puts the spool under ref.Object in the job's store, retrying with backoff within
// transferBudget.
func (p *persister) upload(ctx context.Context, j persistJob, ref messages.SnapshotRef, sp *spool) error {
	uctx, cancel := context.WithTimeout(ctx, transferBudget(ref.Size))
	defer cancel()
	meta := jetstream.ObjectMeta{
		Name:        ref.Object,
		Description: fmt.Sprintf("snapshot of %s/%s for checkpoint %d", p.r.cfg.Job, p.r.cfg.Instance, j.checkpoint),
		Metadata: map[string]string{
			"job":         p.r.cfg.Job,
			"instance":    p.r.cfg.Instance,
			"incarnation": p.r.incarnation,
			"checkpoint":  strconv.FormatUint(j.checkpoint, 10),
		},
		Opts: &jetstream.ObjectMetaOptions{ChunkSize: chunkSize(p.r.nc)},
	}
	wait := firstRetryWait
	for attempt := 1; ; attempt++ {
		rd, err := sp.Reader()
		if err != nil {
			return err
		}
		actx, acancel := context.WithTimeout(uctx, attemptBudget(ref.Size))
		var info *jetstream.ObjectInfo
		var store objectStore
		store, err = p.r.jobStore(actx)
		if err == nil {
			err = p.r.mayPublish(actx)
		}
		if err == nil {
			info, err = store.Put(actx, meta, rd)
		}
		acancel()
		if errors.Is(err, ErrReplaced) {
			return err
		}
		if err == nil {
			if info.Digest != ref.Digest || info.Size != ref.Size {
				return fmt.Errorf("stored object %s has %d bytes and digest %s; the snapshot has %d and %s", ref.Object, info.Size, info.Digest, ref.Size, ref.Digest)
			}
			return nil
		}
		if uctx.Err() != nil || cairnjs.IsStorageFull(err) {
			// A full store frees space only when the coordinator's retention runs, which
			// this checkpoint's abort triggers: retrying now would only delay that.
			return fmt.Errorf("put object %s: gave up after %d attempts: %w", ref.Object, attempt, err)
		}
		j.log.Warn("snapshot upload failed; retrying", "error", err, "attempt", attempt, "retry_in", wait)
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-uctx.Done():
			t.Stop()
			return fmt.Errorf("put object %s: gave up after %d attempts: %w", ref.Object, attempt, err)
		}
		wait = min(2*wait, maxRetryWait)
	}
}

// chunkSize is maxChunkSize, or the server's max_payload when that is smaller.
func chunkSize(nc *nats.Conn) uint32 {
	if mp := nc.MaxPayload(); mp > 0 && mp < maxChunkSize {
		return uint32(mp)
	}
	return maxChunkSize
}

// publishAck publishes an ack or decline on the job's ack subject, unless the runtime
// has been replaced or its registration cannot be confirmed (mayPublish).
func (r *Runtime) publishAck(ctx context.Context, log *slog.Logger, ack *messages.Ack) {
	if err := r.mayPublish(ctx); err != nil {
		log.Debug("ack not published", "kind", ack.Kind.String(), "error", err)
		return
	}
	data, err := messages.Marshal(ack)
	if err != nil {
		log.Error("encode ack", "error", err)
		return
	}
	// Remembered before it is published: a barrier sent again once the ack is out (the
	// coordinator lost it) always finds it.
	r.acks.add(ack.CheckpointID, data)
	if err := r.nc.Publish(r.ackSubject(), data); err != nil {
		log.Error("publish ack", "error", err, "kind", ack.Kind.String())
	}
}

// ackSubject is the subject the instance acks on: its own, cairn.ack.<job>.<instance>.
func (r *Runtime) ackSubject() string { return r.cfg.subjects().InstanceAck(r.cfg.Job, r.cfg.Instance) }

// recentAcks remembers the last acks and declines sent, so that a barrier the coordinator
// sends again (its ack was lost, e.g. across a NATS restart) is answered again. A mutex
// guards it: the persister adds, the processing goroutine reads.
type recentAcks struct {
	mu   sync.Mutex
	ids  []uint64
	data map[uint64][]byte
}

// keptAcks is how many acks recentAcks remembers: as many as checkpoints can be pending.
const keptAcks = messages.MaxMaxConcurrent

func (a *recentAcks) add(id uint64, data []byte) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.data == nil {
		a.data = map[uint64][]byte{}
	}
	if _, ok := a.data[id]; !ok {
		a.ids = append(a.ids, id)
	}
	a.data[id] = data
	for len(a.ids) > keptAcks {
		delete(a.data, a.ids[0])
		a.ids = a.ids[1:]
	}
}

func (a *recentAcks) get(id uint64) []byte {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.data[id]
}

// decline tells the coordinator this instance cannot snapshot checkpoint id.
func (r *Runtime) decline(ctx context.Context, log *slog.Logger, id uint64, reason string) {
	r.declineAck(ctx, log, id, reason, false)
}

// declineAck is decline, marking with full a snapshot store that had no room for the
// snapshot (the coordinator then aborts with storage_full).
func (r *Runtime) declineAck(ctx context.Context, log *slog.Logger, id uint64, reason string, full bool) {
	r.stats.declined.Add(1)
	log.Warn("barrier declined", "reason", reason, "storage_full", full)
	r.publishAck(ctx, log, &messages.Ack{
		Schema:       messages.SchemaVersion,
		Job:          r.cfg.Job,
		CheckpointID: id,
		Instance:     r.cfg.Instance,
		Incarnation:  r.incarnation,
		Kind:         messages.AckDeclined,
		Reason:       reason,
		StorageFull:  full,
	})
}
