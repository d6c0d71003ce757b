package coordinator

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
func (j *job) noteAck(a *messages.Ack) {
	if a.Kind != messages.AckDone {
		return
	}
	if j.acked == nil {
		j.acked = map[string]ackedObject{}
	}
	if cur, ok := j.acked[a.Instance]; !ok || a.CheckpointID > cur.checkpoint {
		j.acked[a.Instance] = ackedObject{checkpoint: a.CheckpointID, object: a.Snapshot.Object}
	}
}

// retainEvery and retainAfter pace the retention passes completions ask for. A
// completion asks for one when retainEvery completions or retainAfter have passed since
// the last request; otherwise the loop asks for one once the job has been quiet for two
// intervals after its last completion, and at the latest retainAfter after the last
// request. One pass then serves several completions of a busy job (its listing of the
// job's keys is the costly part), at most retainEvery manifests beyond retain wait for it,
// and a job that went quiet is retained and trimmed soon. Aborts and savepoint deletions
// ask at once.
const (
	retainEvery = 10
	retainAfter = 10 * time.Second
)

// retainPhase is where in the cycle of retainEvery completions the job's retention
// passes fall after its first, different for different jobs: jobs started together would
// otherwise all retain on the same completion and load NATS in bursts.
func retainPhase(job string) int {
	h := fnv.New32a()
	h.Write([]byte(job))
	return int(h.Sum32() % retainEvery)
}

// retainCompleted paces the retention pass after a completion at now (retainEvery,
// retainAfter).
func (j *job) retainCompleted(now time.Time) {
	j.unretained++
	if j.unretained >= retainEvery || !now.Before(j.retainedAt.Add(retainAfter)) {
		j.retainNow(false)
	}
}

// retainDue is when completions not yet retained get their retention pass.
func (j *job) retainDue() time.Time {
	due := j.retainedAt.Add(retainAfter)
	if quiet := j.lastComplete.Add(2 * j.cfg.Interval); quiet.Before(due) {
		due = quiet
	}
	return due
}

// retainNow hands retention the snapshots of the checkpoints aborted since the last call.
// Those their instances have moved past are freed, deleted at once unless a retained
// manifest references them; the others (an instance's last acked object, which it may
// still reuse) stay in j.dropped and are offered again at the next call. scan asks for a
// full scan of the snapshot store.
func (j *job) retainNow(scan bool) {
	req := retainRequest{keep: j.cfg.Retain, live: j.liveRefs(), scan: scan, written: j.written}
	j.written, j.unretained = nil, 0
	if j.retainedAt.IsZero() {
		j.unretained = retainPhase(j.name)
	}
	j.retainedAt = time.Now()
	seen := map[string]bool{}
	var kept []messages.SnapshotRef
	for _, ref := range j.dropped {
		if seen[ref.Object] {
			continue
		}
		seen[ref.Object] = true
		req.dropped = append(req.dropped, ref)
		if j.reusable(ref.Object) {
			kept = append(kept, ref)
		} else {
			req.freed = append(req.freed, ref)
		}
	}
	j.dropped = kept
	j.b.retain(req)
}

// reusable reports whether the instance that uploaded object may still reference it in an
// ack: it is the object of the instance's newest known ack, or the instance is unknown.
func (j *job) reusable(object string) bool {
	rest, ok := strings.CutPrefix(object, j.name+"/")
	if !ok {
		return true
	}
	_, instance, ok := strings.Cut(rest, "/")
	if !ok {
		return true
	}
	cur, ok := j.acked[instance]
	return !ok || cur.object == object
}
