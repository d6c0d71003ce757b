package integration

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cairn-stream/cairn/internal/natstest"
	"github.com/cairn-stream/cairn/pkg/cairnjs"
	"github.com/cairn-stream/cairn/pkg/messages"
)

// manifest reads a manifest of CAIRN_MANIFESTS by key; nil when it is gone.
func (s *system) manifest(key string) *messages.Manifest {
	s.t.Helper()
	e, err := s.res.Manifests.Get(context.Background(), key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil
	}
	if err != nil {
		s.t.Fatalf("read manifest %s: %v", key, err)
	}
	var m messages.Manifest
	if err := messages.Unmarshal(e.Value(), &m); err != nil {
		s.t.Fatalf("manifest %s: %v", key, err)
	}
	return &m
}

// retained returns the job's manifests (<job>.<id>), newest first.
func (s *system) retained(job string) []*messages.Manifest {
	s.t.Helper()
	latest := s.manifest(cairnjs.LatestKey(job))
	if latest == nil {
		return nil
	}
	var out []*messages.Manifest
	for id := latest.CheckpointID; id > 0; id-- {
		if m := s.manifest(cairnjs.ManifestKey(job, id)); m != nil {
			out = append(out, m)
		}
	}
	return out
}

// fakeInstance is a registered instance of a job that acks only when told to, with the
// positions and input filters the test chooses.
type fakeInstance struct {
	s        *system
	job      string
	instance string
	barriers chan messages.Barrier
}

// fake registers a fake instance and follows its job's barriers.
func (s *system) fake(job, instance string) *fakeInstance {
	s.t.Helper()
	f := &fakeInstance{s: s, job: job, instance: instance, barriers: make(chan messages.Barrier, 1024)}
	sub, err := s.nc.Subscribe(subjects.Barrier(job), func(m *nats.Msg) {
		var b messages.Barrier
		if err := messages.Unmarshal(m.Data, &b); err == nil {
			f.barriers <- b
		}
	})
	if err != nil {
		s.t.Fatal(err)
	}
	s.t.Cleanup(func() { _ = sub.Unsubscribe() })
	s.register(job, instance)
	return f
}

// nextBarrier waits for the next barrier this instance sees with an id above after.
func (f *fakeInstance) nextBarrier(after uint64) messages.Barrier {
	f.s.t.Helper()
	return nextMatching(f.s.t, f.barriers, 10*time.Second, "barrier for "+f.instance, func(b messages.Barrier) bool { return b.CheckpointID > after })
}

// seen drains the barriers received so far and returns the highest id among them and
// after.
func (f *fakeInstance) seen(after uint64) uint64 {
	for {
		select {
		case b := <-f.barriers:
			after = max(after, b.CheckpointID)
		default:
			return after
		}
	}
}

// ack uploads a snapshot and acks checkpoint id with the instance's input subject at pos;
// with decline set it declines instead.
func (f *fakeInstance) ack(id, pos uint64, decline string) {
	f.s.t.Helper()
	ctx := context.Background()
	name := cairnjs.ObjectName(f.job, id, f.instance, "sim")
	info, err := f.s.snapshots(f.job).PutBytes(ctx, name, fmt.Appendf(nil, "%s at %d", f.instance, pos))
	if err != nil {
		f.s.t.Fatal(err)
	}
	a := &messages.Ack{
		Schema: messages.SchemaVersion, Job: f.job, CheckpointID: id, Instance: f.instance, Incarnation: "fake", Kind: messages.AckDone,
		Snapshot:  messages.SnapshotRef{Store: cairnjs.SnapshotStore(f.job), Object: name, Size: info.Size, Digest: info.Digest},
		Positions: map[string]uint64{cairnjs.InputStream: pos},
		Filters:   map[string][]string{cairnjs.InputStream: {subjects.Input(f.job, f.instance)}},
	}
	if decline != "" {
		a.Kind, a.Reason = messages.AckDeclined, decline
	}
	data, err := messages.Marshal(a)
	if err != nil {
		f.s.t.Fatal(err)
	}
	if err := f.s.nc.Publish(subjects.InstanceAck(f.job, f.instance), data); err != nil {
		f.s.t.Fatal(err)
	}
}

