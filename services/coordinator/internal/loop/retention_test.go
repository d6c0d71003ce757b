package loop

import (
	"slices"
	"testing"

	"github.com/rs/zerolog"

	"github.com/cairn-stream/cairn/pkg/messages"
)

// TestAbortedUploadsAreFreedOnceTheirInstanceMovedOn checks which snapshots of aborted
// checkpoints retention may delete at once: those whose instance has acked a newer object
// since. An instance's last acked object stays (the instance may reuse it in its next
// ack when its state did not change) and is offered again at the next request.
func TestAbortedUploadsAreFreedOnceTheirInstanceMovedOn(t *testing.T) {
	f := &fakeBackend{}
	j := newJob("d", "c", f, zerolog.Nop())
	ack := func(id uint64, inst, object string) messages.SnapshotRef {
		ref := messages.SnapshotRef{Object: object, Size: 1, Digest: "x"}
		j.noteAck(&messages.Ack{CheckpointID: id, Instance: inst, Kind: messages.AckDone, Snapshot: ref})
		return ref
	}
	objects := func(refs []messages.SnapshotRef) []string {
		var out []string
		for _, r := range refs {
			out = append(out, r.Object)
		}
		slices.Sort(out)
		return out
	}
	a4 := ack(4, "a", "d/4/a")
	b4 := ack(4, "b", "d/4/b")
	j.pacing.dropped = append(j.pacing.dropped, a4, b4) // checkpoint 4 aborted
	a5 := ack(5, "a", "d/5/a")                          // a moved on; b did not ack again
	ack(3, "a", "d/3/a")                                // a late ack of an older checkpoint changes nothing
	j.pacing.dropped = append(j.pacing.dropped, a5, a5) // checkpoint 5 aborted (a duplicate is offered once)
	j.retainNow(false)
	if got := objects(f.retained.Freed); !slices.Equal(got, []string{"d/4/a"}) {
		t.Fatalf("freed %v, want [d/4/a]", got)
	}
	if got := objects(f.retained.Dropped); !slices.Equal(got, []string{"d/4/a", "d/4/b", "d/5/a"}) {
		t.Fatalf("dropped %v", got)
	}
	if got := objects(j.pacing.dropped); !slices.Equal(got, []string{"d/4/b", "d/5/a"}) {
		t.Fatalf("kept for later %v, want the instances' last acked objects", got)
	}
	// b reuses its object in checkpoint 6 (unchanged state): still not free. a uploads anew.
	ack(6, "b", "d/4/b")
	ack(6, "a", "d/6/a")
	j.retainNow(true)
	if got := objects(f.retained.Freed); !slices.Equal(got, []string{"d/5/a"}) || !f.retained.Scan {
		t.Fatalf("freed %v (scan %v), want [d/5/a] with a scan", got, f.retained.Scan)
	}
	if got := objects(j.pacing.dropped); !slices.Equal(got, []string{"d/4/b"}) {
		t.Fatalf("kept for later %v, want [d/4/b]", got)
	}
}
