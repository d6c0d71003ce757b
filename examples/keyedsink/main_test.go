package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cairn-stream/cairn/internal/natstest"
	"github.com/cairn-stream/cairn/internal/proctest"
	"github.com/cairn-stream/cairn/pkg/cairnjs"
	"github.com/cairn-stream/cairn/pkg/messages"
	"github.com/cairn-stream/cairn/pkg/operator/operatortest"
)

const (
	instance = "ksink-0"
	// window is KSINK_OUT's duplicate window; the test waits past it before each restart,
	// so that what it proves is the sink's own deduplication.
	window = 2 * time.Second
)

// TestHelperProcess is the sink as a separate process, started by TestKeyedSinkExactlyOnce
// with KEYEDSINK_HELPER=1 so that it can be killed with SIGKILL.
func TestHelperProcess(t *testing.T) {
	if os.Getenv("KEYEDSINK_HELPER") != "1" {
		t.Skip("run by TestKeyedSinkExactlyOnce")
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	if err := run(context.Background(), os.Getenv("NATS_URL"), instance, log); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

// harness is the test's view of the sink: its process, the server and a scripted
// coordinator.
type harness struct {
	t     *testing.T
	p     *proctest.Proc
	nc    *nats.Conn
	js    jetstream.JetStream
	in    jetstream.Stream
	out   jetstream.Stream
	coord *operatortest.Coordinator
	// inputs are the values published, in order; last is the input sequence of the last.
	inputs []int64
	last   uint64
}

func (h *harness) ctx() context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), operatortest.Wait)
	h.t.Cleanup(cancel)
	return ctx
}

// start starts a run of the sink and waits until its info answers; it returns the info.
func (h *harness) start() messages.OperatorInfo {
	h.t.Helper()
	if err := h.p.Start(); err != nil {
		h.t.Fatal(err)
	}
	return h.info(0)
}

// kill SIGKILLs the sink.
func (h *harness) kill() {
	h.t.Helper()
	if _, err := h.p.Kill(); err != nil {
		h.t.Fatal(err)
	}
}

// info waits until the sink runs and its position is seq or beyond.
func (h *harness) info(seq uint64) messages.OperatorInfo {
	h.t.Helper()
	var in messages.OperatorInfo
	operatortest.Eventually(h.t, operatortest.Wait, fmt.Sprintf("sink never reached position %d", seq), func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, err := natstest.RequestJSON(ctx, h.nc, cairnjs.Subjects{}.OperatorInfo("keyedsink", instance), nil, &in)
		return err == nil && in.Position >= seq
	})
	return in
}

// publish publishes n events and waits until the sink applied them.
func (h *harness) publish(n int) {
	h.t.Helper()
	for range n {
		v := int64(len(h.inputs) + 1)
		ack, err := h.js.Publish(h.ctx(), "ksink.in."+instance, fmt.Appendf(nil, `{"key":"k%d","value":%d}`, v%3, v))
		if err != nil {
			h.t.Fatal(err)
		}
		h.inputs, h.last = append(h.inputs, v), ack.Sequence
	}
	h.info(h.last)
}

// visible returns the writes stored on the sink's subject, in order, with their input
// sequence.
func (h *harness) visible() []map[string]any {
	h.t.Helper()
	msgs, err := natstest.ReadSubject(h.ctx(), h.out, "ksink.out."+instance)
	if err != nil {
		h.t.Fatal(err)
	}
	out := make([]map[string]any, len(msgs))
	for i, m := range msgs {
		if err := json.Unmarshal(m.Data(), &out[i]); err != nil {
			h.t.Fatal(err)
		}
		out[i]["seq"] = m.Headers().Get(HeaderSeq)
	}
	return out
}

// wantVisible waits until n writes are visible and fails if more are.
func (h *harness) wantVisible(n int, when string) {
	h.t.Helper()
	var got []map[string]any
	operatortest.Eventually(h.t, operatortest.Wait, when, func() bool { got = h.visible(); return len(got) >= n })
	if len(got) != n {
		h.t.Fatalf("%s: %d writes visible, want %d", when, len(got), n)
	}
}

// down waits, while the sink is dead, past KSINK_OUT's duplicate window and trims its
// input below the position of the checkpoint it will restore, as Cairn's trimming does.
func (h *harness) down(restore messages.Ack) {
	h.t.Helper()
	if err := natstest.PassDuplicateWindow(h.ctx(), h.js, "ksink.out.window-probe"); err != nil {
		h.t.Fatal(err)
	}
	pos := restore.Positions[InputStream]
	if err := h.in.Purge(h.ctx(), jetstream.WithPurgeSubject("ksink.in."+instance), jetstream.WithPurgeSequence(pos)); err != nil {
		h.t.Fatal(err)
	}
	if first, err := natstest.FirstSeq(h.ctx(), h.in, "ksink.in."+instance); err != nil || first != pos {
		h.t.Fatalf("input starts at %d after trimming to %d (%v)", first, pos, err)
	}
}

