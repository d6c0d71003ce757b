package configsvc_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/cairn-stream/cairn/internal/natstest"
	"github.com/cairn-stream/cairn/pkg/cairnjs"
	"github.com/cairn-stream/cairn/pkg/messages"
	"github.com/cairn-stream/cairn/services/configsvc"
)

func TestSetRefusesMalformedAndChangesNothing(t *testing.T) {
	h := newHarness(t, "")
	h.start(t)
	const job = "tbl"
	h.mustSet(t, job, `{"interval":"3s","retain":4}`)
	baseline := h.get(t, job)
	if baseline.code != "" || baseline.view.Version != 1 {
		t.Fatalf("baseline = %+v", baseline)
	}
	baseEvents, _ := h.events(t)

	msgpackHdr := nats.Header{"Content-Type": []string{messages.ContentTypeMsgpack}}
	mpArray, err := msgpack.Marshal([]any{"interval", "5s"})
	if err != nil {
		t.Fatal(err)
	}
	durationForm := `give a duration string such as "750ms", "10s" or "5m"`
	for _, tc := range []struct {
		name string
		job  string // default job
		body string
		hdr  nats.Header
		code string
		msg  string
	}{
		{name: "bad JSON", body: `{"interval":`, code: "400", msg: "body is not valid JSON: unexpected end of JSON input"},
		{name: "bad JSON inside", body: `{"interval" "5s"}`, code: "400", msg: "body is not valid JSON: invalid character '\"' after object key"},
		{name: "array", body: `[{"interval":"5s"}]`, code: "400", msg: "body is not a JSON object; send one such as {\"interval\":\"5s\"}"},
		{name: "string", body: `"5s"`, code: "400", msg: "body is not a JSON object"},
		{name: "number", body: `5`, code: "400", msg: "body is not a JSON object"},
		{name: "empty body", body: ``, code: "400", msg: "empty body; send a JSON object such as {\"interval\":\"5s\"}"},
		{name: "whitespace body", body: " \n\t ", code: "400", msg: "empty body"},
		{name: "empty object", body: `{}`, code: "400", msg: "nothing to change; give at least one of interval, timeout, min_pause, max_concurrent, tolerable_failures, retain"},
		{name: "only expected_version", body: `{"expected_version":1}`, code: "400", msg: "nothing to change"},
		{name: "unknown field", body: `{"interval":"5s","jitter":"1s"}`, code: "400", msg: `unknown field "jitter"; allowed fields: interval, timeout, min_pause, max_concurrent, tolerable_failures, retain, expected_version`},
		{name: "repeated field", body: `{"retain":5,"retain":6}`, code: "400", msg: `field "retain" appears twice; give each field once`},
		{name: "null interval", body: `{"interval":null}`, code: "400", msg: "interval: null is not allowed; " + durationForm},
		{name: "null timeout", body: `{"timeout":null}`, code: "400", msg: "timeout: null is not allowed; " + durationForm},
		{name: "null min_pause", body: `{"min_pause":null}`, code: "400", msg: "min_pause: null is not allowed; " + durationForm},
		{name: "null max_concurrent", body: `{"max_concurrent":null}`, code: "400", msg: "max_concurrent: null is not allowed; give a whole number from 1 to 16"},
		{name: "null tolerable_failures", body: `{"tolerable_failures":null}`, code: "400", msg: "tolerable_failures: null is not allowed; give a whole number from -1 to 1000"},
		{name: "null retain", body: `{"retain":null}`, code: "400", msg: "retain: null is not allowed; give a whole number from 1 to 100"},
		{name: "null expected_version", body: `{"retain":5,"expected_version":null}`, code: "400", msg: "expected_version: null is not allowed; give a whole number from 0 up"},
		{name: "number interval", body: `{"interval":5}`, code: "400", msg: "interval: a number is not a duration (the unit would be a guess); " + durationForm},
		{name: "number timeout", body: `{"timeout":600}`, code: "400", msg: "timeout: a number is not a duration"},
		{name: "number min_pause", body: `{"min_pause":0}`, code: "400", msg: "min_pause: a number is not a duration"},
		{name: "string max_concurrent", body: `{"max_concurrent":"2"}`, code: "400", msg: "max_concurrent: a string is not allowed; give a whole number from 1 to 16"},
		{name: "bool retain", body: `{"retain":true}`, code: "400", msg: "retain: true is not allowed; give a whole number from 1 to 100"},
		{name: "bool interval", body: `{"interval":false}`, code: "400", msg: "interval: false is not allowed; " + durationForm},
		{name: "object tolerable_failures", body: `{"tolerable_failures":{"n":1}}`, code: "400", msg: "tolerable_failures: an object is not allowed"},
		{name: "array interval", body: `{"interval":["5s"]}`, code: "400", msg: "interval: an array is not allowed; " + durationForm},
		{name: "negative interval", body: `{"interval":"-5s"}`, code: "400", msg: "interval: -5s is out of range; give a duration from 100ms to 24h"},
		{name: "zero interval", body: `{"interval":"0s"}`, code: "400", msg: "interval: 0s is out of range; give a duration from 100ms to 24h"},
		{name: "interval too small", body: `{"interval":"99ms"}`, code: "400", msg: "interval: 99ms is out of range"},
		{name: "interval too large", body: `{"interval":"25h"}`, code: "400", msg: "interval: 25h is out of range; give a duration from 100ms to 24h"},
		{name: "timeout too small", body: `{"timeout":"999ms"}`, code: "400", msg: "timeout: 999ms is out of range; give a duration from 1s to 24h"},
		{name: "timeout too large", body: `{"timeout":"24h1s"}`, code: "400", msg: "timeout: 24h0m1s is out of range; give a duration from 1s to 24h"},
		{name: "min_pause negative", body: `{"min_pause":"-1s"}`, code: "400", msg: "min_pause: -1s is out of range; give a duration from 0s to 24h"},
		{name: "min_pause too large", body: `{"min_pause":"48h"}`, code: "400", msg: "min_pause: 48h is out of range"},
		{name: "max_concurrent 0", body: `{"max_concurrent":0}`, code: "400", msg: "max_concurrent: 0 is out of range; give a whole number from 1 to 16"},
		{name: "max_concurrent 17", body: `{"max_concurrent":17}`, code: "400", msg: "max_concurrent: 17 is out of range; give a whole number from 1 to 16"},
		{name: "max_concurrent 1.5", body: `{"max_concurrent":1.5}`, code: "400", msg: "max_concurrent: 1.5 is not a whole number; give a whole number from 1 to 16"},
		{name: "tolerable_failures -2", body: `{"tolerable_failures":-2}`, code: "400", msg: "tolerable_failures: -2 is out of range; give a whole number from -1 to 1000"},
		{name: "tolerable_failures 1001", body: `{"tolerable_failures":1001}`, code: "400", msg: "tolerable_failures: 1001 is out of range"},
		{name: "retain 0", body: `{"retain":0}`, code: "400", msg: "retain: 0 is out of range; give a whole number from 1 to 100"},
		{name: "retain 101", body: `{"retain":101}`, code: "400", msg: "retain: 101 is out of range; give a whole number from 1 to 100"},
		{name: "bad duration string", body: `{"interval":"5 parsecs"}`, code: "400", msg: `interval: "5 parsecs" is not a duration; ` + durationForm},
		{name: "bad value after good ones", body: `{"interval":"5s","retain":0}`, code: "400", msg: "retain: 0 is out of range"},
		{name: "job with dots", job: "a.b", body: `{"interval":"5s"}`, code: "400", msg: `job name "a.b" has '.' at byte 1; allowed: 1-64 characters from [A-Za-z0-9_-]`},
		{name: "job too long", job: strings.Repeat("j", 65), body: `{"interval":"5s"}`, code: "400", msg: "job name is 65 characters long; allowed: 1-64 characters from [A-Za-z0-9_-]"},
		{name: "job with bad char", job: "a$b", body: `{"interval":"5s"}`, code: "400", msg: `job name "a$b" has '$' at byte 1`},
		{name: "msgpack array", body: string(mpArray), hdr: msgpackHdr, code: "400", msg: "body is an array, not a msgpack map"},
		{name: "JSON sent as msgpack", body: `{"interval":"5s"}`, hdr: msgpackHdr, code: "400", msg: "body is integer 123, not a msgpack map"},
		{name: "wrong expected_version", body: `{"interval":"4s","expected_version":7}`, code: "409", msg: `version conflict: expected_version 7 does not match the current version 1 of job "tbl"; get the config and retry with expected_version 1`},
		{name: "stale expected_version 0", body: `{"interval":"4s","expected_version":0}`, code: "409", msg: "expected_version 0 does not match the current version 1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			job := tc.job
			if job == "" {
				job = "tbl"
			}
			r := h.request(t, h.subj.ConfigSet(job), []byte(tc.body), tc.hdr)
			if r.code != tc.code {
				t.Fatalf("code = %q (%s), want %q", r.code, r.err, tc.code)
			}
			if !strings.Contains(r.err, tc.msg) {
				t.Fatalf("error\n%q\ndoes not contain\n%q", r.err, tc.msg)
			}
			if after := h.get(t, "tbl"); !reflect.DeepEqual(after, baseline) {
				t.Fatalf("config in force changed: %+v, was %+v", after, baseline)
			}
			if evs, _ := h.events(t); len(evs) != len(baseEvents) {
				t.Fatalf("stream holds %d events, had %d", len(evs), len(baseEvents))
			}
		})
	}
}