// completed waits for the completed event of checkpoint id.
func completed(t *testing.T, evs <-chan *messages.CheckpointEvent, id uint64) *messages.CheckpointEvent {
	t.Helper()
	e := nextMatching(t, evs, 10*time.Second, fmt.Sprintf("end of checkpoint %d", id), func(e *messages.CheckpointEvent) bool { return e.CheckpointID == id })
	if e.Outcome != messages.Completed {
		t.Fatalf("checkpoint %d %s: %s %s", id, e.Outcome, e.Reason, e.Detail)
	}
	return e
}

func TestAbsentMemberOutlivesRetainAndRestoresExactly(t *testing.T) {
	s := startSystem(t, "away", "a-0", "a-1")
	s.waitRegistered("away", 2)
	evs := s.events("away")
	want := s.publish("away", "a-1", 0, 80)
	s.publish("away", "a-0", 0, 10)
	s.waitApplied("away", "a-1", 80)
	applied := time.Now()
	v := s.set("away", `{"interval":"100ms","retain":2}`)
	covering := nextMatching(t, evs, 10*time.Second, "checkpoint covering a-1's input", func(e *messages.CheckpointEvent) bool {
		return e.Outcome == messages.Completed && e.ConfigVersion == v.Version && e.TriggeredAt.After(applied)
	})
	s.stop("a-1")
	// Far more than retain checkpoints complete without it.
	var last *messages.CheckpointEvent
	for n := 0; n < 8; {
		e := next(t, evs, 10*time.Second, "checkpoint event")
		if e.Outcome == messages.Completed && e.CheckpointID > covering.CheckpointID && len(e.Participants) == 1 {
			n++
			last = e
		}
	}
	natstest.Eventually(t, 10*time.Second, "retention down to 2 manifests", func() bool { return len(s.retained("away")) <= 2 })
	ms := s.retained("away")
	if len(ms) == 0 || ms[0].CheckpointID < last.CheckpointID {
		t.Fatalf("retained %d manifests, newest %v", len(ms), ms)
	}
	// a-1's last state: that of the covering checkpoint, or of one it acked while stopping.
	state := ms[0].Instances["a-1"]
	from := state.From(ms[0].CheckpointID)
	if from < covering.CheckpointID || from >= last.CheckpointID {
		t.Fatalf("newest manifest %d holds a-1's state of checkpoint %d, want one between %d and %d", ms[0].CheckpointID, from, covering.CheckpointID, last.CheckpointID)
	}
	for _, m := range ms {
		got, ok := m.Instances["a-1"]
		if !ok || got.Snapshot != state.Snapshot || got.From(m.CheckpointID) != from || got.AbsentSince.IsZero() {
			t.Fatalf("retained manifest %d holds a-1 as %+v (ok %v), want the state of checkpoint %d carried forward", m.CheckpointID, got, ok, from)
		}
	}
	if _, err := s.snapshots("away").GetInfo(context.Background(), state.Snapshot.Object); err != nil {
		t.Fatalf("absent member's snapshot %s deleted: %v", state.Snapshot.Object, err)
	}
	var member messages.Member
	for _, m := range s.status("away").Members {
		if m.Instance == "a-1" {
			member = m
		}
	}
	if member.Active || member.AbsentSince == nil || member.Checkpoint != from || member.Positions[cairnjs.InputStream] != state.Positions[cairnjs.InputStream] {
		t.Fatalf("status member a-1 %+v, want absent with the state of checkpoint %d", member, from)
	}
	// Its consumed input is gone: only a restore, not a replay from the start, ends exact.
	if err := s.res.Input.Purge(context.Background(), jetstream.WithPurgeSubject(subjects.Input("away", "a-1")),
		jetstream.WithPurgeSequence(state.Positions[cairnjs.InputStream]+1)); err != nil {
		t.Fatal(err)
	}
	want = add(want, s.publish("away", "a-1", 80, 20))
	s.startOperator("away", "a-1")
	s.wantExact("away", "a-1", want)
}

