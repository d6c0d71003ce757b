package coordinator

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"

	cjs "github.com/cairn-stream/cairn/pkg/jetstream"
	"github.com/cairn-stream/cairn/pkg/messages"
)

// errSavepointExists is returned by writeSavepoint when the name is in use.
var errSavepointExists = errors.New("savepoint name in use")

// deleteRequest asks the job's loop to delete a savepoint; done is called once, from the
// loop.
type deleteRequest struct {
	savepoint string
	done      func(*messages.SavepointDeleted, *replyError)
}

// savepoints reads the job's savepoints (<job>.savepoint.<name>), by name.
func (b *natsBackend) savepoints(ctx context.Context) (map[string]*messages.Manifest, error) {
	return readSavepoints(ctx, b.leader, b.manifests, b.job)
}

// readSavepoints reads job's savepoints from the manifest bucket, by name.
func readSavepoints(ctx context.Context, leader cjs.Requester, kv jetstream.KeyValue, job string) (map[string]*messages.Manifest, error) {
	lister, err := kv.ListKeysFiltered(ctx, cjs.SavepointKey(job, "*"))
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
func readSavepointKeys(ctx context.Context, leader cjs.Requester, kv jetstream.KeyValue, job string, keys []string) (map[string]*messages.Manifest, error) {
	out := make(map[string]*messages.Manifest, len(keys))
	for _, k := range keys {
		m, err := readManifestKey(ctx, leader, kv, k)
		if err != nil {
			return nil, err
		}
		if m != nil {
			out[strings.TrimPrefix(k, cjs.SavepointKey(job, ""))] = m
		}
	}
	return out, nil
}

// readManifestKey reads the manifest under key of bucket kv from the bucket stream's
// leader; nil when it is gone. Never from a replica that may lag: retention takes a
// manifest it reads as gone for deleted, and would free what only that manifest
// references.
func readManifestKey(ctx context.Context, leader cjs.Requester, kv jetstream.KeyValue, key string) (*messages.Manifest, error) {
	value, _, err := cjs.CurrentEntry(ctx, leader, kv.Bucket(), key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", key, err)
	}
	var m messages.Manifest
	if err := messages.Unmarshal(value, &m); err != nil {
		return nil, fmt.Errorf("%s: %w", key, err)
	}
	return &m, nil
}

func (b *natsBackend) writeSavepoint(ctx context.Context, m *messages.Manifest) error {
	b.relist = true
	data, err := messages.Marshal(m)
	if err != nil {
		return err
	}
	if _, err := b.manifests.Create(ctx, cjs.SavepointKey(b.job, m.Savepoint), data); err != nil {
		if errors.Is(err, jetstream.ErrKeyExists) {
			return errSavepointExists
		}
		return fmt.Errorf("put savepoint %s: %w", m.Savepoint, err)
	}
	return nil
}

func (b *natsBackend) deleteSavepoint(ctx context.Context, name string) (*messages.Manifest, error) {
	b.relist = true
	key := cjs.SavepointKey(b.job, name)
	m, err := readManifestKey(ctx, b.leader, b.manifests, key)
	if err != nil || m == nil {
		return nil, err
	}
	if err := b.manifests.Purge(ctx, key); err != nil {
		return nil, fmt.Errorf("delete savepoint %s: %w", name, err)
	}
	return m, nil
}

// ensureSavepoints reads the job's savepoints unless the loop already holds them.
func (j *job) ensureSavepoints(ctx context.Context) error {
	if j.savepointsOK {
		return nil
	}
	cctx, cancel := j.callCtx(ctx)
	defer cancel()
	sps, err := j.b.savepoints(cctx)
	if err != nil {
		return err
	}
	j.savepoints, j.savepointsOK = sps, true
	return nil
}

// storeSavepoint writes the savepoint of manifest m, just written; on failure it returns
// the error to answer the savepoint request with (the checkpoint itself completed).
func (j *job) storeSavepoint(ctx context.Context, m *messages.Manifest) *replyError {
	cctx, cancel := j.callCtx(ctx)
	defer cancel()
	err := j.b.writeSavepoint(cctx, m)
	switch {
	case errors.Is(err, errSavepointExists):
		j.savepointsOK = false // someone else wrote it: read them again when next needed
		return &replyError{codeConflict, fmt.Sprintf("checkpoint %d completed, but savepoint %s of job %s already exists; delete it first or choose another name", m.CheckpointID, m.Savepoint, j.name)}
	case err != nil:
		j.log.Error().Err(err).Uint64("checkpoint", m.CheckpointID).Str("savepoint", m.Savepoint).Msg("cannot write the savepoint")
		return &replyError{codeUnavailable, fmt.Sprintf("checkpoint %d completed, but savepoint %s of job %s could not be written: %v; try again", m.CheckpointID, m.Savepoint, j.name, err)}
	}
	if j.savepoints == nil {
		j.savepoints = map[string]*messages.Manifest{}
	}
	j.savepoints[m.Savepoint] = m
	j.log.Info().Uint64("checkpoint", m.CheckpointID).Str("savepoint", m.Savepoint).Msg("savepoint written")
	return nil
}

// requestDelete deletes a savepoint and queues a retention pass that drops its objects
// and lets its input go.
func (j *job) requestDelete(ctx context.Context, req deleteRequest) {
	if !j.lease.held {
		req.done(nil, &replyError{codeUnavailable, fmt.Sprintf("coordinator %s does not hold the lease of job %s; nothing was deleted, try again", j.coordID, j.name)})
		return
	}
	cctx, cancel := j.callCtx(ctx)
	m, err := j.b.deleteSavepoint(cctx, req.savepoint)
	cancel()
	if err != nil {
		req.done(nil, &replyError{codeUnavailable, fmt.Sprintf("cannot delete savepoint %s of job %s: %v", req.savepoint, j.name, err)})
		return
	}
	if m == nil {
		names := "none"
		if j.ensureSavepoints(ctx) == nil && len(j.savepoints) > 0 {
			names = strings.Join(slices.Sorted(maps.Keys(j.savepoints)), ", ")
		}
		req.done(nil, &replyError{codeNotFound, fmt.Sprintf("savepoint %s of job %s does not exist; savepoints: %s", req.savepoint, j.name, names)})
		return
	}
	delete(j.savepoints, req.savepoint)
	for _, s := range m.Instances {
		j.dropped = append(j.dropped, s.Refs()...)
	}
	j.retainNow(false)
	j.log.Warn().Uint64("checkpoint", m.CheckpointID).Str("savepoint", req.savepoint).Msg("savepoint deleted")
	req.done(&messages.SavepointDeleted{Job: j.name, Savepoint: req.savepoint, ID: m.CheckpointID, DeletedAt: time.Now().UTC()}, nil)
}

// savepointHolds describes the savepoints for the status: per member, its positions and
// how far behind the newest checkpoint's they are.
func (j *job) savepointHolds() []messages.SavepointHold {
	var out []messages.SavepointHold
	for _, name := range slices.Sorted(maps.Keys(j.savepoints)) {
		m := j.savepoints[name]
		h := messages.SavepointHold{Name: name, ID: m.CheckpointID, CompletedAt: m.CompletedAt, Instances: map[string]messages.SavepointInput{}}
		for inst, s := range m.Instances {
			in := messages.SavepointInput{Positions: s.Positions}
			if j.prev != nil {
				for stream, pos := range s.Positions {
					if now, ok := j.prev.Instances[inst].Positions[stream]; ok && now > pos {
						if in.Behind == nil {
							in.Behind = map[string]uint64{}
						}
						in.Behind[stream] = now - pos
					}
				}
			}
			h.Instances[inst] = in
		}
		out = append(out, h)
	}
	return out
}

// parseSavepointRequest decodes a savepoint deletion body strictly: a JSON object with
// exactly one field, savepoint, a valid savepoint name.
func parseSavepointRequest(data []byte) (messages.SavepointRequest, error) {
	req, err := parseTriggerRequest(data)
	if err == nil && req.Savepoint == "" {
		err = errors.New(`savepoint is required: {"savepoint":"<name>"}`)
	}
	if err != nil && len(bytes.TrimSpace(data)) == 0 {
		err = errors.New(`the body must be a JSON object {"savepoint":"<name>"}`)
	}
	return messages.SavepointRequest{Savepoint: req.Savepoint}, err
}

// onDelete answers cairn.checkpoint.delete.<job> at the job's lease holder (see atHolder).
func (s *Service) onDelete(ctx context.Context, r micro.Request) {
	name := s.cfg.Subjects.Token(r.Subject(), 2)
	req, e := parseHolderCall(name, r.Data(), parseSavepointRequest)
	if e != nil {
		respondError(r, e.code, e.msg)
		return
	}
	s.atHolder(ctx, r, holderRequest{
		job: name, what: "deletion", unchanged: "nothing was deleted", wait: forwardRemovalWait,
		direct: func(holder string) string { return s.cfg.Subjects.CoordinatorCheckpoint(holder, "delete", name) },
		local:  func(done answerFunc) { s.deleteLocally(ctx, name, req.Savepoint, done) },
	})
}

// onDirectDelete answers a savepoint deletion forwarded to this coordinator by a standby.
func (s *Service) onDirectDelete(ctx context.Context, m *nats.Msg) {
	name := s.cfg.Subjects.Token(m.Subject, 4)
	s.onDirect(m, func(done answerFunc) {
		req, e := parseHolderCall(name, m.Data, parseSavepointRequest)
		if e != nil {
			done(nil, e)
			return
		}
		s.deleteLocally(ctx, name, req.Savepoint, done)
	})
}

// deleteLocally hands a savepoint deletion to the job's loop; done is called here when the
// loop cannot take it.
func (s *Service) deleteLocally(ctx context.Context, name, savepoint string, done answerFunc) {
	j, release := s.wakeFor(ctx, name, "nothing was deleted", func(e *replyError) { done(nil, e) })
	if j == nil {
		return
	}
	qctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req := deleteRequest{savepoint: savepoint, done: func(out *messages.SavepointDeleted, e *replyError) {
		release()
		done(out, e)
	}}
	if !send(qctx, j.deletes, req) {
		req.done(nil, &replyError{codeUnavailable, "coordinator busy or stopping; nothing was deleted, try again"})
	}
}

// onList answers cairn.checkpoint.list.<job> from the manifest bucket, which every
// replica reads alike: no forwarding to the lease holder.
func (s *Service) onList(ctx context.Context, r micro.Request) {
	name := s.cfg.Subjects.Token(r.Subject(), 2)
	if err := messages.ValidateName("job", name); err != nil {
		respondError(r, codeBadRequest, err.Error())
		return
	}
	if body := bytes.TrimSpace(r.Data()); len(body) > 0 && !bytes.Equal(body, []byte("{}")) {
		respondError(r, codeBadRequest, fmt.Sprintf("the list request takes no body (or {}); got %q", body))
		return
	}
	if s.lookup(name) == nil {
		respondError(r, codeNotFound, fmt.Sprintf("unknown job %q: it has no config and no registered instance", name))
		return
	}
	reply := r.Reply()
	s.wg.Go(func() {
		lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		list, err := s.listCheckpoints(lctx, name)
		if err != nil {
			s.publishReply(replyMsg(reply, nil, &replyError{codeUnavailable, fmt.Sprintf("cannot list the checkpoints of job %s: %v", name, err)}))
			return
		}
		s.publishReply(replyMsg(reply, list, nil))
	})
}

// listCheckpoints reads job's retained checkpoints, newest first, and its savepoints, by
// name.
func (s *Service) listCheckpoints(ctx context.Context, job string) (*messages.CheckpointList, error) {
	ids, savepointKeys, err := listManifestKeys(ctx, s.res.Manifests, job)
	if err != nil {
		return nil, err
	}
	slices.Sort(ids)
	slices.Reverse(ids)
	list := &messages.CheckpointList{Job: job, Checkpoints: []messages.CheckpointInfo{}, Savepoints: []messages.CheckpointInfo{}}
	for _, id := range ids {
		m, err := readManifestKey(ctx, s.nc, s.res.Manifests, cjs.ManifestKey(job, id))
		if err != nil {
			return nil, err
		}
		if m != nil {
			list.Checkpoints = append(list.Checkpoints, messages.NewCheckpointInfo(m))
		}
	}
	sps, err := readSavepointKeys(ctx, s.nc, s.res.Manifests, job, savepointKeys)
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
