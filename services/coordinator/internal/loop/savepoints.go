package loop

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/cairn-stream/cairn/pkg/messages"
)

// deleteRequest asks the job's loop to delete a savepoint; done is called once, from the
// loop.
type deleteRequest struct {
	savepoint string
	done      func(*messages.SavepointDeleted, *Error)
}

// ensureSavepoints reads the job's savepoints unless the loop already holds them.
func (j *Job) ensureSavepoints(ctx context.Context) error {
	if j.stored.savepointsOK {
		return nil
	}
	cctx, cancel := j.callCtx(ctx)
	defer cancel()
	sps, err := j.b.Savepoints(cctx)
	if err != nil {
		return err
	}
	j.stored.savepoints, j.stored.savepointsOK = sps, true
	return nil
}

// storeSavepoint writes the savepoint of manifest m, just written; on failure it returns
// the error to answer the savepoint request with (the checkpoint itself completed).
func (j *Job) storeSavepoint(ctx context.Context, m *messages.Manifest) *Error {
	cctx, cancel := j.callCtx(ctx)
	defer cancel()
	err := j.b.WriteSavepoint(cctx, m)
	switch {
	case errors.Is(err, ErrSavepointExists):
		j.stored.savepointsOK = false // someone else wrote it: read them again when next needed
		return &Error{Conflict, fmt.Sprintf("checkpoint %d completed, but savepoint %s of job %s already exists; delete it first or choose another name", m.CheckpointID, m.Savepoint, j.name)}
	case err != nil:
		j.log.Error().Err(err).Uint64("checkpoint", m.CheckpointID).Str("savepoint", m.Savepoint).Msg("cannot write the savepoint")
		return &Error{Unavailable, fmt.Sprintf("checkpoint %d completed, but savepoint %s of job %s could not be written: %v; try again", m.CheckpointID, m.Savepoint, j.name, err)}
	}
	if j.stored.savepoints == nil {
		j.stored.savepoints = map[string]*messages.Manifest{}
	}
	j.stored.savepoints[m.Savepoint] = m
	j.log.Info().Uint64("checkpoint", m.CheckpointID).Str("savepoint", m.Savepoint).Msg("savepoint written")
	return nil
}

// requestDelete deletes a savepoint and queues a retention pass that drops its objects
// and lets its input go.
func (j *Job) requestDelete(ctx context.Context, req deleteRequest) {
	if e := j.refusal(ctx, "nothing was deleted, try again", ""); e != nil {
		req.done(nil, e)
		return
	}
	cctx, cancel := j.callCtx(ctx)
	m, err := j.b.DeleteSavepoint(cctx, req.savepoint)
	cancel()
	if err != nil {
		req.done(nil, &Error{Unavailable, fmt.Sprintf("cannot delete savepoint %s of job %s: %v", req.savepoint, j.name, err)})
		return
	}
	if m == nil {
		names := "none"
		if j.ensureSavepoints(ctx) == nil && len(j.stored.savepoints) > 0 {
			names = strings.Join(slices.Sorted(maps.Keys(j.stored.savepoints)), ", ")
		}
		req.done(nil, &Error{NotFound, fmt.Sprintf("savepoint %s of job %s does not exist; savepoints: %s", req.savepoint, j.name, names)})
		return
	}
	delete(j.stored.savepoints, req.savepoint)
	for _, s := range m.Instances {
		j.pacing.dropped = append(j.pacing.dropped, s.Refs()...)
	}
	j.retainNow(false)
	j.log.Warn().Uint64("checkpoint", m.CheckpointID).Str("savepoint", req.savepoint).Msg("savepoint deleted")
	req.done(&messages.SavepointDeleted{Job: j.name, Savepoint: req.savepoint, ID: m.CheckpointID, DeletedAt: time.Now().UTC()}, nil)
}

// savepointHolds describes the savepoints for the status: per member, its positions and
// how far behind the newest checkpoint's they are.
func (j *Job) savepointHolds() []messages.SavepointHold {
	var out []messages.SavepointHold
	for _, name := range slices.Sorted(maps.Keys(j.stored.savepoints)) {
		m := j.stored.savepoints[name]
		h := messages.SavepointHold{Name: name, ID: m.CheckpointID, CompletedAt: m.CompletedAt, Instances: map[string]messages.SavepointInput{}}
		for inst, s := range m.Instances {
			in := messages.SavepointInput{Positions: s.Positions}
			if j.stored.prev != nil {
				for stream, pos := range s.Positions {
					if now, ok := j.stored.prev.Instances[inst].Positions[stream]; ok && now > pos {
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