func TestGetRefusesBadJob(t *testing.T) {
	h := newHarness(t, "")
	h.start(t)
	for job, msg := range map[string]string{
		"a.b":                   `job name "a.b" has '.' at byte 1`,
		strings.Repeat("x", 65): "job name is 65 characters long",
		"a$b":                   `has '$' at byte 1`,
	} {
		r := h.get(t, job)
		if r.code != "400" || !strings.Contains(r.err, msg) {
			t.Errorf("get %q = %s %q, want 400 containing %q", job, r.code, r.err, msg)
		}
	}
}

func TestGetDefaultsAtVersionZero(t *testing.T) {
	h := newHarness(t, "")
	h.start(t)
	r := h.get(t, "fresh")
	if r.code != "" {
		t.Fatalf("get: %s %s", r.code, r.err)
	}
	want := messages.NewConfigView("fresh", 0, messages.DefaultConfig(), time.Time{})
	if !reflect.DeepEqual(r.view, want) {
		t.Fatalf("get = %+v, want %+v", r.view, want)
	}
	if r.view.UpdatedAt != nil {
		t.Fatalf("defaults have updated_at %v", r.view.UpdatedAt)
	}
}

func TestSetMergesAndVersions(t *testing.T) {
	h := newHarness(t, "")
	h.start(t)
	before := time.Now()

	first := h.mustSet(t, "merge", `{"interval":"2s"}`)
	want := messages.DefaultConfig()
	want.Interval = 2 * time.Second
	if first.Version != 1 || !sameConfig(first, want) {
		t.Fatalf("first set = %+v, want version 1 with %+v", first, want)
	}
	if first.UpdatedAt == nil || first.UpdatedAt.Before(before.Add(-time.Second)) || first.UpdatedAt.Location() != time.UTC {
		t.Fatalf("first set updated_at = %v", first.UpdatedAt)
	}

	second := h.mustSet(t, "merge", `{"retain":7,"tolerable_failures":0}`)
	want.Retain, want.TolerableFailures = 7, 0
	if second.Version != 2 || !sameConfig(second, want) {
		t.Fatalf("second set = %+v, want version 2 with %+v", second, want)
	}
	if got := h.get(t, "merge"); got.code != "" || !reflect.DeepEqual(got.view, second) {
		t.Fatalf("get = %+v, want the second set's reply %+v", got, second)
	}

	third := h.mustSet(t, "merge", `{"max_concurrent":2,"expected_version":2}`)
	want.MaxConcurrent = 2
	if third.Version != 3 || !sameConfig(third, want) {
		t.Fatalf("set with matching expected_version = %+v", third)
	}

	if v := h.mustSet(t, "other", `{"timeout":"30s","expected_version":0}`); v.Version != 1 || v.Timeout != "30s" || v.Interval != "10s" {
		t.Fatalf("first version with expected_version 0 = %+v", v)
	}
	if v := h.get(t, "merge").view; v.Version != 3 {
		t.Fatalf("another job's change moved this one to %+v", v)
	}
}

