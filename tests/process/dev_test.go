package process

import (
	"context"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cairn-stream/cairn/internal/natstest"
	"github.com/cairn-stream/cairn/internal/proctest"
	"github.com/cairn-stream/cairn/pkg/cairnjs"
	"github.com/cairn-stream/cairn/pkg/messages"
)

// devRun is how long TestDevInputBounded lets `cairn dev` run; CAIRN_DEV_RUN (a duration)
// overrides it, e.g. CAIRN_DEV_RUN=5m for acceptance 6's full measurement.
const devRun = 20 * time.Second

// TestDevInputBounded is acceptance 6 of issue 7: after `cairn dev` has run at a 200 ms
// interval, CAIRN_INPUT holds no message below the oldest retained checkpoint's position
// of any member (trimming keeps up), and still holds every message a retained checkpoint
// needs (trimming never goes too far). It reports the stream's size.
//
//	CAIRN_DEV_RUN=5m CAIRN_DEV_RATE=200 go test -count=1 -timeout 10m -run TestDevInputBounded -v ./tests/process/
func TestDevInputBounded(t *testing.T) {
	run := devRun
	if v := os.Getenv("CAIRN_DEV_RUN"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("CAIRN_DEV_RUN=%q: %v", v, err)
		}
		run = d
	}
	rate := "50"
	if v := os.Getenv("CAIRN_DEV_RATE"); v != "" {
		rate = v
	}
	const job = "demo"
	dev, store, nc := startDev(t, job, rate, run+3*time.Minute)
	ctx := ctxFor(t, run+3*time.Minute)
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			if err := dev.Terminate(30 * time.Second); err != nil {
				t.Errorf("stop cairn dev: %v", err)
			}
		}
	})
	s := &stack{t: t, job: job, nc: nc}
	var v messages.ConfigView
	if err := s.request(ctx, subjects.ConfigSet(job), []byte(`{"interval":"200ms"}`), &v); err != nil {
		t.Fatalf("set the interval: %v", err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	res, err := cairnjs.Ensure(ctx, js, cairnjs.Options{LookupOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	s.js, s.res = js, res
	t.Logf("cairn dev runs at 200 ms with --rate %s for %s", rate, run)
	timer := time.NewTimer(run)
	select {
	case <-timer.C:
	case <-dev.Done():
		code, err := dev.Exit()
		t.Fatalf("cairn dev exited on its own: code %d: %v", code, err)
	}

	// Trimming keeps up: within a few completions of reading the retained manifests, no
	// subject holds a message below the oldest one's position.
	ms, err := s.manifests(ctx)
	if err != nil || len(ms) == 0 {
		t.Fatalf("retained manifests: %d, %v", len(ms), err)
	}
	oldest := ms[0]
	wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	for _, inst := range slices.Sorted(maps.Keys(oldest.Instances)) {
		pos := oldest.Instances[inst].Positions[cairnjs.InputStream]
		for _, subject := range inputSubjects(job, inst, oldest.Instances[inst]) {
			var first uint64
			err := proctest.Poll(wctx, 20*time.Millisecond, fmt.Sprintf("%s trimmed up to %d", subject, pos), func() (bool, error) {
				var err error
				first, err = s.firstSeq(ctx, subject)
				return first >= pos || first == 0, err
			})
			if err != nil {
				t.Errorf("%s holds messages below the oldest retained checkpoint %d's position %d of %s: first sequence %d (%v)",
					subject, oldest.CheckpointID, pos, inst, first, err)
			}
		}
	}
	info, err := res.Input.Info(ctx, jetstream.WithSubjectFilter(subjects.Input(job, ">")))
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, subject := range slices.Sorted(maps.Keys(info.State.Subjects)) {
		first, err := s.firstSeq(ctx, subject)
		if err != nil {
			t.Fatal(err)
		}
		lines = append(lines, fmt.Sprintf("%s: %d messages from sequence %d", subject, info.State.Subjects[subject], first))
	}
	t.Logf("after %s: CAIRN_INPUT holds %d messages, %d bytes (last sequence %d); %d retained manifests, ids %d..%d; oldest positions %v\n  %s",
		run, info.State.Msgs, info.State.Bytes, info.State.LastSeq, len(ms), ms[0].CheckpointID, ms[len(ms)-1].CheckpointID,
		positions(oldest), strings.Join(lines, "\n  "))
	if out, err := res.Output.Info(ctx); err == nil {
		t.Logf("CAIRN_OUTPUT holds %d messages, %d bytes", out.State.Msgs, out.State.Bytes)
	}

	// Trimming never goes too far: stopped, every retained checkpoint still finds the
	// message at its position and everything after it.
	nc.Close()
	stopped = true
	if err := dev.Terminate(30 * time.Second); err != nil {
		t.Fatalf("stop cairn dev: %v", err)
	}
	srv := natstest.StartIn(t, store, -1)
	_, _, res = srv.Resources(t, cairnjs.Options{LookupOnly: true})
	s.nc, s.res = nil, res
	ms, err = s.manifests(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ms {
		for inst, is := range m.Instances {
			pos := is.Positions[cairnjs.InputStream]
			for _, subject := range inputSubjects(job, inst, is) {
				first, err := s.firstSeq(ctx, subject)
				if err != nil {
					t.Fatal(err)
				}
				if first > pos && pos > 0 {
					t.Errorf("retained checkpoint %d needs %s from sequence %d of %s; the subject starts at %d", m.CheckpointID, inst, pos, subject, first)
				}
			}
		}
	}
}

// startDev starts `cairn dev` for job with --rate rate on a free port and a store in a
// t.TempDir, and connects to its NATS server within wait. The test's cleanup logs the
// last lines of a failed run and closes the process; a test that does not terminate it
// itself registers that before.
func startDev(t *testing.T, job, rate string, wait time.Duration) (dev *proctest.Proc, store string, nc *nats.Conn) {
	t.Helper()
	bin, err := cairnBin()
	if err != nil {
		t.Fatal(err)
	}
	store, logs := t.TempDir(), t.TempDir()
	port := natstest.FreePort(t)
	url := "nats://127.0.0.1:" + strconv.Itoa(port)
	dev, err = proctest.New("cairn dev", filepath.Join(logs, "dev.log"), bin, proctest.ServiceEnv(url),
		"dev", "--port", strconv.Itoa(port), "--store", store, "--job", job, "--rate", rate)
	if err != nil {
		t.Fatal(err)
	}
	if err := dev.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("--- last lines of cairn dev:\n%s", dev.Tail(20))
		}
		dev.Close()
	})
	if err := proctest.Poll(ctxFor(t, wait), 50*time.Millisecond, "cairn dev's NATS server", func() (bool, error) {
		var err error
		nc, err = nats.Connect(url, nats.MaxReconnects(-1))
		return err == nil, nil
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return dev, store, nc
}

// inputSubjects are the subjects a member reads from CAIRN_INPUT: its filters in the
// manifest, or the reference operator's default subject.
func inputSubjects(job, inst string, is messages.InstanceSnapshot) []string {
	if f := is.Filters[cairnjs.InputStream]; len(f) > 0 && !slices.ContainsFunc(f, func(s string) bool { return strings.ContainsAny(s, "*>") }) {
		return f
	}
	return []string{subjects.Input(job, inst)}
}

// positions renders a manifest's input positions per member.
func positions(m messages.Manifest) string {
	var out []string
	for _, inst := range slices.Sorted(maps.Keys(m.Instances)) {
		out = append(out, fmt.Sprintf("%s=%d", inst, m.Instances[inst].Positions[cairnjs.InputStream]))
	}
	return strings.Join(out, " ")
}
