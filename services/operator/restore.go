package operator

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"hash"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	cjs "github.com/cairn-stream/cairn/pkg/jetstream"
	"github.com/cairn-stream/cairn/pkg/messages"
)

// manifestReader is the part of the CAIRN_MANIFESTS bucket the runtime uses.
type manifestReader interface {
	Get(ctx context.Context, key string) (jetstream.KeyValueEntry, error)
	ListKeysFiltered(ctx context.Context, filters ...string) (jetstream.KeyLister, error)
}

// errDigestMismatch is wrapped when a downloaded snapshot is not the one the manifest
// describes.
var errDigestMismatch = errors.New("snapshot does not match the manifest")

// restored is where a Runtime starts from.
type restored struct {
	// checkpoint is the id of the checkpoint restored, 0 for an empty start.
	checkpoint uint64
	// position is the last input sequence the restored state includes.
	position uint64
	// ref is the restored snapshot, nil for an empty start.
	ref *messages.SnapshotRef
}

// restore restores the Machine from the newest manifest that holds a usable snapshot of
// this instance: <job>.latest first, then the retained <job>.<id>, newest first. Snapshots
// that are missing, corrupt or cannot be restored are logged at error level and skipped.
// With none, the Machine stays empty and the input is read from the start. Errors are
// returned only when the manifests cannot be read.
func (r *Runtime) restore(ctx context.Context) (restored, error) {
	tried := make(map[uint64]bool)
	unusable := 0
	e, err := r.manifests.Get(ctx, cjs.LatestKey(r.cfg.Job))
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
	case err != nil:
		return restored{}, fmt.Errorf("read manifest %s: %w", cjs.LatestKey(r.cfg.Job), err)
	default:
		var mf messages.Manifest
		if err := messages.Unmarshal(e.Value(), &mf); err != nil {
			r.log.Error().Err(err).Str("key", e.Key()).Msg("latest manifest unreadable; trying the retained ones")
			unusable++
			break
		}
		tried[mf.CheckpointID] = true
		rs, found, ok := r.restoreFrom(ctx, &mf)
		if ok {
			return rs, nil
		}
		if found {
			unusable++
		}
	}
	ids, err := r.retainedIDs(ctx)
	if err != nil {
		return restored{}, err
	}
	for _, id := range ids {
		if tried[id] {
			continue
		}
		key := cjs.ManifestKey(r.cfg.Job, id)
		e, err := r.manifests.Get(ctx, key)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue
		}
		if err != nil {
			return restored{}, fmt.Errorf("read manifest %s: %w", key, err)
		}
		var mf messages.Manifest
		if err := messages.Unmarshal(e.Value(), &mf); err != nil {
			r.log.Error().Err(err).Str("key", key).Msg("retained manifest unreadable; skipped")
			unusable++
			continue
		}
		rs, found, ok := r.restoreFrom(ctx, &mf)
		if ok {
			return rs, nil
		}
		if found {
			unusable++
		}
	}
	if unusable > 0 {
		r.log.Error().Int("unusable", unusable).Msg("no retained checkpoint holds a usable snapshot of this instance: starting empty, reading the input from the start")
	} else {
		r.log.Info().Msg("no checkpoint holds a snapshot of this instance yet: starting empty, reading the input from the start")
	}
	return restored{}, nil
}

// retainedIDs lists the checkpoint ids of the job's retained manifests, newest first.
func (r *Runtime) retainedIDs(ctx context.Context) ([]uint64, error) {
	lctx, cancel := context.WithCancel(ctx)
	defer cancel()
	kl, err := r.manifests.ListKeysFiltered(lctx, r.cfg.Job+".*")
	if err != nil {
		return nil, fmt.Errorf("list the manifests of job %s: %w", r.cfg.Job, err)
	}
	var ids []uint64
	for k := range kl.Keys() {
		id, err := strconv.ParseUint(strings.TrimPrefix(k, r.cfg.Job+"."), 10, 64)
		if err == nil && id > 0 {
			ids = append(ids, id)
		}
	}
	if err := lctx.Err(); err != nil {
		return nil, fmt.Errorf("list the manifests of job %s: %w", r.cfg.Job, err)
	}
	slices.Sort(ids)
	slices.Reverse(ids)
	return slices.Compact(ids), nil
}

// restoreFrom restores this instance's snapshot of manifest mf. found reports whether mf
// holds one, ok whether it was restored; an unusable snapshot is logged at error level.
func (r *Runtime) restoreFrom(ctx context.Context, mf *messages.Manifest) (rs restored, found, ok bool) {
	log := r.log.With().Uint64("checkpoint", mf.CheckpointID).Logger()
	inst, found := mf.Instances[r.cfg.Instance]
	if !found {
		log.Debug().Msg("checkpoint holds no snapshot of this instance; trying older ones")
		return restored{}, false, false
	}
	log = log.With().Str("object", inst.Snapshot.Object).Logger()
	pos, ok := inst.Positions[r.cfg.InputStream]
	if !ok {
		log.Error().Str("input_stream", r.cfg.InputStream).Msg("snapshot has no position in the input stream; falling back to an older checkpoint")
		return restored{}, true, false
	}
	start := time.Now()
	if err := r.fetchAndRestore(ctx, inst.Snapshot); err != nil {
		log.Error().Err(err).Msg("snapshot unusable; falling back to an older checkpoint")
		return restored{}, true, false
	}
	log.Info().Uint64("position", pos).Uint64("size", inst.Snapshot.Size).Dur("took", time.Since(start)).Msg("state restored")
	ref := inst.Snapshot
	return restored{checkpoint: mf.CheckpointID, position: pos, ref: &ref}, true, true
}

// fetchAndRestore downloads the object ref names into a spool, checks its size and
// SHA-256 against ref, and only then restores the Machine from it.
func (r *Runtime) fetchAndRestore(ctx context.Context, ref messages.SnapshotRef) error {
	sp := newSpool(spoolMemLimit)
	defer func() {
		if err := sp.Close(); err != nil {
			r.log.Warn().Err(err).Msg("remove restore spool")
		}
	}()
	dctx, cancel := context.WithTimeout(ctx, transferBudget(ref.Size))
	defer cancel()
	obj, err := r.snapshots.Get(dctx, ref.Object)
	if err != nil {
		return fmt.Errorf("get object %s: %w", ref.Object, err)
	}
	defer obj.Close()
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(sp, h), obj)
	if err != nil {
		return fmt.Errorf("download object %s: %w", ref.Object, err)
	}
	if uint64(n) != ref.Size {
		return fmt.Errorf("%w: object %s has %d bytes, the manifest says %d", errDigestMismatch, ref.Object, n, ref.Size)
	}
	if d := digest(h); d != ref.Digest {
		return fmt.Errorf("%w: object %s has digest %s, the manifest says %s", errDigestMismatch, ref.Object, d, ref.Digest)
	}
	rd, err := sp.Reader()
	if err != nil {
		return err
	}
	if err := r.m.Restore(rd); err != nil {
		return fmt.Errorf("restore from object %s: %w", ref.Object, err)
	}
	return nil
}

// digest renders a SHA-256 the way the object store does: "SHA-256=" and the URL-safe
// base64 of the sum, padded.
func digest(h hash.Hash) string {
	return "SHA-256=" + base64.URLEncoding.EncodeToString(h.Sum(nil))
}

// transferBudget bounds one upload or download of size bytes: 30s plus a second per 4 MiB.
func transferBudget(size uint64) time.Duration {
	return 30*time.Second + time.Duration(size/(4<<20))*time.Second
}