// restart starts the sink again and checks the checkpoint it restored.
func (h *harness) restart(want uint64) {
	h.t.Helper()
	if in := h.start(); in.RestoredCheckpoint != want {
		h.t.Fatalf("restarted sink restored checkpoint %d, want %d", in.RestoredCheckpoint, want)
	}
}

// TestKeyedSinkExactlyOnce is acceptance 4 of issue 14: the keyed sink is SIGKILLed three
// times — between a snapshot and its checkpoint's completion, after it published a
// completed checkpoint's writes (the restored checkpoint still holds them), and while
// its checkpoint completes — each time down longer than KSINK_OUT's duplicate window and
// restarted on trimmed input; a checkpoint also aborts while it runs. Every write is
// visible exactly once, in input order, with the right running sums.
func TestKeyedSinkExactlyOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	s := natstest.Start(t)
	nc, js, _ := s.Resources(t, cairnjs.Options{Memory: true})
	h := &harness{t: t, nc: nc, js: js, coord: operatortest.NewCoordinator(t, nc, "keyedsink")}
	var err error
	if h.in, err = js.CreateStream(h.ctx(), jetstream.StreamConfig{Name: InputStream, Subjects: []string{"ksink.in.>"}, Storage: jetstream.MemoryStorage}); err != nil {
		t.Fatal(err)
	}
	if h.out, err = js.CreateStream(h.ctx(), jetstream.StreamConfig{Name: OutputStream, Subjects: []string{"ksink.out.>"}, Storage: jetstream.MemoryStorage, Duplicates: window}); err != nil {
		t.Fatal(err)
	}
	env := append(os.Environ(), "KEYEDSINK_HELPER=1", "NATS_URL="+s.URL)
	h.p, err = proctest.New("keyedsink", filepath.Join(t.TempDir(), "keyedsink.log"), os.Args[0], env, "-test.run=^TestHelperProcess$", "-test.count=1")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if _, err := h.p.Kill(); err != nil && h.p.Running() {
			t.Errorf("kill the sink: %v", err)
		}
		if t.Failed() {
			t.Logf("sink log:\n%s", h.p.Tail(60))
		}
		h.p.Close()
	})
	c := h.coord

	h.start()
	h.publish(10)
	ack1 := c.Checkpoint(1)
	c.Complete(1, ack1)
	h.wantVisible(10, "checkpoint 1 completed")

	// Kill 1, between the snapshot of checkpoint 2 and its completion: it aborts, none of
	// its writes become visible, and the restarted sink writes them once.
	h.publish(10)
	c.Checkpoint(2)
	h.kill()
	c.Event(2, messages.Aborted, messages.AbortInstanceLost)
	h.down(ack1)
	h.wantVisible(10, "checkpoint 2 never completed")
	h.restart(1)
	h.publish(5)
	c.Complete(3, c.Checkpoint(3))
	h.wantVisible(25, "checkpoint 3 completed")

	// Kill 2, after the sink published checkpoint 4's writes: checkpoint 4's state still
	// holds them, pending, and the restored sink hears checkpoint 4 completed again. They
	// are already stored (and out of the duplicate window): none is written again.
	h.publish(5)
	ack4 := c.Checkpoint(4)
	c.Complete(4, ack4)
	h.wantVisible(30, "checkpoint 4 completed")
	h.kill()
	h.down(ack4)
	h.restart(4)
	h.publish(1)
	ack5 := c.Checkpoint(5)
	h.wantVisible(30, "restored from checkpoint 4, which it had published")

	// Kill 3, while checkpoint 5 completes: the sink never acted on it, so the restored
	// sink writes its writes.
	h.kill()
	c.Complete(5, ack5)
	h.down(ack5)
	h.wantVisible(30, "the sink died before acting on checkpoint 5")
	h.restart(5)
	h.wantVisible(31, "restored from checkpoint 5")

	// An aborted checkpoint's writes wait for the next completion.
	h.publish(5)
	c.Checkpoint(6)
	c.Event(6, messages.Aborted, messages.AbortTimeout)
	h.publish(5)
	c.Complete(7, c.Checkpoint(7))
	h.wantVisible(41, "checkpoint 6 aborted, checkpoint 7 completed")

	// Nothing doubled, nothing lost: every input once, in order, with its running sum.
	sums := map[string]float64{}
	prev := uint64(0)
	for i, w := range h.visible() {
		v := h.inputs[i]
		key := fmt.Sprintf("k%d", v%3)
		sums[key] += float64(v)
		var seq uint64
		if _, err := fmt.Sscan(w["seq"].(string), &seq); err != nil || seq <= prev {
			t.Fatalf("write %d = %v: input sequence not after %d", i+1, w, prev)
		}
		prev = seq
		if w["key"] != key || w["value"] != float64(v) || w["sum"] != sums[key] {
			t.Fatalf("write %d = %v, want key %s, value %d, sum %v", i+1, w, key, v, sums[key])
		}
	}
	t.Logf("%d writes, each once, across 3 SIGKILLs with downtimes past the duplicate window and trimmed input", len(h.inputs))
}
