package main

import (
	"context"
	"encoding/json"
	"errors"
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

const instance = "sink-0"

// TestHelperProcess is the sink as a separate process, started by TestSinkExactlyOnce
// with TXSINK_HELPER=1 so that it can be killed with SIGKILL.
func TestHelperProcess(t *testing.T) {
	if os.Getenv("TXSINK_HELPER") != "1" {
		t.Skip("run by TestSinkExactlyOnce")
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	if err := run(context.Background(), os.Getenv("NATS_URL"), instance, log); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

// startSink prepares the sink as a separate process (this test binary running
// TestHelperProcess), starts it and waits until its info answers.
func startSink(t *testing.T, url string, nc *nats.Conn) *proctest.Proc {
	t.Helper()
	env := append(os.Environ(), "TXSINK_HELPER=1", "NATS_URL="+url)
	p, err := proctest.New("txsink", filepath.Join(t.TempDir(), "txsink.log"), os.Args[0], env, "-test.run=^TestHelperProcess$", "-test.count=1")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if _, err := p.Kill(); err != nil && p.Running() {
			t.Errorf("kill the sink: %v", err)
		}
		if t.Failed() {
			t.Logf("sink log:\n%s", p.Tail(60))
		}
		p.Close()
	})
	restart(t, p, nc)
	return p
}

// restart starts a new run of the sink and waits until its info answers.
func restart(t *testing.T, p *proctest.Proc, nc *nats.Conn) {
	t.Helper()
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	info(t, nc, 0)
}

// kill SIGKILLs the sink.
func kill(t *testing.T, p *proctest.Proc) {
	t.Helper()
	if _, err := p.Kill(); err != nil {
		t.Fatal(err)
	}
}

// info waits until the sink is running and its info shows position seq or beyond, and
// returns the info.
func info(t *testing.T, nc *nats.Conn, seq uint64) messages.OperatorInfo {
	t.Helper()
	var in messages.OperatorInfo
	operatortest.Eventually(t, operatortest.Wait, fmt.Sprintf("sink never reached position %d", seq), func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, err := natstest.RequestJSON(ctx, nc, cairnjs.Subjects{}.OperatorInfo("txsink", instance), nil, &in)
		return err == nil && in.Position >= seq
	})
	return in
}

// visible returns the writes stored in SINK_OUT, in order.
func visible(t *testing.T, js jetstream.JetStream) []map[string]any {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), operatortest.Wait)
	defer cancel()
	st, err := js.Stream(ctx, "SINK_OUT")
	if err != nil {
		t.Fatal(err)
	}
	var out []map[string]any
	for seq := uint64(1); ; seq++ {
		m, err := st.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		var w map[string]any
		if err := json.Unmarshal(m.Data, &w); err != nil {
			t.Fatal(err)
		}
		w["id"] = m.Header.Get(jetstream.MsgIDHeader)
		out = append(out, w)
	}
}

// TestSinkExactlyOnce kills the sink between a snapshot and its checkpoint's completion —
// once the checkpoint then aborts, once it completes while the sink is dead, so that the
// sink never made its writes visible — and aborts a checkpoint while it runs; it finds
// every write in SINK_OUT exactly once, in input order, with the right running sums.
func TestSinkExactlyOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	s := natstest.Start(t)
	nc, js, _ := s.Resources(t, cairnjs.Options{Memory: true})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, sc := range []jetstream.StreamConfig{
		{Name: "SINK_IN", Subjects: []string{"sink.in.>"}, Storage: jetstream.MemoryStorage},
		{Name: "SINK_OUT", Subjects: []string{"sink.out.>"}, Storage: jetstream.MemoryStorage, Duplicates: 2 * time.Minute},
	} {
		if _, err := js.CreateStream(ctx, sc); err != nil {
			t.Fatal(err)
		}
	}
	coord := operatortest.NewCoordinator(t, nc, "txsink")
	var inputs []int64
	var last uint64
	publish := func(n int) {
		for range n {
			v := int64(len(inputs) + 1)
			ack, err := js.Publish(ctx, "sink.in."+instance, fmt.Appendf(nil, `{"key":"k%d","value":%d}`, v%3, v))
			if err != nil {
				t.Fatal(err)
			}
			inputs, last = append(inputs, v), ack.Sequence
		}
	}
	wantVisible := func(n int, when string) {
		t.Helper()
		var got []map[string]any
		operatortest.Eventually(t, operatortest.Wait, when, func() bool { got = visible(t, js); return len(got) >= n })
		if len(got) != n {
			t.Fatalf("%s: %d writes visible, want %d", when, len(got), n)
		}
	}

	p := startSink(t, s.URL, nc)
	publish(10)
	info(t, nc, last)
	coord.Complete(1, coord.Checkpoint(1))
	wantVisible(10, "checkpoint 1 completed")

	// Killed between the snapshot of checkpoint 2 and its completion: none of its writes
	// become visible, and the restarted sink writes them once.
	publish(10)
	info(t, nc, last)
	coord.Checkpoint(2)
	kill(t, p)
	coord.Event(2, messages.Aborted, messages.AbortInstanceLost)
	wantVisible(10, "checkpoint 2 never completed")
	restart(t, p, nc)
	publish(5)
	if in := info(t, nc, last); in.RestoredCheckpoint != 1 {
		t.Fatalf("restarted sink restored checkpoint %d, want 1", in.RestoredCheckpoint)
	}
	coord.Complete(3, coord.Checkpoint(3))
	wantVisible(25, "checkpoint 3 completed")

	// Dead when checkpoint 4 completes, so it never made those writes visible (as if it
	// died between the completion and its publishes): the restored sink writes them.
	publish(5)
	info(t, nc, last)
	ack4 := coord.Checkpoint(4)
	kill(t, p)
	coord.Complete(4, ack4)
	wantVisible(25, "the sink died before acting on checkpoint 4")
	restart(t, p, nc)
	wantVisible(30, "restored from checkpoint 4")

	// An aborted checkpoint's writes wait for the next completion.
	publish(5)
	info(t, nc, last)
	coord.Checkpoint(5)
	coord.Event(5, messages.Aborted, messages.AbortTimeout)
	publish(5)
	info(t, nc, last)
	coord.Complete(6, coord.Checkpoint(6))
	wantVisible(40, "checkpoint 5 aborted, checkpoint 6 completed")

	// Nothing doubled, nothing lost: every input once, in order, with its running sum.
	sums := map[string]float64{}
	for i, w := range visible(t, js) {
		v := inputs[i]
		key := fmt.Sprintf("k%d", v%3)
		sums[key] += float64(v)
		if w["key"] != key || w["value"] != float64(v) || w["sum"] != sums[key] || w["id"] != fmt.Sprintf("%s.%d", instance, i+1) {
			t.Fatalf("write %d = %v, want key %s, value %d, sum %v, id %s.%d", i+1, w, key, v, sums[key], instance, i+1)
		}
	}
}
