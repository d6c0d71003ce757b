package configlog_test

import (
	"context"
	"path"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/cairn-stream/cairn/internal/configlog"
	"github.com/cairn-stream/cairn/internal/natstest"
	"github.com/cairn-stream/cairn/pkg/cairnjs"
	"github.com/cairn-stream/cairn/pkg/messages"
)

// countingReader counts the reads of a real stream.
type countingReader struct {
	configlog.Reader
	reads atomic.Int64
}

func (c *countingReader) GetLastMsgForSubject(ctx context.Context, subject string) (*jetstream.RawStreamMsg, error) {
	c.reads.Add(1)
	return c.Reader.GetLastMsgForSubject(ctx, subject)
}

func (c *countingReader) GetMsg(ctx context.Context, seq uint64, opts ...jetstream.GetMsgOpt) (*jetstream.RawStreamMsg, error) {
	c.reads.Add(1)
	return c.Reader.GetMsg(ctx, seq, opts...)
}

// msg is one message of a test: on the job's head subject or its events subject, a valid
// event of version v (0: garbage).
type msg struct {
	head bool
	v    uint64
}

func TestReadTakesTheNewerOfHeadAndLastEvent(t *testing.T) {
	srv := natstest.Start(t)
	subj := cairnjs.Subjects{}
	_, js, res := srv.Resources(t, cairnjs.Options{Memory: true, Only: []string{cairnjs.ConfigStream}})
	ev := func(v uint64) msg { return msg{v: v} }
	hd := func(v uint64) msg { return msg{head: true, v: v} }
	garbage, headGarbage := msg{}, msg{head: true}
	for _, tc := range []struct {
		name string
		msgs []msg
		// want is the version in force, wantHead the head's (0: none).
		want, wantHead uint64
		// wantSkipped is how many invalid messages the read reports; maxReads bounds its
		// reads.
		wantSkipped int
		maxReads    int64
	}{
		{name: "head and last event agree", msgs: []msg{ev(1), hd(1), ev(2), hd(2)}, want: 2, wantHead: 2, maxReads: 2},
		{name: "garbage after the head's event", msgs: []msg{ev(1), hd(1), ev(2), hd(2), garbage, garbage, garbage}, want: 2, wantHead: 2, wantSkipped: 1, maxReads: 2},
		// configsvc stopped between publishing version 3 and its head.
		{name: "last event newer than the head", msgs: []msg{ev(1), hd(1), ev(2), hd(2), ev(3)}, want: 3, wantHead: 2, maxReads: 2},
		// A replayed old event, as a rogue publisher might store it.
		{name: "older valid event after the head", msgs: []msg{ev(4), hd(4), ev(5), hd(5), ev(3)}, want: 5, wantHead: 5, maxReads: 2},
		// A deployment from before heads reads back once (until configsvc writes the head).
		{name: "no head, invalid last event", msgs: []msg{ev(1), ev(2), garbage, garbage}, want: 2, wantSkipped: 2, maxReads: 2 + 4},
		{name: "no head, valid last event", msgs: []msg{ev(1), garbage, ev(2)}, want: 2, wantSkipped: 0, maxReads: 2},
		// Something other than configsvc published on the head subject (auth forbids it).
		{name: "invalid head", msgs: []msg{ev(1), hd(1), ev(2), hd(2), headGarbage, garbage}, want: 2, wantHead: 2, wantSkipped: 2, maxReads: 2 + 3},
		{name: "invalid head, no valid head at all", msgs: []msg{ev(1), ev(2), headGarbage, garbage}, want: 2, wantSkipped: 2, maxReads: 2 + 1 + 3},
		{name: "nothing", want: 0, maxReads: 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			job := jobOf(t)
			var lastEvent, lastHead uint64
			for _, m := range tc.msgs {
				data := []byte("garbage")
				if m.v != 0 {
					data = event(t, job, m.v)
				}
				subject := subj.ConfigEvents(job)
				if m.head {
					subject = subj.ConfigHead(job)
				}
				ack, err := js.Publish(ctx, subject, data)
				if err != nil {
					t.Fatal(err)
				}
				if m.head {
					lastHead = ack.Sequence
				} else {
					lastEvent = ack.Sequence
				}
			}
			r := &countingReader{Reader: res.Config}
			l, err := configlog.Read(ctx, r, subj, job, time.Second)
			if err != nil {
				t.Fatalf("Read: %v", err)
			}
			if got := version(l.Event); got != tc.want {
				t.Errorf("version in force %d, want %d", got, tc.want)
			}
			if got := version(l.Head); got != tc.wantHead {
				t.Errorf("head version %d, want %d", got, tc.wantHead)
			}
			if l.HeadSeq != lastHead {
				t.Errorf("head sequence %d, want %d (the head subject's last message)", l.HeadSeq, lastHead)
			}
			if lastEvent != 0 && (l.Last == nil || l.Last.Sequence != lastEvent) {
				t.Errorf("last event %+v, want sequence %d", l.Last, lastEvent)
			}
			if behind := tc.want > tc.wantHead; l.HeadBehind() != behind {
				t.Errorf("HeadBehind() = %t, want %t", l.HeadBehind(), behind)
			}
			if len(l.Skipped) != tc.wantSkipped {
				t.Errorf("skipped %+v, want %d messages", l.Skipped, tc.wantSkipped)
			}
			for i := 1; i < len(l.Skipped); i++ {
				if l.Skipped[i-1].Seq >= l.Skipped[i].Seq {
					t.Errorf("skipped %+v: not oldest first", l.Skipped)
				}
			}
			if n := r.reads.Load(); n > tc.maxReads {
				t.Errorf("%d reads, want at most %d", n, tc.maxReads)
			}
		})
	}
}