func sameConfig(v messages.ConfigView, c messages.CheckpointConfig) bool {
	want := messages.NewConfigView(v.Job, v.Version, c, time.Time{})
	want.UpdatedAt = v.UpdatedAt
	return reflect.DeepEqual(v, want)
}

func TestSetAcceptsMsgpack(t *testing.T) {
	h := newHarness(t, "")
	h.start(t)
	body, err := msgpack.Marshal(map[string]any{"interval": "750ms", "max_concurrent": 3})
	if err != nil {
		t.Fatal(err)
	}
	for i, ct := range []string{messages.ContentTypeMsgpack, "Application/MsgPack; charset=binary"} {
		r := h.request(t, h.subj.ConfigSet("mp"), body, nats.Header{"Content-Type": []string{ct}})
		if r.code != "" {
			t.Fatalf("Content-Type %q: %s %s", ct, r.code, r.err)
		}
		if r.view.Version != uint64(i+1) || r.view.Interval != "750ms" || r.view.MaxConcurrent != 3 {
			t.Fatalf("Content-Type %q: reply %+v", ct, r.view)
		}
	}
	r := h.request(t, h.subj.ConfigSet("mp"), body, nats.Header{"content-type": []string{messages.ContentTypeMsgpack}})
	if r.code != "" {
		t.Fatalf("lower-case header name: %s %s", r.code, r.err)
	}
}