func TestAckCountsWhenTheInstanceLeavesAfterAcking(t *testing.T) {
	s := startSystem(t, "leave")
	x, y := s.fake("leave", "x"), s.fake("leave", "y")
	s.waitRegistered("leave", 2)
	evs := s.events("leave")
	s.set("leave", `{"interval":"200ms","timeout":"1m"}`)
	b := x.nextBarrier(0)
	x.ack(b.CheckpointID, 5, "")
	// x acked, then stopped and deregistered: its ack keeps counting.
	natstest.Eventually(t, 10*time.Second, "x's ack received", func() bool {
		st := s.status("leave")
		return len(st.Pending) > 0 && len(st.Pending[0].Acked) == 1
	})
	s.deregister("leave", "x")
	s.waitRegistered("leave", 1)
	y.ack(b.CheckpointID, 7, "")
	e := completed(t, evs, b.CheckpointID)
	if len(e.Participants) != 2 {
		t.Fatalf("participants %v", e.Participants)
	}
	if got := s.manifest(cairnjs.ManifestKey("leave", b.CheckpointID)).Instances["x"]; got.Positions[cairnjs.InputStream] != 5 || got.From(b.CheckpointID) != b.CheckpointID {
		t.Fatalf("manifest holds x as %+v, want its ack", got)
	}
}

// removeReply sends a member removal request and returns the reply's error code and
// message ("" on success).
func (s *system) removeReply(job, body string) (code, msg string) {
	s.t.Helper()
	m := s.request(subjects.MembersRemove(job), body)
	return m.Header.Get("Nats-Service-Error-Code"), m.Header.Get("Nats-Service-Error")
}

