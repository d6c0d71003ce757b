package configsvc_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"

	"github.com/cairn-stream/cairn/internal/configlog"
	"github.com/cairn-stream/cairn/pkg/cairnjs"
	"github.com/cairn-stream/cairn/pkg/messages"
)

// keep is CAIRN_CONFIG's messages per subject in these tests: keep+1 invalid messages
// push every valid event of a job out of the stream.
const keep = 20

func TestSetWritesTheHead(t *testing.T) {
	h := newHarness(t, "")
	h.start(t)
	h.mustSet(t, "hd", `{"interval":"2s"}`)
	v := h.mustSet(t, "hd", `{"retain":5}`)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	head, err := h.res.Config.GetLastMsgForSubject(ctx, h.subj.ConfigHead("hd"))
	if err != nil {
		t.Fatal(err)
	}
	last, err := h.res.Config.GetLastMsgForSubject(ctx, h.subj.ConfigEvents("hd"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(head.Data, last.Data) || head.Header.Get(messages.HeaderConfigVersion) != "2" || head.Sequence <= last.Sequence {
		t.Fatalf("head %+v, want a copy of version 2's event %+v, written after it", head, last)
	}
	if got := h.heads(t, "hd"); fmt.Sprint(got) != "[1 2]" {
		t.Fatalf("heads %v, want one per version: [1 2]", got)
	}
	if v.Version != 2 {
		t.Fatalf("set answered %+v", v)
	}
}

// Acceptance 5 of issue 13, within one process: more garbage than the stream keeps per
// subject pushes every valid event out; the version in force stays, the next set gets the
// next version, and the history ends with it.
func TestVersionsSurviveGarbagePushingEventsOut(t *testing.T) {
	h := newHarnessWith(t, cairnjs.Options{ConfigHistory: keep})
	h.start(t)
	h.mustSet(t, "push", `{"interval":"2s"}`)
	h.mustSet(t, "push", `{"retain":7}`)
	v3 := h.mustSet(t, "push", `{"interval":"750ms"}`)
	h.pushOut(t, "push")

	if r := h.get(t, "push"); r.code != "" || !reflect.DeepEqual(r.view, v3) {
		t.Fatalf("get after the garbage: %+v, want %+v", r, v3)
	}
	hist := h.history(t, "push")
	if len(hist.Versions) != 1 || !reflect.DeepEqual(hist.Versions[0], v3) || !hist.Truncated {
		t.Fatalf("history after the garbage: %+v, want version 3 alone (from the head), truncated", hist)
	}
	v4 := h.mustSet(t, "push", `{"timeout":"1m"}`)
	if v4.Version != 4 || v4.Interval != "750ms" || v4.Retain != 7 || v4.Timeout != "1m" {
		t.Fatalf("set after the garbage: %+v, want version 4 on top of version 3", v4)
	}
	hist = h.history(t, "push")
	if len(hist.Versions) != 1 || !reflect.DeepEqual(hist.Versions[0], v4) || !hist.Truncated {
		t.Fatalf("history after the set: %+v, want version 4 alone, truncated", hist)
	}
}

// configsvc stops after publishing an event and before writing its head: the version is
// in force (the last event is newer than the head), and the next request writes the head,
// so that garbage afterwards cannot hide the version.
func TestStopBetweenEventAndHead(t *testing.T) {
	h := newHarnessWith(t, cairnjs.Options{ConfigHistory: keep})
	h.start(t)
	for _, job := range []string{"get-first", "set-first"} {
		h.mustSet(t, job, `{"interval":"2s"}`)
		h.mustSet(t, job, `{"retain":4}`)
		h.publishEvent(t, job, 3, 750*time.Millisecond)
	}

	// A get writes the head.
	if r := h.get(t, "get-first"); r.code != "" || r.view.Version != 3 || r.view.Interval != "750ms" {
		t.Fatalf("get after the stop: %+v, want version 3 (750ms)", r)
	}
	if got := h.heads(t, "get-first"); fmt.Sprint(got) != "[1 2 3]" {
		t.Fatalf("heads after the get %v, want [1 2 3]", got)
	}
	h.pushOut(t, "get-first")
	if r := h.get(t, "get-first"); r.code != "" || r.view.Version != 3 || r.view.Interval != "750ms" {
		t.Fatalf("get after the garbage: %+v, want version 3 (750ms)", r)
	}
	if v := h.mustSet(t, "get-first", `{"retain":5}`); v.Version != 4 || v.Interval != "750ms" {
		t.Fatalf("set after the garbage: %+v, want version 4 on top of 3", v)
	}

	// A set builds on the newer last event and writes its own head.
	if v := h.mustSet(t, "set-first", `{"retain":5}`); v.Version != 4 || v.Interval != "750ms" || v.Retain != 5 {
		t.Fatalf("set after the stop: %+v, want version 4 on top of 3", v)
	}
	if got := h.heads(t, "set-first"); fmt.Sprint(got) != "[1 2 4]" {
		t.Fatalf("heads after the set %v, want [1 2 4]", got)
	}
}

// A deployment from before heads: events, no head. The first get reads back past the
// invalid last message once and writes the head; garbage afterwards cannot take the
// version back.
func TestUpgradeWithoutHead(t *testing.T) {
	h := newHarnessWith(t, cairnjs.Options{ConfigHistory: keep})
	h.publishEvent(t, "old", 1, 2*time.Second)
	h.publishEvent(t, "old", 2, 750*time.Millisecond)
	for range 3 {
		if _, err := h.js.Publish(context.Background(), h.subj.ConfigEvents("old"), []byte("garbage")); err != nil {
			t.Fatal(err)
		}
	}
	h.start(t)
	if got := h.heads(t, "old"); len(got) != 0 {
		t.Fatalf("heads %v before any request", got)
	}
	if r := h.get(t, "old"); r.code != "" || r.view.Version != 2 || r.view.Interval != "750ms" {
		t.Fatalf("get: %+v, want version 2 (750ms)", r)
	}
	if got := h.heads(t, "old"); fmt.Sprint(got) != "[2]" {
		t.Fatalf("heads after the get %v, want [2]", got)
	}
	h.pushOut(t, "old")
	if r := h.get(t, "old"); r.code != "" || r.view.Version != 2 || r.view.Interval != "750ms" {
		t.Fatalf("get after the garbage: %+v, want version 2 (750ms)", r)
	}
	if v := h.mustSet(t, "old", `{"retain":5}`); v.Version != 3 || v.Interval != "750ms" {
		t.Fatalf("set after the garbage: %+v, want version 3 on top of 2", v)
	}
}

// publishEvent stores a valid config event of job directly, as configsvc does, without its
// head.
func (h *harness) publishEvent(t *testing.T, job string, version uint64, interval time.Duration) {
	t.Helper()
	c := messages.DefaultConfig()
	c.Interval = interval
	data, err := messages.Marshal(&messages.ConfigEvent{Schema: messages.SchemaVersion, Job: job, Version: version, Config: c, Time: time.Now().UTC()})
	if err != nil {
		t.Fatal(err)
	}
	msg := &nats.Msg{Subject: h.subj.ConfigEvents(job), Data: data, Header: nats.Header{}}
	msg.Header.Set(messages.HeaderConfigVersion, fmt.Sprint(version))
	if _, err := h.js.PublishMsg(context.Background(), msg, jetstream.WithMsgID(fmt.Sprintf("%s.%d.test", job, version))); err != nil {
		t.Fatal(err)
	}
}

// pushOut publishes keep+1 invalid messages on job's events subject and checks that no
// valid event is left there.
func (h *harness) pushOut(t *testing.T, job string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	subject := h.subj.ConfigEvents(job)
	for i := range keep + 1 {
		if _, err := h.js.Publish(ctx, subject, fmt.Appendf(nil, "garbage %d", i)); err != nil {
			t.Fatal(err)
		}
	}
	for seq := uint64(1); ; {
		m, err := h.res.Config.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(subject))
		if err != nil {
			return // past the last message
		}
		if _, err := configlog.Decode(m.Data, job); err == nil {
			t.Fatalf("a valid event is still on %s at sequence %d", subject, m.Sequence)
		}
		seq = m.Sequence + 1
	}
}

// heads returns the versions of job's heads in the stream, oldest first.
func (h *harness) heads(t *testing.T, job string) []uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var out []uint64
	for seq := uint64(1); ; {
		m, err := h.res.Config.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(h.subj.ConfigHead(job)))
		if err != nil {
			return out
		}
		ev, err := configlog.Decode(m.Data, job)
		if err != nil {
			t.Fatalf("head at sequence %d: %v", m.Sequence, err)
		}
		out = append(out, ev.Version)
		seq = m.Sequence + 1
	}
}

// history asks for job's config history.
func (h *harness) history(t *testing.T, job string) messages.ConfigHistory {
	t.Helper()
	m, err := h.nc.Request(h.subj.ConfigHistory(job), nil, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if code := m.Header.Get(micro.ErrorCodeHeader); code != "" {
		t.Fatalf("history of %s: %s %s", job, code, m.Data)
	}
	var hist messages.ConfigHistory
	if err := json.Unmarshal(m.Data, &hist); err != nil {
		t.Fatalf("history reply %q: %v", m.Data, err)
	}
	return hist
}