func TestEventInStreamCarriesVersionAndDecodes(t *testing.T) {
	h := newHarness(t, "")
	h.start(t)
	h.mustSet(t, "ev", `{"interval":"5s"}`)
	view := h.mustSet(t, "ev", `{"min_pause":"1s"}`)

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	m, err := h.res.Config.GetLastMsgForSubject(ctx, h.subj.ConfigEvents("ev"))
	if err != nil {
		t.Fatal(err)
	}
	if got := m.Header.Get(messages.HeaderConfigVersion); got != "2" {
		t.Fatalf("%s = %q, want 2", messages.HeaderConfigVersion, got)
	}
	if id := m.Header.Get(jetstream.MsgIDHeader); !strings.HasPrefix(id, "ev.2.") || len(id) <= len("ev.2.") {
		t.Fatalf("%s = %q, want ev.2.<unique>", jetstream.MsgIDHeader, id)
	}
	var ev messages.ConfigEvent
	if err := messages.Unmarshal(m.Data, &ev); err != nil {
		t.Fatal(err)
	}
	want := messages.DefaultConfig()
	want.Interval, want.MinPause = 5*time.Second, time.Second
	if ev.Schema != messages.SchemaVersion || ev.Job != "ev" || ev.Version != 2 || ev.Config != want || !ev.Time.Equal(*view.UpdatedAt) {
		t.Fatalf("event = %+v, reply %+v", ev, view)
	}
	_, raws := h.events(t)
	if raws[0].Header.Get(jetstream.MsgIDHeader) == raws[1].Header.Get(jetstream.MsgIDHeader) {
		t.Fatal("two versions share a message id")
	}
}

// Two replicas and many concurrent setters: every request is applied exactly once and
// versions are 1..N without gaps or repeats.
func TestConcurrentSettersOnTwoReplicas(t *testing.T) {
	h := newHarness(t, "")
	h.startReplica(t, zerolog.Nop())
	h.startReplica(t, zerolog.Nop())
	h.waitReplicas(t, 2)

	const n = 20
	replies := make([]reply, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			// Each request sets a distinct retain, so the history shows which was applied.
			// A 503 (other changes were stored first too many times in a row; nothing was
			// stored) is sent again, as a client would, for up to 30 s.
			body := fmt.Appendf(nil, `{"retain":%d}`, i+1)
			deadline := time.Now().Add(30 * time.Second)
			for {
				replies[i], errs[i] = h.send(h.subj.ConfigSet("race"), body, nil)
				if errs[i] != nil || replies[i].code != "503" || time.Now().After(deadline) {
					return
				}
			}
		})
	}
	wg.Wait()

	var versions []uint64
	for i, r := range replies {
		if errs[i] != nil {
			t.Fatalf("request %d: %v", i, errs[i])
		}
		if r.code != "" {
			t.Fatalf("request %d: %s %s", i, r.code, r.err)
		}
		if r.view.Retain != i+1 {
			t.Fatalf("request %d answered retain %d", i, r.view.Retain)
		}
		versions = append(versions, r.view.Version)
	}
	slices.Sort(versions)
	for i, v := range versions {
		if v != uint64(i+1) {
			t.Fatalf("reply versions %v, want 1..%d once each", versions, n)
		}
	}

	evs, raws := h.events(t)
	if len(evs) != n {
		t.Fatalf("stream holds %d events, want %d", len(evs), n)
	}
	var retains []int
	for i, ev := range evs {
		if ev.Version != uint64(i+1) {
			t.Fatalf("event %d has version %d; history must run 1..%d in order", i, ev.Version, n)
		}
		if hv := raws[i].Header.Get(messages.HeaderConfigVersion); hv != strconv.Itoa(i+1) {
			t.Fatalf("event %d header version %q", i, hv)
		}
		if r := replies[ev.Config.Retain-1]; r.view.Version != ev.Version {
			t.Fatalf("event version %d holds retain %d, but that request was answered version %d", ev.Version, ev.Config.Retain, r.view.Version)
		}
		retains = append(retains, ev.Config.Retain)
	}
	slices.Sort(retains)
	for i, r := range retains {
		if r != i+1 {
			t.Fatalf("applied retains %v, want each request's once", retains)
		}
	}

	// Compare-and-set across replicas: of many setters expecting the same version,
	// exactly one wins and the others get 409.
	cas := make([]reply, 10)
	casErrs := make([]error, len(cas))
	for i := range cas {
		wg.Go(func() {
			cas[i], casErrs[i] = h.send(h.subj.ConfigSet("race"), fmt.Appendf(nil, `{"interval":"%ds","expected_version":%d}`, i+1, n), nil)
		})
	}
	wg.Wait()
	wins := 0
	for i, r := range cas {
		if casErrs[i] != nil {
			t.Fatalf("compare-and-set %d: %v", i, casErrs[i])
		}
		switch r.code {
		case "":
			wins++
			if r.view.Version != n+1 {
				t.Fatalf("winner %d got version %d", i, r.view.Version)
			}
		case "409":
		default:
			t.Fatalf("compare-and-set %d: %s %s", i, r.code, r.err)
		}
	}
	if wins != 1 {
		t.Fatalf("%d compare-and-set winners, want 1", wins)
	}
	// The head only moves forward, whichever replica wrote it, and holds the last version.
	heads := h.heads(t, "race")
	for i := 1; i < len(heads); i++ {
		if heads[i] <= heads[i-1] {
			t.Fatalf("heads %v: not increasing", heads)
		}
	}
	if len(heads) == 0 || heads[len(heads)-1] != n+1 {
		t.Fatalf("heads %v, want the last at version %d", heads, n+1)
	}
}