func TestMemberRemoval(t *testing.T) {
	s := startSystem(t, "rm")
	s.startCoordinator("standby")
	a, b := s.fake("rm", "a"), s.fake("rm", "b")
	s.waitRegistered("rm", 2)
	evs := s.events("rm")
	s.set("rm", `{"interval":"10m","timeout":"1m"}`)
	s.set("rm", `{"interval":"100ms"}`)
	first := a.nextBarrier(0)
	a.ack(first.CheckpointID, 3, "")
	b.ack(first.CheckpointID, 4, "")
	completed(t, evs, first.CheckpointID)
	s.set("rm", `{"interval":"10m"}`)
	s.deregister("rm", "b")
	s.waitRegistered("rm", 1)
	// A checkpoint triggered before the interval grew is not the removal's.
	last := a.seen(first.CheckpointID)

	tests := []struct {
		name, job, body, code, msg string
	}{
		{"not an object", "rm", `["b"]`, "400", "the body must be a JSON object"},
		{"unknown field", "rm", `{"instance":"b","force":true}`, "400", `unknown field "force"; allowed: instance`},
		{"missing instance", "rm", `{}`, "400", "instance is required"},
		{"instance not a string", "rm", `{"instance":7}`, "400", "instance must be a string"},
		{"invalid instance", "rm", `{"instance":"b.c"}`, "400", "instance"},
		{"unknown job", "nojob", `{"instance":"b"}`, "404", `unknown job "nojob"`},
		{"not a member", "rm", `{"instance":"zz"}`, "404", "instance zz is not a member of job rm; members: a, b"},
		{"registered", "rm", `{"instance":"a"}`, "409", "stop it first"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Several times: the queue group hands some to the standby, which forwards them.
			for range 4 {
				code, body := s.removeReply(tt.job, tt.body)
				if code != tt.code || !strings.Contains(body, tt.msg) {
					t.Fatalf("%s: %s %s, want %s %q", tt.body, code, body, tt.code, tt.msg)
				}
			}
		})
	}

	// The removal's checkpoint aborts: 503, and b stays a member.
	type reply struct {
		code string
		body []byte
	}
	async := func() <-chan reply {
		ch := make(chan reply, 1)
		go func() {
			m, err := s.nc.Request(subjects.MembersRemove("rm"), []byte(`{"instance":"b"}`), 20*time.Second)
			if err != nil {
				ch <- reply{"transport", []byte(err.Error())}
				return
			}
			ch <- reply{m.Header.Get("Nats-Service-Error-Code"), m.Data}
		}()
		return ch
	}
	res := async()
	br := a.nextBarrier(last)
	a.ack(br.CheckpointID, 5, "disk full")
	r := next(t, res, 20*time.Second, "removal reply")
	if r.code != "503" || !strings.Contains(string(r.body), "aborted") || !strings.Contains(string(r.body), "the member stays") {
		t.Fatalf("removal whose checkpoint aborted: %s %s", r.code, r.body)
	}
	if _, ok := s.manifest(cairnjs.LatestKey("rm")).Instances["b"]; !ok {
		t.Fatal("b dropped by an aborted removal")
	}

	res = async()
	br = a.nextBarrier(br.CheckpointID)
	a.ack(br.CheckpointID, 6, "")
	r = next(t, res, 20*time.Second, "removal reply")
	var out messages.MemberRemoval
	if err := json.Unmarshal(r.body, &out); r.code != "" || err != nil {
		t.Fatalf("removal: %s %s (%v)", r.code, r.body, err)
	}
	if out.Checkpoint != br.CheckpointID || out.Instance != "b" || out.Dropped.Checkpoint != first.CheckpointID || out.Dropped.Positions[cairnjs.InputStream] != 4 {
		t.Fatalf("removal reply %+v, want checkpoint %d dropping b's state of %d", out, br.CheckpointID, first.CheckpointID)
	}
	m := s.manifest(cairnjs.ManifestKey("rm", br.CheckpointID))
	if _, ok := m.Instances["b"]; ok || m.Instances["a"].Positions[cairnjs.InputStream] != 6 {
		t.Fatalf("manifest after the removal %+v", m.Instances)
	}
	raw, err := s.res.Checkpoints.GetLastMsgForSubject(context.Background(), subjects.MemberEvents("rm"))
	if err != nil {
		t.Fatal(err)
	}
	var ev messages.MemberEvent
	if err := messages.Unmarshal(raw.Data, &ev); err != nil || ev.Kind != messages.MemberRemoved || ev.Instance != "b" || ev.Checkpoint != br.CheckpointID || ev.By != s.status("rm").Holder {
		t.Fatalf("member event %+v (%v)", ev, err)
	}
	if code, body := s.removeReply("rm", `{"instance":"b"}`); code != "404" || !strings.HasSuffix(body, "members: a") {
		t.Fatalf("second removal: %s %s", code, body)
	}
}

// inputLeft returns the first sequence left in the stream on subject (0: none).
func (s *system) inputLeft(subject string) uint64 {
	s.t.Helper()
	m, err := s.res.Input.GetMsg(context.Background(), 0, jetstream.WithGetMsgSubject(subject))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return 0
	}
	if err != nil {
		s.t.Fatalf("first message of %s: %v", subject, err)
	}
	return m.Sequence
}