// However much garbage follows the head's event on the events subject, enough to push
// every valid event out of the stream, the version in force is read in two reads.
func TestReadIsBoundedWhateverWasPublished(t *testing.T) {
	srv := natstest.Start(t)
	subj := cairnjs.Subjects{}
	const keep = 50
	_, js, res := srv.Resources(t, cairnjs.Options{Memory: true, ConfigHistory: keep, Only: []string{cairnjs.ConfigStream}})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const job = "bounded"
	for v := uint64(1); v <= 3; v++ {
		for _, subject := range []string{subj.ConfigEvents(job), subj.ConfigHead(job)} {
			if _, err := js.Publish(ctx, subject, event(t, job, v)); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, n := range []int{1, keep - 1, keep + 1, 3 * keep} {
		for range n {
			if _, err := js.PublishAsync(subj.ConfigEvents(job), []byte("garbage")); err != nil {
				t.Fatal(err)
			}
		}
		select {
		case <-js.PublishAsyncComplete():
		case <-ctx.Done():
			t.Fatal("garbage not acknowledged")
		}
		r := &countingReader{Reader: res.Config}
		l, err := configlog.Read(ctx, r, subj, job, time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if version(l.Event) != 3 || r.reads.Load() != 2 {
			t.Fatalf("after %d more garbage messages: version %d in %d reads, want 3 in 2", n, version(l.Event), r.reads.Load())
		}
	}
	first, err := res.Config.GetMsg(ctx, 1, jetstream.WithGetMsgSubject(subj.ConfigEvents(job)))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := configlog.Decode(first.Data, job); err == nil {
		t.Fatalf("a valid event is still on the subject at sequence %d: the garbage did not push them out", first.Sequence)
	}
}

func version(ev *messages.ConfigEvent) uint64 {
	if ev == nil {
		return 0
	}
	return ev.Version
}

// jobOf makes a job name of the subtest's name.
func jobOf(t *testing.T) string {
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' {
			return r
		}
		return '-'
	}, path.Base(t.Name()))
}