func TestCustomPrefix(t *testing.T) {
	h := newHarness(t, "acme.cairn")
	h.start(t)
	v := h.mustSet(t, "j", `{"retain":9}`)
	if v.Version != 1 || v.Retain != 9 {
		t.Fatalf("set = %+v", v)
	}
	if _, err := h.nc.Request(cairnjs.Subjects{}.ConfigGet("j"), nil, 200*time.Millisecond); !errors.Is(err, nats.ErrNoResponders) {
		t.Fatalf("default-prefix request answered: %v", err)
	}
}

func TestLogsChangesAndRefusals(t *testing.T) {
	h := newHarness(t, "")
	var logs natstest.LogBuffer
	h.startReplica(t, zerolog.New(&logs).Level(zerolog.DebugLevel))
	h.waitReplicas(t, 1)
	h.mustSet(t, "logged", `{"interval":"2s"}`)
	if r := h.set(t, "logged", `{"interval":2}`); r.code != "400" {
		t.Fatalf("bad set answered %+v", r)
	}
	var changed, refused bool
	for _, l := range logLines(t, &logs) {
		switch l["message"] {
		case "config changed":
			changed = l["level"] == "info" && l["job"] == "logged" && l["version"] == float64(1) && l["interval"] == "2s"
		case "request refused":
			refused = l["level"] == "debug" && l["job"] == "logged" && l["code"] == "400" && strings.Contains(fmt.Sprint(l["error"]), "interval: a number")
		}
	}
	if !changed || !refused {
		t.Fatalf("logs lack the change at info or the refusal at debug:\n%v", logLines(t, &logs))
	}
}

func TestStorageFailuresAnswer503(t *testing.T) {
	h := newHarness(t, "")
	h.start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := h.js.DeleteStream(ctx, cairnjs.ConfigStream); err != nil {
		t.Fatal(err)
	}
	for _, r := range []reply{h.get(t, "gone"), h.set(t, "gone", `{"retain":2}`)} {
		if r.code != "503" || !strings.Contains(r.err, "config storage unavailable: read the last message of cairn.config.events.gone") {
			t.Fatalf("missing stream answered %s %q", r.code, r.err)
		}
	}
}