func TestInputIsTrimmedBelowTheOldestRetainedManifest(t *testing.T) {
	s := startSystem(t, "trim")
	a, b := s.fake("trim", "a"), s.fake("trim", "b")
	s.waitRegistered("trim", 2)
	evs := s.events("trim")
	// Input interleaved: a's and b's messages alternate in the stream.
	seqs := map[string][]uint64{}
	publish := func(n int) {
		for range n {
			for _, inst := range []string{"a", "b"} {
				ack, err := s.js.Publish(context.Background(), subjects.Input("trim", inst), []byte(`{"key":"k","value":1}`))
				if err != nil {
					t.Fatal(err)
				}
				seqs[inst] = append(seqs[inst], ack.Sequence)
			}
		}
	}
	publish(5)
	s.set("trim", `{"interval":"100ms","timeout":"1m","retain":2}`)
	var id uint64
	for round := 1; round <= 6; round++ {
		// a consumed 5 messages per round; b stopped after round 2 and left after 3. A
		// checkpoint triggered while b was leaving aborts: ack the next one.
		for done := false; !done; {
			id = a.nextBarrier(id).CheckpointID
			a.ack(id, seqs["a"][5*round-1], "")
			if round <= 3 {
				b.ack(id, seqs["b"][min(5*round, 10)-1], "")
			}
			e := nextMatching(t, evs, 10*time.Second, fmt.Sprintf("end of checkpoint %d", id), func(e *messages.CheckpointEvent) bool { return e.CheckpointID == id })
			if done = e.Outcome == messages.Completed; !done && (round <= 3 || e.Reason != messages.AbortInstanceLost) {
				t.Fatalf("checkpoint %d aborted: %s %s", id, e.Reason, e.Detail)
			}
		}
		if round == 3 {
			s.deregister("trim", "b")
			s.waitRegistered("trim", 1)
		}
		publish(5)
		// Every member: nothing below its oldest retained position, that position kept.
		natstest.Eventually(t, 10*time.Second, "trimmed after checkpoint "+fmt.Sprint(id), func() bool {
			ms := s.retained("trim")
			if len(ms) > 2 || ms[0].CheckpointID != id {
				return false
			}
			for _, inst := range []string{"a", "b"} {
				var oldest uint64
				for _, m := range ms {
					if st, ok := m.Instances[inst]; ok {
						oldest = st.Positions[cairnjs.InputStream]
					}
				}
				left := s.inputLeft(subjects.Input("trim", inst))
				if left > oldest {
					t.Fatalf("after checkpoint %d: %s's input left from %d, but a retained manifest needs %d", id, inst, left, oldest)
				}
				if len(ms) == 2 && left != oldest {
					return false
				}
			}
			return true
		})
	}
	if left := s.inputLeft(subjects.Input("trim", "b")); left != seqs["b"][9] {
		t.Fatalf("absent b's input left from %d, want its carried position %d", left, seqs["b"][9])
	}
}

func TestMemberRemovalWhenTheHolderDoesNotAnswer(t *testing.T) {
	s := startSystem(t, "ghost")
	// Another coordinator, "ghost", holds the job's lease and keeps renewing it, but does
	// not answer anything: the coordinator here forwards the removal and gets no answer.
	data, err := messages.Marshal(&messages.Lease{Schema: messages.SchemaVersion, Job: "ghost", Holder: "ghost", AcquiredAt: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	renew := func() {
		if _, err := s.res.Leases.Put(ctx, cairnjs.LeaseKey("ghost"), data); err != nil && ctx.Err() == nil {
			t.Errorf("renew the ghost's lease: %v", err)
		}
	}
	renew()
	go func() {
		tick := time.NewTicker(leaseTTL / 4)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				renew()
			}
		}
	}()
	s.set("ghost", `{"interval":"1s"}`)
	natstest.Eventually(t, 10*time.Second, "the coordinator sees the ghost's lease", func() bool { return s.status("ghost").Holder == "ghost" })
	code, msg := s.removeReply("ghost", `{"instance":"x"}`)
	if code != "503" || !strings.Contains(msg, "lease holder ghost of job ghost did not answer") {
		t.Fatalf("removal with a silent holder: %s %q", code, msg)
	}
}
