package configlog_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/cairn-stream/cairn/internal/configlog"
	"github.com/cairn-stream/cairn/internal/natstest"
	"github.com/cairn-stream/cairn/pkg/cairnjs"
	"github.com/cairn-stream/cairn/pkg/messages"
)

func event(t *testing.T, job string, version uint64) []byte {
	t.Helper()
	data, err := messages.Marshal(&messages.ConfigEvent{Schema: messages.SchemaVersion, Job: job, Version: version, Config: messages.DefaultConfig()})
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// A job without a head (a deployment from before heads, or events published without
// configsvc) reads back through its events subject when the last message is invalid.
func TestReadSkipsInvalidEvents(t *testing.T) {
	srv := natstest.Start(t)
	subj := cairnjs.Subjects{}
	_, js, res := srv.Resources(t, cairnjs.Options{Memory: true, Only: []string{cairnjs.ConfigStream}})
	garbage := []byte("garbage")
	for _, tc := range []struct {
		name        string
		job         string
		msgs        [][]byte
		wantVersion uint64 // 0: no valid event
		wantSkipped []int  // indexes into msgs
	}{
		{name: "empty", job: "empty"},
		{name: "valid last", job: "valid", msgs: [][]byte{event(t, "valid", 1), event(t, "valid", 2)}, wantVersion: 2},
		{
			name: "invalid after valid", job: "mixed",
			msgs:        [][]byte{event(t, "mixed", 1), garbage, event(t, "mixed", 2), garbage, event(t, "other", 3)},
			wantVersion: 2, wantSkipped: []int{3, 4},
		},
		{name: "only invalid", job: "bad", msgs: [][]byte{garbage, event(t, "other", 1)}, wantSkipped: []int{0, 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			var seqs []uint64
			// Another job's messages in between: the walk reads only the job's subject.
			for _, data := range tc.msgs {
				ack, err := js.Publish(ctx, subj.ConfigEvents(tc.job), data)
				if err != nil {
					t.Fatal(err)
				}
				seqs = append(seqs, ack.Sequence)
				if _, err := js.Publish(ctx, subj.ConfigEvents("noise"), garbage); err != nil {
					t.Fatal(err)
				}
			}
			l, err := configlog.Read(ctx, res.Config, subj, tc.job, time.Second)
			if err != nil {
				t.Fatalf("Read: %v", err)
			}
			switch {
			case tc.wantVersion == 0 && l.Event != nil:
				t.Fatalf("event %+v, want none", l.Event)
			case tc.wantVersion != 0 && (l.Event == nil || l.Event.Version != tc.wantVersion):
				t.Fatalf("event %+v, want version %d", l.Event, tc.wantVersion)
			}
			if len(seqs) == 0 {
				if l.Last != nil || len(l.Skipped) != 0 {
					t.Fatalf("empty subject read as %+v", l)
				}
				return
			}
			if l.Last == nil || l.Last.Sequence != seqs[len(seqs)-1] {
				t.Fatalf("last message %+v, want sequence %d", l.Last, seqs[len(seqs)-1])
			}
			if len(l.Skipped) != len(tc.wantSkipped) {
				t.Fatalf("skipped %+v, want messages %v", l.Skipped, tc.wantSkipped)
			}
			for i, k := range tc.wantSkipped {
				if sk := l.Skipped[i]; sk.Seq != seqs[k] || !errors.Is(sk.Err, messages.ErrMalformed) {
					t.Fatalf("skipped[%d] = %+v, want sequence %d wrapping ErrMalformed", i, sk, seqs[k])
				}
			}
		})
	}
}

func TestDecodeRefusesAnotherJobsEvent(t *testing.T) {
	_, err := configlog.Decode(event(t, "a", 1), "b")
	if !errors.Is(err, configlog.ErrForeignJob) || !errors.Is(err, messages.ErrMalformed) || !strings.Contains(err.Error(), `it names job "a", its subject job "b"`) {
		t.Fatalf("Decode = %v", err)
	}
}

func TestSkipLogLogsEachSequenceOnce(t *testing.T) {
	var buf natstest.LogBuffer
	log := zerolog.New(&buf)
	var sl configlog.SkipLog
	sk := []configlog.Skipped{{Seq: 4, Err: messages.ErrMalformed}, {Seq: 7, Err: messages.ErrMalformed}}
	sl.Log(log, "j", sk)
	sl.Log(log, "j", sk[1:])
	sl.Log(log, "j", append(sk, configlog.Skipped{Seq: 9, Err: messages.ErrMalformed}))
	if n := strings.Count(buf.String(), `"level":"error"`); n != 3 {
		t.Fatalf("%d lines logged, want 3 (sequences 4, 7, 9 once each):\n%s", n, buf.String())
	}
}
