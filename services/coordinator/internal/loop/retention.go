package loop

import (
	"hash/fnv"
	"strings"
	"time"

	"github.com/cairn-stream/cairn/pkg/messages"
)

// ackedObject is the object of the newest ack an instance sent.
type ackedObject struct {
	checkpoint uint64
	object     string
}

// noteAck remembers the object of the newest ack of each instance, pending or late. An
// operator reuses only the object of its own last ack (when its state did not change), so
// once an instance has acked a newer object, none of its older objects can be referenced
// by a future ack.
func (j *Job) noteAck(a *messages.Ack) {
	if a.Kind != messages.AckDone {
		return
	}
	if j.pacing.acked == nil {
		j.pacing.acked = map[string]ackedObject{}
	}
	if cur, ok := j.pacing.acked[a.Instance]; !ok || a.CheckpointID > cur.checkpoint {
		j.pacing.acked[a.Instance] = ackedObject{checkpoint: a.CheckpointID, object: a.Snapshot.Object}
	}
}

// retainEvery and RetainAfter pace the retention passes completions ask for. A
// completion asks for one when retainEvery completions or RetainAfter have passed since
// the last request; otherwise the loop asks for one once the job has been quiet for two
// intervals after its last completion, and at the latest RetainAfter after the last
// request. One pass then serves several completions of a busy job (its listing of the
// job's keys is the costly part), at most retainEvery manifests beyond retain wait for it,
// and a job that went quiet is retained and trimmed soon. Aborts and savepoint deletions
// ask at once.
const retainEvery = 10

// RetainAfter is the longest a busy job goes between retention requests (see retainEvery).
const RetainAfter = 10 * time.Second

// retainPhase is where in the cycle of retainEvery completions the job's retention
// passes fall after its first, different for different jobs: jobs started together would
// otherwise all retain on the same completion and load NATS in bursts.
func retainPhase(job string) int {
	h := fnv.New32a()
	h.Write([]byte(job))
	return int(h.Sum32() % retainEvery)
}

// retainCompleted paces the retention pass after a completion at now (retainEvery,
// RetainAfter).
func (j *Job) retainCompleted(now time.Time) {
	j.pacing.unretained++
	if j.pacing.unretained >= retainEvery || !now.Before(j.pacing.retainedAt.Add(RetainAfter)) {
		j.retainNow(false)
	}
}

// retainDue is when completions not yet retained get their retention pass.
func (j *Job) retainDue() time.Time {
	due := j.pacing.retainedAt.Add(RetainAfter)
	if quiet := j.sched.lastComplete.Add(2 * j.config.cfg.Interval); quiet.Before(due) {
		due = quiet
	}
	return due
}

// retainNow hands retention the snapshots of the checkpoints aborted since the last call.
// Those their instances have moved past are freed, deleted at once unless a retained
// manifest references them; the others (an instance's last acked object, which it may
// still reuse) stay in j.pacing.dropped and are offered again at the next call. scan asks for a
// full scan of the snapshot store.
func (j *Job) retainNow(scan bool) {
	req := RetainRequest{Keep: j.config.cfg.Retain, Live: j.liveRefs(), Scan: scan, Written: j.pacing.written}
	j.pacing.written, j.pacing.unretained = nil, 0
	if j.pacing.retainedAt.IsZero() {
		j.pacing.unretained = retainPhase(j.name)
	}
	j.pacing.retainedAt = time.Now()
	seen := map[string]bool{}
	var kept []messages.SnapshotRef
	for _, ref := range j.pacing.dropped {
		if seen[ref.Object] {
			continue
		}
		seen[ref.Object] = true
		req.Dropped = append(req.Dropped, ref)
		if j.reusable(ref.Object) {
			kept = append(kept, ref)
		} else {
			req.Freed = append(req.Freed, ref)
		}
	}
	j.pacing.dropped = kept
	j.b.Retain(req)
}

// reusable reports whether the instance that uploaded object may still reference it in an
// ack: it is the object of the instance's newest known ack, or the instance is unknown.
func (j *Job) reusable(object string) bool {
	rest, ok := strings.CutPrefix(object, j.name+"/")
	if !ok {
		return true
	}
	_, instance, ok := strings.Cut(rest, "/")
	if !ok {
		return true
	}
	cur, ok := j.pacing.acked[instance]
	return !ok || cur.object == object
}