func TestInvalidEventsAreSkippedAndLoggedOnce(t *testing.T) {
	h := newHarness(t, "")
	var logs natstest.LogBuffer
	h.startReplica(t, zerolog.New(&logs))
	h.waitReplicas(t, 1)
	h.mustSet(t, "bad", `{"interval":"2s"}`)
	h.mustSet(t, "bad", `{"retain":4}`)

	// After version 2: garbage, another job's event and an out-of-range one, as a
	// rogue or broken publisher might store them on the job's subject.
	foreign, err := messages.Marshal(&messages.ConfigEvent{Schema: 1, Job: "other", Version: 9, Config: messages.DefaultConfig()})
	if err != nil {
		t.Fatal(err)
	}
	outOfRange, err := msgpack.Marshal(map[string]any{"schema": 1, "job": "bad", "version": 9, "time": time.Now(), "config": map[string]any{
		"interval": int64(time.Millisecond), "timeout": int64(time.Minute), "min_pause": 0, "max_concurrent": 1, "tolerable_failures": -1, "retain": 3,
	}})
	if err != nil {
		t.Fatal(err)
	}
	var seqs []uint64
	for _, data := range [][]byte{[]byte("not msgpack"), foreign, outOfRange} {
		ack, err := h.js.Publish(context.Background(), h.subj.ConfigEvents("bad"), data)
		if err != nil {
			t.Fatal(err)
		}
		seqs = append(seqs, ack.Sequence)
	}
	if r := h.get(t, "bad"); r.code != "" || r.view.Version != 2 || r.view.Interval != "2s" || r.view.Retain != 4 {
		t.Fatalf("get after invalid events: %+v, want version 2 (interval 2s, retain 4)", r)
	}
	v := h.mustSet(t, "bad", `{"timeout":"1m"}`)
	if v.Version != 3 || v.Interval != "2s" || v.Retain != 4 || v.Timeout != "1m" {
		t.Fatalf("set after invalid events: %+v, want version 3 on top of version 2", v)
	}
	if r := h.get(t, "bad"); r.code != "" || r.view.Version != 3 {
		t.Fatalf("get after the set: %+v, want version 3", r)
	}
	m, err := h.nc.Request(h.subj.ConfigHistory("bad"), nil, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var hist messages.ConfigHistory
	if err := json.Unmarshal(m.Data, &hist); err != nil || len(hist.Versions) != 3 {
		t.Fatalf("history %s (%v), want versions 1-3", m.Data, err)
	}

	logged := map[float64]int{}
	for _, l := range logLines(t, &logs) {
		if l["message"] == "config event skipped: not a valid config event; the newest valid one stays in force" {
			if l["level"] != "error" || l["job"] != "bad" {
				t.Errorf("skip logged as %v", l)
			}
			logged[l["stream_sequence"].(float64)]++
		}
	}
	for _, seq := range seqs {
		if logged[float64(seq)] != 1 {
			t.Errorf("stream sequence %d logged %d times, want once; logs:\n%s", seq, logged[float64(seq)], logs.String())
		}
	}
}

func TestRunStopsOnCancel(t *testing.T) {
	h := newHarness(t, "")
	stop := h.startReplica(t, zerolog.Nop())
	h.waitReplicas(t, 1)
	h.mustSet(t, "stop", `{"retain":2}`)
	if err := stop(); err != nil {
		t.Fatalf("Run returned %v, want nil", err)
	}
	if _, err := h.nc.Request(h.subj.ConfigGet("stop"), nil, time.Second); !errors.Is(err, nats.ErrNoResponders) {
		t.Fatalf("request after stop: %v, want no responders", err)
	}
}

func TestNewRefuses(t *testing.T) {
	h := newHarness(t, "")
	for _, prefix := range []string{"a..b", "a.*", ">", "a b", ".a"} {
		_, err := configsvc.New(configsvc.Config{Subjects: cairnjs.Subjects{Prefix: prefix}}, h.nc, h.js, h.res.Config, zerolog.Nop())
		if !errors.Is(err, configsvc.ErrInvalidConfig) {
			t.Errorf("prefix %q: New = %v, want ErrInvalidConfig", prefix, err)
		}
	}
	if _, err := configsvc.New(configsvc.DefaultConfig(), nil, h.js, h.res.Config, zerolog.Nop()); !errors.Is(err, configsvc.ErrMissingDependency) {
		t.Errorf("nil connection: New = %v", err)
	}
	if _, err := configsvc.New(configsvc.DefaultConfig(), h.nc, h.js, nil, zerolog.Nop()); !errors.Is(err, configsvc.ErrMissingDependency) {
		t.Errorf("nil stream: New = %v", err)
	}
	if err := configsvc.DefaultConfig().Validate(); err != nil {
		t.Errorf("DefaultConfig: %v", err)
	}
}
